"""Physical (flat and VLAN) networks: in from and out to the physical network through the patch
port of its physnet (bridge_mappings), VLAN tag popped and pushed, never through a tunnel."""

NAME = 'provider'


def flows(topology):
    return ()
