"""Typed northbound objects, stored as JSON documents keyed by (table, id)."""
from dragonflow.model.objects import (
    MODELS,
    AddressPair,
    AllocationPool,
    Chassis,
    FixedIP,
    HostRoute,
    Model,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
    model_for_table,
)

__all__ = ['AddressPair', 'MODELS', 'AllocationPool', 'Chassis', 'FixedIP', 'HostRoute', 'Model', 'Network',
           'Port', 'Router', 'RouterInterface', 'Subnet', 'model_for_table']
