"""IP address and MAC management: pools, gateway, fixed IPs, MACs.

No address is handed out twice, even by several df-api processes at once: every address in
use has a reservation record (table ip_allocations, id '<subnet_id>/<ip>') created with
expect=MUST_NOT_EXIST in the same commit as the port that uses it; likewise every MAC per
network (mac_allocations). Two processes picking the same address cannot both commit; the
loser's call is re-planned (txn.run) and picks again. Free addresses are picked at random, so
concurrent callers rarely collide in the first place.
"""
import ipaddress
import random
from typing import Optional

from dragonflow.api import errors
from dragonflow.api import txn as txns
from dragonflow.api.attributes import UNSET
from dragonflow.model import AllocationPool, FixedIP, IPAllocation, MACAllocation, Subnet

AUTO_ADDRESS_MODES = ('slaac', 'dhcpv6-stateless')
ENUMERATE_LIMIT = 1 << 17   # ranges up to this size are enumerated once guesses fail
PROBES = 64


# Subnet geometry

def host_range(cidr: str) -> tuple[int, int]:
    """First and last address a port may use: not the network address, nor v4 broadcast."""
    net = ipaddress.ip_network(cidr)
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4 and net.prefixlen >= 31:
        return first, last
    return first + 1, (last - 1 if net.version == 4 else last)


def is_host_ip(cidr: str, ip: str) -> bool:
    first, last = host_range(cidr)
    address = ipaddress.ip_address(ip)
    return address.version == ipaddress.ip_network(cidr).version and first <= int(address) <= last


def default_gateway(cidr: str) -> str:
    return str(ipaddress.ip_address(host_range(cidr)[0]))


def default_pools(cidr: str, gateway_ip: Optional[str]) -> list[AllocationPool]:
    """Every host address, less the gateway (Neutron's default allocation pools)."""
    first, last = host_range(cidr)
    ranges = [(first, last)]
    if gateway_ip and is_host_ip(cidr, gateway_ip):
        gw = int(ipaddress.ip_address(gateway_ip))
        ranges = [(first, gw - 1), (gw + 1, last)]
    return [_pool(a, b) for a, b in ranges if a <= b]


def _pool(start: int, end: int) -> AllocationPool:
    return AllocationPool(start=str(ipaddress.ip_address(start)),
                          end=str(ipaddress.ip_address(end)))


def _range(pool: AllocationPool) -> tuple[int, int]:
    return int(ipaddress.ip_address(pool.start)), int(ipaddress.ip_address(pool.end))


def check_pools(cidr: str, pools: list[dict], gateway_ip: Optional[str]) -> list[AllocationPool]:
    """Validate requested allocation pools with Neutron's errors."""
    net = ipaddress.ip_network(cidr)
    first, last = host_range(cidr)
    result = []
    for pool in pools:
        start, end = ipaddress.ip_address(pool['start']), ipaddress.ip_address(pool['end'])
        if start.version != net.version or end.version != net.version or end < start:
            raise errors.InvalidAllocationPool(pool=pool)
        if int(start) < first or int(end) > last:
            raise errors.OutOfBoundsAllocationPool(pool=pool, subnet_cidr=cidr)
        result.append(AllocationPool(start=str(start), end=str(end)))
    _check_no_overlap(cidr, result)
    if gateway_ip:
        gw = int(ipaddress.ip_address(gateway_ip))
        for pool in result:
            if _range(pool)[0] <= gw <= _range(pool)[1]:
                raise errors.GatewayConflictWithAllocationPools(
                    ip_address=gateway_ip, pool=f'{pool.start}-{pool.end}')
    return result


def _check_no_overlap(cidr: str, pools: list[AllocationPool]) -> None:
    ordered = sorted(pools, key=_range)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if _range(b)[0] <= _range(a)[1]:
            raise errors.OverlappingAllocationPools(
                pool_1=f'{a.start}-{a.end}', pool_2=f'{b.start}-{b.end}', subnet_cidr=cidr)


def pick_free(pools: list[AllocationPool], taken: set[int], rng: random.Random) -> Optional[int]:
    """A random free address of the pools, or None when they are full."""
    return pick_in_ranges([_range(p) for p in pools], taken, rng)


