"""Network segments as Neutron's ML2 type drivers give them out: provider networks checked
and reserved, tenant networks allocated from the configured ranges, MTUs per type.

A segment in use is a SegmentAllocation record (id: type/physnet/segmentation id) created
only if absent in the commit that creates the network, and deleted with it. Two df-api
processes choosing the same segment cannot both commit; the loser re-plans (txn.run) and then
sees the record: a provider network gets Neutron's *InUse error, a tenant network picks
another free id.
"""
import dataclasses
import random
from typing import Optional

from dragonflow.api import errors, ipam
from dragonflow.model import Network, SegmentAllocation
from dragonflow.model.objects import NETWORK_TYPES, TUNNEL_NETWORK_TYPES

# The ids each type's wire format can carry (neutron_lib.constants).
ID_LIMITS = {'vlan': (1, 4094), 'vxlan': (1, 2 ** 24 - 1), 'geneve': (1, 2 ** 24 - 1),
             'gre': (1, 2 ** 32 - 1)}
IP_HEADER = 20          # IPv4 underlay
ENCAP_OVERHEAD = {'vxlan': 30, 'gre': 22}   # geneve: [ml2_type_geneve] max_header_size


@dataclasses.dataclass(frozen=True)
class Segment:
    network_type: str
    physical_network: Optional[str] = None
    segmentation_id: Optional[int] = None

    @property
    def allocation_id(self) -> str:
        return SegmentAllocation.make_id(self.network_type, self.physical_network,
                                         self.segmentation_id)

    def fields(self) -> dict:
        return {'provider:network_type': self.network_type,
                'provider:physical_network': self.physical_network,
                'provider:segmentation_id': self.segmentation_id}


def of_network(network: Network) -> Optional[Segment]:
    if network.network_type is None:
        return None
    return Segment(network.network_type, network.physical_network, network.segmentation_id)


def _parse_range(text: str, kind: str) -> tuple[int, int]:
    low, _, high = text.strip().partition(':')
    try:
        low_id, high_id = int(low), int(high)
    except ValueError:
        raise ValueError(f'Invalid {kind} range: {text!r}') from None
    if low_id > high_id:
        raise ValueError(f'Invalid {kind} range: {text!r}: the first id is above the last')
    return low_id, high_id


def _check_limits(network_type: str, ranges: list[tuple[int, int]]) -> None:
    low, high = ID_LIMITS[network_type]
    for first, last in ranges:
        if first < low or last > high:
            raise ValueError(f'{network_type} range {first}:{last} is outside {low}:{high}')


