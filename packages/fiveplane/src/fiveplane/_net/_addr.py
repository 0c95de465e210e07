"""IP address classification for SSRF protection.

Every address is judged on what it *is*, not on how it was written: IPv4-mapped, IPv4-compatible,
NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address they embed, zone ids are dropped, and
the special-purpose registries (RFC 6890 and successors) decide what is not globally reachable.
Cloud metadata endpoints are named separately because they can never be allowed by configuration.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "METADATA_ADDRESSES",
    "METADATA_HOSTNAMES",
    "AddressVerdict",
    "IPAddress",
    "IPNetwork",
    "classify_ip",
    "embedded_ipv4",
    "parse_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: dict[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata (AWS, GCP, Azure, OpenStack, DigitalOcean)",
    ipaddress.ip_address("169.254.170.2"): "cloud metadata (AWS ECS task metadata)",
    ipaddress.ip_address("169.254.170.23"): "cloud metadata (AWS EKS pod identity)",
    ipaddress.ip_address("169.254.0.23"): "cloud metadata (Tencent Cloud)",
    ipaddress.ip_address("100.100.100.200"): "cloud metadata (Alibaba Cloud)",
    ipaddress.ip_address("192.0.0.192"): "cloud metadata (Oracle Cloud)",
    ipaddress.ip_address("168.63.129.16"): "cloud metadata (Azure WireServer)",
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata (AWS IPv6)",
    ipaddress.ip_address("fd00:ec2::23"): "cloud metadata (AWS EKS pod identity, IPv6)",
}
"""Cloud instance-metadata addresses: blocked always, whatever the configuration allows."""

METADATA_HOSTNAMES: frozenset[str] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
"""Host names of cloud metadata services (matched after canonicalization)."""

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# (network, reason): what is not a public unicast destination. Order: most specific reasons first.
_BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified / this network"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared address space (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/32"), "Teredo tunnel"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2001::/23"), "IETF protocol assignments"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("5f00::/16"), "segment routing (SRv6)"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("::/8"), "reserved"),
)

_MAPPED = _V6("::ffff:0:0/96")
_COMPAT = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_6TO4 = _V6("2002::/16")
_GLOBAL_UNICAST_V6 = _V6("2000::/3")


@dataclass(frozen=True, slots=True)
class AddressVerdict:
    """What an address is, for SSRF purposes."""

    address: IPAddress
    """The address judged (for IPv6 forms that embed IPv4: the IPv4 address)."""
    blocked: bool
    reason: str
    """Why it is blocked (``loopback``, ``cloud metadata (...)``, ...); ``public`` otherwise."""
    metadata: bool = False
    """A cloud metadata endpoint: never allowed, whatever the configuration."""
    via: str = ""
    """How the address was written, when that matters (``IPv4-mapped IPv6 ::ffff:7f00:1``)."""

    def describe(self) -> str:
        via = f" ({self.via})" if self.via else ""
        return f"{self.address}{via} is {self.reason}"


def parse_ip(text: str) -> IPAddress | None:
    """A standard-notation IP address (dotted-quad IPv4, RFC 4291 IPv6, zone id dropped), else None."""
    text = text.strip("[]")
    if "%" in text:
        text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), with the form."""
    if addr in _MAPPED:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "IPv4-mapped IPv6"
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "NAT64 IPv6"
    if addr in _6TO4:
        return ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF), "6to4 IPv6"
    if addr in _COMPAT and int(addr) > 1:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "IPv4-compatible IPv6"
    return None


@lru_cache(maxsize=4096)
def classify_ip(addr: IPAddress) -> AddressVerdict:
    """Judge one address: blocked (with the reason) or public."""
    via = ""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            addr = ipaddress.IPv6Address(str(addr).split("%", 1)[0])
        inner = embedded_ipv4(addr)
        if inner is not None:
            via = f"{inner[1]} {addr}"
            addr = inner[0]
    meta = METADATA_ADDRESSES.get(addr)
    if meta is not None:
        return AddressVerdict(addr, True, meta, metadata=True, via=via)
    table: Iterable[tuple[IPNetwork, str]] = _BLOCKED_V4 if isinstance(addr, ipaddress.IPv4Address) else _BLOCKED_V6
    for net, reason in table:
        if addr in net:
            return AddressVerdict(addr, True, reason, via=via)
    if isinstance(addr, ipaddress.IPv6Address) and addr not in _GLOBAL_UNICAST_V6:
        return AddressVerdict(addr, True, "outside IPv6 global unicast (reserved)", via=via)
    return AddressVerdict(addr, False, "public", via=via)
