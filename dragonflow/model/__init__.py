"""Typed northbound objects, stored as JSON documents keyed by (table, id)."""
from dragonflow.model.objects import (
    INTERNAL_MODELS,
    MODELS,
    AddressPair,
    AllocationPool,
    Chassis,
    DefaultSecurityGroup,
    Fence,
    FixedIP,
    HostRoute,
    IPAllocation,
    MACAllocation,
    Model,
    Network,
    Port,
    Router,
    RouterInterface,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    model_for_table,
)

__all__ = ['AddressPair', 'MODELS', 'INTERNAL_MODELS', 'AllocationPool', 'Chassis',
           'DefaultSecurityGroup', 'Fence', 'FixedIP', 'HostRoute', 'IPAllocation',
           'MACAllocation', 'Model', 'Network', 'Port', 'Router', 'RouterInterface',
           'SecurityGroup', 'SecurityGroupRule', 'Subnet', 'model_for_table']