def pick_in_ranges(ranges: list[tuple[int, int]], taken: set[int],
                   rng: random.Random) -> Optional[int]:
    """A random integer of the inclusive ranges not in ``taken``, or None when none is left
    (addresses of pools, segment ids of ML2 ranges). A few random guesses find one in ranges
    that are mostly free; ranges up to ENUMERATE_LIMIT are then enumerated, so a nearly full
    one is found exactly; a larger one (an IPv6 pool) is taken as full after the guesses."""
    size = sum(end - start + 1 for start, end in ranges)
    if not size:
        return None
    for _ in range(PROBES):
        offset = rng.randrange(size)
        for start, end in ranges:
            if offset <= end - start:
                if start + offset not in taken:
                    return start + offset
                break
            offset -= end - start + 1
    if size > ENUMERATE_LIMIT:
        return None
    free = [i for start, end in ranges for i in range(start, end + 1) if i not in taken]
    return rng.choice(free) if free else None


def eui64(cidr: str, mac: str) -> str:
    """The SLAAC address of ``mac`` on an IPv6 /64."""
    octets = [int(part, 16) for part in mac.split(':')]
    octets[0] ^= 0x02
    interface_id = int.from_bytes(bytes(octets[:3] + [0xff, 0xfe] + octets[3:]), 'big')
    return str(ipaddress.ip_address(int(ipaddress.ip_network(cidr).network_address)
                                    | interface_id))


def random_mac(base_mac: str, rng: random.Random) -> str:
    """Base MAC's first three octets (the fourth too if not 00), the rest random."""
    base = [int(part, 16) for part in base_mac.split(':')]
    octets = base[:3] + [rng.getrandbits(8) for _ in range(3)]
    if base[3]:
        octets[3] = base[3]
    return ':'.join(f'{o:02x}' for o in octets)


