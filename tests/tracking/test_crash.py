"""Kill -9 during a load: every acknowledged interaction is in the database afterwards."""

import asyncio
import time

import grpc
import psycopg
import pytest
from loom.tracking.v1 import tracking_pb2 as pb

from libs.scratch_db import plain_url
from tests.support import ServiceProcess, free_port, process_env, stub_for, wait_serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
CLIENTS = 16


async def load(stub, acknowledged: dict[str, str], stop: asyncio.Event, client: int) -> None:
    n = 0
    while not stop.is_set():
        event_id = f"crash-{client}-{n}"
        n += 1
        item = pb.Interaction(
            type=pb.INTERACTION_TYPE_HOVER, product_id=f"p-{event_id}", session_id=f"s-{client}", client_event_id=event_id
        )
        try:
            reply = await stub.TrackInteraction(pb.TrackInteractionRequest(interaction=item), timeout=5)
        except grpc.aio.AioRpcError:
            return  # the server died under us: this one was never acknowledged
        acknowledged[event_id] = reply.interaction_id


async def test_every_acknowledged_interaction_survives_kill_9(tracking_db):
    port = free_port()
    env = process_env("tracking", tracking_db, port)
    server = ServiceProcess("tracking", env).start()
    target = f"127.0.0.1:{port}"
    acknowledged: dict[str, str] = {}
    try:
        await wait_serving(target)
        stop = asyncio.Event()
        async with stub_for("tracking", target) as stub:
            clients = [asyncio.create_task(load(stub, acknowledged, stop, c)) for c in range(CLIENTS)]
            deadline = time.monotonic() + 30
            while len(acknowledged) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            server.kill()  # mid-load: calls are in flight, groups are being committed
            stop.set()
            await asyncio.gather(*clients)
        assert len(acknowledged) >= 300

        with psycopg.connect(plain_url(tracking_db)) as conn:
            stored = {
                str(row[0])
                for row in conn.execute(
                    "SELECT id FROM tracking.interactions WHERE id = ANY(%s::uuid[])", (list(acknowledged.values()),)
                )
            }
        assert stored == set(acknowledged.values())

        server = ServiceProcess("tracking", env).start()
        await wait_serving(target)
        async with stub_for("tracking", target) as stub:
            for event_id in list(acknowledged)[:20]:
                client = event_id.split("-")[1]
                item = pb.Interaction(
                    type=pb.INTERACTION_TYPE_HOVER, product_id=f"p-{event_id}", session_id=f"s-{client}",
                    client_event_id=event_id,
                )
                replay = await stub.TrackInteraction(pb.TrackInteractionRequest(interaction=item))
                assert replay.duplicate and replay.interaction_id == acknowledged[event_id]
    finally:
        if server.process and server.process.poll() is None:
            server.kill()
