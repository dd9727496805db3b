"""The end client's IP address of a call.

At the HTTP edge (the gateway) X-Forwarded-For is walked back hop by hop through
trusted proxies (`client_ip`). Behind it, a gRPC server believes the address the
gateway forwards in `x-forwarded-for` metadata only when the gateway's own
identity is verified on the call (its client certificate or its forwarder
token), never because of an address range: any other caller, wherever it runs,
counts as its peer address, so nobody claims a fresh IP for a fresh quota
(`caller_ip`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from libs.auth import current_caller
from libs.logs import peer_ip

FORWARDED_FOR = "x-forwarded-for"
GATEWAY = "gateway"
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


def caller_ip(context) -> str:
    """The end client's IP of a gRPC call being served: the address the gateway forwarded
    when the gateway is verifiably the caller, else the peer's address."""
    address = peer_ip(context.peer() or "")
    if current_caller().via != GATEWAY:
        return address
    forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED_FOR, "")
    claimed = str(forwarded).rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(claimed))
    except ValueError:
        return address