def canonical_ip(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


class Ipam:
    """Address and MAC reservations of one Txn."""

    def __init__(self, txn: txns.Txn, rng: Optional[random.Random] = None):
        self.txn = txn
        self.rng = rng or random.Random()

    def taken(self, subnet_id: str) -> dict[str, IPAllocation]:
        return {a.ip_address: a for a in self.txn.all(IPAllocation) if a.subnet_id == subnet_id}

    def reserve_ip(self, subnet: Subnet, ip: str, port_id: str) -> FixedIP:
        """Reserve ``ip``; the commit fails if anyone else reserves it first."""
        holder = self.txn.get(IPAllocation, IPAllocation.make_id(subnet.id, ip))
        if holder is not None and holder.port_id != port_id:
            raise errors.IpAddressAlreadyAllocated(ip=ip, subnet_id=subnet.id)
        if holder is None:
            self.txn.require(subnet)
            txns.require_unfenced(self.txn, Subnet, subnet.id)
            self.txn.create(IPAllocation(id=IPAllocation.make_id(subnet.id, ip),
                                         subnet_id=subnet.id, network_id=subnet.network_id,
                                         ip_address=ip, port_id=port_id))
        return FixedIP(subnet_id=subnet.id, ip_address=ip)

    def reserve_any(self, subnet: Subnet, port_id: str) -> Optional[FixedIP]:
        taken = {int(ipaddress.ip_address(ip)) for ip in self.taken(subnet.id)}
        ip = pick_free(subnet.allocation_pools, taken, self.rng)
        if ip is None:
            return None
        return self.reserve_ip(subnet, str(ipaddress.ip_address(ip)), port_id)

    def release_ip(self, fixed: FixedIP) -> None:
        allocation = self.txn.get(IPAllocation, IPAllocation.make_id(fixed.subnet_id,
                                                                     fixed.ip_address))
        if allocation is not None:
            self.txn.delete(allocation)

    def reserve_mac(self, network_id: str, mac: Optional[str], port_id: str,
                    base_mac: str) -> str:
        """Reserve ``mac`` (MacAddressInUse if taken) or a new random one."""
        if mac is None:
            mac = random_mac(base_mac, self.rng)
        else:
            holder = self.txn.get(MACAllocation, MACAllocation.make_id(network_id, mac))
            if holder is not None and holder.port_id != port_id:
                raise errors.MacAddressInUse(net_id=network_id, mac=mac)
            if holder is not None:
                return mac
        self.txn.create(MACAllocation(id=MACAllocation.make_id(network_id, mac),
                                      network_id=network_id, mac_address=mac, port_id=port_id))
        return mac

    def release_mac(self, network_id: str, mac: str) -> None:
        allocation = self.txn.get(MACAllocation, MACAllocation.make_id(network_id, mac))
        if allocation is not None:
            self.txn.delete(allocation)


class FixedIPRequest:
    """Turns a port's requested fixed_ips into reserved addresses (create and update)."""

    def __init__(self, ipam: Ipam, network_id: str, subnets: list[Subnet], port_id: str,
                 mac: str, max_ips: int):
        self.ipam, self.network_id, self.port_id, self.mac = ipam, network_id, port_id, mac
        self.subnets = subnets   # the network's subnets, oldest first
        self.max_ips = max_ips

    def assign(self, requested, current: list[FixedIP]) -> list[FixedIP]:
        """The port's new fixed IPs; reserves new ones and releases those dropped."""
        if requested is UNSET:
            result = self._automatic()
        else:
            if len(requested) > self.max_ips:
                raise errors.InvalidInput(
                    error_message='Exceeded maximum amount of fixed ips per port')
            result = []
            for entry in requested:
                result.append(self._one(entry, current, result))
        kept = {(f.subnet_id, f.ip_address) for f in result}
        for fixed in current:
            if (fixed.subnet_id, fixed.ip_address) not in kept:
                self.ipam.release_ip(fixed)
        return result

    def _automatic(self) -> list[FixedIP]:
        """Neutron's choice: one IPv4 address, one stateful IPv6, every SLAAC subnet."""
        result = [self._auto_address(s) for s in self.subnets
                  if s.ipv6_address_mode in AUTO_ADDRESS_MODES]
        for version in (4, 6):
            candidates = [s for s in self.subnets if s.ip_version == version
                          and s.ipv6_address_mode not in AUTO_ADDRESS_MODES]
            if not candidates:
                continue
            fixed = next(filter(None, (self.ipam.reserve_any(s, self.port_id)
                                       for s in candidates)), None)
            if fixed is None:
                raise errors.IpAddressGenerationFailure(net_id=self.network_id)
            result.append(fixed)
        return result

    def _auto_address(self, subnet: Subnet) -> FixedIP:
        return self.ipam.reserve_ip(subnet, eui64(subnet.cidr, self.mac), self.port_id)

    def _one(self, entry: dict, current: list[FixedIP], chosen: list[FixedIP]) -> FixedIP:
        subnet = self._subnet_for(entry)
        if 'ip_address' in entry:
            ip = canonical_ip(entry['ip_address'])
            if not is_host_ip(subnet.cidr, ip):
                raise errors.InvalidIpForSubnet(ip_address=entry['ip_address'])
            return self.ipam.reserve_ip(subnet, ip, self.port_id)
        for fixed in current:  # an update naming only the subnet keeps the address it has
            if fixed.subnet_id == subnet.id and fixed not in chosen:
                return fixed
        if subnet.ipv6_address_mode in AUTO_ADDRESS_MODES:
            return self._auto_address(subnet)
        fixed = self.ipam.reserve_any(subnet, self.port_id)
        if fixed is None:
            raise errors.IpAddressGenerationFailure(net_id=self.network_id)
        return fixed

    def _subnet_for(self, entry: dict) -> Subnet:
        if 'subnet_id' in entry:
            subnet = self.ipam.txn.get(Subnet, entry['subnet_id'])
            if subnet is None:
                raise errors.SubnetNotFound(subnet_id=entry['subnet_id'])
            if subnet.network_id != self.network_id:
                raise errors.InvalidInput(error_message=(
                    f'Failed to create port on network {self.network_id}, because fixed_ips '
                    f"included invalid subnet {entry['subnet_id']}"))
            return subnet
        ip = entry.get('ip_address')
        for subnet in self.subnets:
            if ip is not None and is_host_ip(subnet.cidr, ip):
                return subnet
        raise errors.InvalidIpForNetwork(ip_address=ip)
