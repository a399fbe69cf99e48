"""Dragonflow inside real Neutron: the ML2 mechanism driver ``df`` and the L3 service plugin
``df-l3``. Neutron's database is the source of truth; these mirror it into the NB store as the
same model objects df-api writes, so the unchanged controllers serve them.
"""

# The provisioning-block entity of Dragonflow: the driver adds it when a port gets a host,
# the status worker completes it when that chassis reports the port's flows in.
PROVISIONING_ENTITY = 'df'
