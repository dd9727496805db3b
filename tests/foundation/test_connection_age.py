"""Servers close connections at their maximum age, so long-lived clients re-balance.

Two batch replicas on 127.0.0.2 and 127.0.0.3 (one port, as two pods would have), found
through a DNS server that first knows only the first: a channel opened then keeps
using only it, unless the server sends GOAWAY at the connection's maximum age, after
which the channel resolves the name again and calls the replica started since.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.bootstrap import RunningService, start
from libs.clients import CHANNEL_OPTIONS
from services.batch.wiring import SPEC
from tests.foundation.dns_stub import dns_stub
from tests.support import free_port, settings_for

HOSTS = ("127.0.0.2", "127.0.0.3")
# The replica a call reached, told by a health entry each replica sets differently.
WHICH = "loom.test.replica"
FIRST, SECOND = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
# gRPC's DNS resolver waits 30 s between resolutions by default; the test waits a second.
CLIENT_OPTIONS = (*CHANNEL_OPTIONS, ("grpc.dns_min_time_between_resolutions_ms", 500))


async def replica(stack: AsyncExitStack, database_url: str, host: str, port: int, age: float, tag: int) -> RunningService:
    settings = settings_for(
        "batch", database_url, bind_host=host,
        grpc_max_connection_age_seconds=age, grpc_max_connection_age_grace_seconds=1,
    )
    running = await start(SPEC, settings, port=port)
    stack.push_async_callback(running.stop, 1)
    await running.health.set(WHICH, tag)
    return running


async def calls_reaching_each_replica(database_url: str, age: float) -> Counter:
    """Starts one replica, a channel to it, then a second replica; where 40 calls over 4 s went."""
    port = free_port()
    async with AsyncExitStack() as stack, dns_stub([HOSTS[0]]) as dns:
        await replica(stack, database_url, HOSTS[0], port, age, FIRST)
        channel = grpc.aio.insecure_channel(f"dns://127.0.0.1:{dns.port}/replicas.loom.test:{port}", options=CLIENT_OPTIONS)
        stack.push_async_callback(channel.close)
        stub = health_pb2_grpc.HealthStub(channel)
        assert (await stub.Check(health_pb2.HealthCheckRequest(service=WHICH))).status == FIRST
        await replica(stack, database_url, HOSTS[1], port, age, SECOND)
        dns.addresses.append(HOSTS[1])
        reached: Counter = Counter()
        for _ in range(40):
            reached[(await stub.Check(health_pb2.HealthCheckRequest(service=WHICH), timeout=5)).status] += 1
            await asyncio.sleep(0.1)
        return reached


async def test_a_replica_started_later_gets_calls_from_a_channel_opened_before_it(database_url):
    reached = await calls_reaching_each_replica(database_url, age=1.0)
    assert reached[SECOND] >= 5, reached


async def test_without_a_maximum_age_the_channel_stays_on_the_replicas_it_found(database_url):
    reached = await calls_reaching_each_replica(database_url, age=0)
    assert reached == Counter({FIRST: 40})
