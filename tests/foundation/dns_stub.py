"""A tiny authoritative DNS server on loopback whose answers a test changes while it runs.

It answers A queries for any name with the addresses it currently holds (TTL 0) and
every other query type with no records; enough for gRPC's resolver to find replicas
(`dns://127.0.0.1:<port>/name:grpc-port`) the way a Kubernetes headless Service or
compose's service name lets it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

A_RECORD, IN_CLASS = 1, 1


@dataclass
class DnsStub(asyncio.DatagramProtocol):
    addresses: list[str] = field(default_factory=list)
    queries: int = 0
    transport: asyncio.DatagramTransport | None = None
    port: int = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.queries += 1
        assert self.transport is not None
        self.transport.sendto(self.answer(data), addr)

    def answer(self, query: bytes) -> bytes:
        (ident,) = struct.unpack("!H", query[:2])
        end = 12
        while query[end]:
            end += query[end] + 1
        question = query[12 : end + 5]
        qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
        records = self.addresses if qtype == A_RECORD else []
        header = struct.pack("!HHHHHH", ident, 0x8580, 1, len(records), 0, 0)  # response, authoritative, no error
        answers = b"".join(
            struct.pack("!HHHIH", 0xC00C, A_RECORD, IN_CLASS, 0, 4) + ipaddress.IPv4Address(a).packed for a in records
        )
        return header + question + answers


@asynccontextmanager
async def dns_stub(addresses: list[str]) -> AsyncIterator[DnsStub]:
    loop = asyncio.get_running_loop()
    transport, stub = await loop.create_datagram_endpoint(lambda: DnsStub(list(addresses)), local_addr=("127.0.0.1", 0))
    stub.port = transport.get_extra_info("sockname")[1]
    try:
        yield stub
    finally:
        transport.close()
