"""The end client's IP address of a gRPC call.

The gateway forwards the browser's address in `x-forwarded-for` metadata; it is
believed only when the call itself comes from a trusted proxy (by default the
loopback, where `loom up` runs the gateway). Otherwise the peer address counts,
so a client cannot spoof its way around per-IP limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from libs.logs import peer_ip

FORWARDED_FOR = "x-forwarded-for"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(context, trusted_proxies: tuple[Network, ...]) -> str:
    """The right-most untrusted address of peer + X-Forwarded-For (the standard walk back)."""
    address = peer_ip(context.peer() or "")
    forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED_FOR, "")
    hops = [hop.strip() for hop in str(forwarded).split(",") if hop.strip()]
    while hops and _trusted(address, trusted_proxies):
        address = hops.pop()
    return address
