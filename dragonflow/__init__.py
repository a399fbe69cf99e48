"""Dragonflow: distributed virtual routing for OpenStack Neutron in OpenFlow."""