class TypeManager:
    """ML2's type manager and drivers over the [ml2] and [ml2_type_*] options."""

    def __init__(self, conf):
        self.conf = conf
        self.type_drivers = [t.strip() for t in conf.ml2.type_drivers if t.strip()]
        unknown = set(self.type_drivers) - set(NETWORK_TYPES)
        if unknown:
            raise ValueError(f'[ml2] type_drivers: unknown types {sorted(unknown)}')
        self.tenant_types = [t.strip() for t in conf.ml2.tenant_network_types if t.strip()]
        if set(self.tenant_types) - set(self.type_drivers):
            raise ValueError('[ml2] tenant_network_types must be among type_drivers')
        self.tunnel_ranges = {
            'vxlan': [_parse_range(r, 'VXLAN VNI') for r in conf.ml2_type_vxlan.vni_ranges],
            'geneve': [_parse_range(r, 'Geneve VNI') for r in conf.ml2_type_geneve.vni_ranges],
            'gre': [_parse_range(r, 'GRE key') for r in conf.ml2_type_gre.tunnel_id_ranges]}
        for network_type, ranges in self.tunnel_ranges.items():
            _check_limits(network_type, ranges)
        self.vlan_ranges: dict[str, list[tuple[int, int]]] = {}
        for entry in conf.ml2_type_vlan.network_vlan_ranges:
            physnet, _, rest = entry.strip().partition(':')
            ranges = self.vlan_ranges.setdefault(physnet, [])
            if rest:
                ranges.append(_parse_range(rest, 'VLAN'))
        for ranges in self.vlan_ranges.values():
            _check_limits('vlan', ranges)
        flat = [p.strip() for p in conf.ml2_type_flat.flat_networks if p.strip()]
        self.flat_networks = None if '*' in flat else flat   # None: any physnet

    # Provider networks (ML2's _process_provider_create and each driver's validation)

    def provider_segment(self, body: dict) -> Optional[Segment]:
        """The segment a create asks for, validated; None when it names none."""
        network_type = body.get('provider:network_type')
        physnet = body.get('provider:physical_network')
        seg_id = body.get('provider:segmentation_id')
        if network_type is None and physnet is None and seg_id is None:
            return None
        if network_type is None:
            raise errors.InvalidInput(error_message='network_type required')
        segment = Segment(network_type, physnet, seg_id)
        self.validate(segment)
        return segment

    def validate(self, segment: Segment) -> None:
        kind = segment.network_type
        if kind not in self.type_drivers:
            raise errors.InvalidInput(error_message=f"network_type value '{kind}' not supported")
        if kind == 'flat':
            self._validate_flat(segment)
        elif kind == 'vlan':
            self._validate_vlan(segment)
        else:
            self._validate_tunnel(segment)

    def _validate_flat(self, segment: Segment) -> None:
        if not segment.physical_network:
            raise errors.InvalidInput(
                error_message='physical_network required for flat provider network')
        if self.flat_networks is not None and not self.flat_networks:
            raise errors.InvalidInput(error_message='Flat provider networks are disabled')
        if self.flat_networks and segment.physical_network not in self.flat_networks:
            raise errors.InvalidInput(error_message=(
                f"physical_network '{segment.physical_network}' unknown for flat provider "
                'network'))
        if segment.segmentation_id:
            raise errors.InvalidInput(
                error_message='segmentation_id prohibited for flat provider network')

    def _validate_vlan(self, segment: Segment) -> None:
        physnet, seg_id = segment.physical_network, segment.segmentation_id
        if physnet:
            if physnet not in self.vlan_ranges:
                raise errors.InvalidInput(error_message=(
                    f"physical_network '{physnet}' unknown for VLAN provider network"))
            low, high = ID_LIMITS['vlan']
            if seg_id is not None and not low <= seg_id <= high:
                raise errors.InvalidInput(error_message=(
                    f'segmentation_id out of range ({low} through {high})'))
        elif seg_id is not None:
            raise errors.InvalidInput(error_message=(
                'segmentation_id requires physical_network for VLAN provider network'))

    def _validate_tunnel(self, segment: Segment) -> None:
        if segment.physical_network:
            raise errors.InvalidInput(error_message=(
                f'provider:physical_network specified for {segment.network_type} network'))
        # Neutron takes any integer here; an id the encapsulation cannot carry is refused.
        low, high = ID_LIMITS[segment.network_type]
        if segment.segmentation_id is not None and not low <= segment.segmentation_id <= high:
            raise errors.InvalidInput(error_message=(
                f'segmentation_id out of range ({low} through {high})'))

    # Reservations

    def reserve(self, txn, network_id: str, segment: Segment,
                rng: random.Random) -> Segment:
        """Reserve the provider segment (a partial one gets its id chosen)."""
        if segment.network_type == 'flat':
            return self._reserve_exactly(txn, network_id, segment)
        if segment.segmentation_id is not None:
            return self._reserve_exactly(txn, network_id, segment)
        found = self._allocate(txn, network_id, segment.network_type,
                               segment.physical_network, rng)
        if found is None:
            raise errors.NoNetworkAvailable()
        return found

    def _reserve_exactly(self, txn, network_id: str, segment: Segment) -> Segment:
        if txn.get(SegmentAllocation, segment.allocation_id) is not None or (
                segment.network_type in TUNNEL_NETWORK_TYPES and
                segment.segmentation_id in _legacy_vnis(txn)):
            if segment.network_type == 'flat':
                raise errors.FlatNetworkInUse(physical_network=segment.physical_network)
            if segment.network_type == 'vlan':
                raise errors.VlanIdInUse(vlan_id=segment.segmentation_id,
                                         physical_network=segment.physical_network)
            raise errors.TunnelIdInUse(tunnel_id=segment.segmentation_id)
        txn.create(SegmentAllocation(id=segment.allocation_id, network_id=network_id))
        return segment

    def allocate_tenant(self, txn, network_id: str, rng: random.Random) -> Segment:
        """ML2's _allocate_project_net_segment: the first tenant type with a free id."""
        for network_type in self.tenant_types:
            if network_type == 'flat':
                continue   # project flat networks are not supported (as in Neutron)
            found = self._allocate(txn, network_id, network_type, None, rng)
            if found is not None:
                return found
        raise errors.NoNetworkAvailable()

    def _allocate(self, txn, network_id: str, network_type: str, physnet: Optional[str],
                  rng: random.Random) -> Optional[Segment]:
        if network_type == 'vlan':
            physnets = [physnet] if physnet else list(self.vlan_ranges)
            choices = [(p, self.vlan_ranges.get(p, [])) for p in physnets]
        else:
            choices = [(None, self.tunnel_ranges[network_type])]
        allocations = txn.all(SegmentAllocation)
        for candidate_physnet, ranges in choices:
            prefix = SegmentAllocation.make_id(network_type, candidate_physnet, 0)[:-1]
            taken = {int(a.id[len(prefix):]) for a in allocations
                     if a.id.startswith(prefix) and a.id[len(prefix):].isdigit()}
            if network_type in TUNNEL_NETWORK_TYPES:
                taken |= _legacy_vnis(txn)
            seg_id = ipam.pick_in_ranges(ranges, taken, rng)
            if seg_id is not None:
                segment = Segment(network_type, candidate_physnet, seg_id)
                txn.create(SegmentAllocation(id=segment.allocation_id, network_id=network_id))
                return segment
        return None

    @staticmethod
    def release(txn, network: Network) -> None:
        segment = of_network(network)
        if segment is None:
            return
        allocation = txn.get(SegmentAllocation, segment.allocation_id)
        if allocation is not None and allocation.network_id == network.id:
            txn.delete(allocation)

    # MTU (each type driver's get_mtu)

    def max_mtu(self, network_type: Optional[str]) -> int:
        physnet_mtu = self.conf.api.global_physnet_mtu
        if network_type not in TUNNEL_NETWORK_TYPES:
            return physnet_mtu
        path = min(physnet_mtu, self.conf.ml2.path_mtu or physnet_mtu)
        overhead = ENCAP_OVERHEAD.get(network_type, self.conf.ml2_type_geneve.max_header_size)
        return path - IP_HEADER - overhead


def _legacy_vnis(txn) -> set[int]:
    """The VNIs of networks recorded before segments were (their key is their VNI, in the
    chassis' first tunnel type): no new tunnel network may take one."""
    return {n.key for n in txn.all(Network) if n.network_type is None}
