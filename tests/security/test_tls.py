"""Mutual TLS between services: who gets through the handshake, and certificates rotated without a restart."""

from __future__ import annotations

import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loom.batch.v1 import batch_pb2

from libs import tls
from libs.clients import ServiceClients, open_channel
from libs.settings import Settings
from tests.security.conftest import mtls
from tests.support import serve, settings_for


def client_credentials(directory, name: str | None) -> grpc.ChannelCredentials:
    """Trusts `directory`'s CA and presents `name`'s certificate (none when name is None)."""
    return tls.channel_credentials(
        Settings(**({**mtls(directory, name)} if name else {"tls_ca_file": directory / "ca.pem"}))
    )


async def health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    channel = open_channel(target, credentials=credentials)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status
    finally:
        await channel.close()


@pytest.fixture(scope="module")
async def batch(database_url, pki):
    async with serve("batch", database_url, **mtls(pki, "batch")) as running:
        yield running


async def test_a_client_with_a_certificate_of_the_suite_ca_is_served(batch, pki):
    assert await health(batch.target, client_credentials(pki, "rules")) == health_pb2.HealthCheckResponse.SERVING


async def test_a_client_of_replicas_on_a_multi_address_target_verifies_them_over_tls(database_url, batch, pki):
    async with serve("batch", database_url, **mtls(pki, "batch")) as second:
        target = f"ipv4:{batch.target},{second.target}"  # as `loom up --replicas 2 --tls` gives its clients
        assert await health(target, client_credentials(pki, "rules")) == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(batch):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health(batch.target, None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_tls_client_without_a_certificate_is_refused(batch, pki):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health(batch.target, client_credentials(pki, None))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_whose_certificate_another_ca_signed_is_refused(batch, pki):
    rogue = tls.channel_credentials(
        Settings(
            tls_ca_file=pki / "ca.pem",  # it trusts the real server; the server does not trust it
            tls_cert_file=pki / "rogue" / "rules.pem",
            tls_key_file=pki / "rogue" / "rules-key.pem",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health(batch.target, rogue)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_service_clients_call_over_mutual_tls(batch, pki):
    settings = settings_for("rules", None, batch_target=batch.target, **mtls(pki, "rules"))
    clients = ServiceClients(settings, caller="rules")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await clients.batch.GetBatch(batch_pb2.GetBatchRequest(batch_id="00000000-0000-0000-0000-000000000000"))
    finally:
        await clients.close()
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # through the handshake and the auth check


async def test_rotated_certificate_files_are_served_to_new_connections_without_a_restart(database_url, pki, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(pki, live)
    async with serve("batch", database_url, **mtls(live, "batch")) as running:
        assert await health(running.target, client_credentials(pki, "rules")) == health_pb2.HealthCheckResponse.SERVING

        successor = tmp_path / "successor"
        tls.make_ca(successor, "The next CA")
        tls.make_certificate(successor, "batch")
        tls.make_certificate(successor, "rules")
        for name in ("batch-key.pem", "batch.pem", "ca.pem"):
            shutil.copy(successor / name, live / name)

        assert await health(running.target, client_credentials(successor, "rules")) == (
            health_pb2.HealthCheckResponse.SERVING
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await health(running.target, client_credentials(pki, "rules"))


async def test_a_new_client_channel_reads_the_rotated_client_files(database_url, pki, tmp_path):
    live = tmp_path / "client"
    shutil.copytree(pki, live)
    async with serve("batch", database_url, **mtls(pki, "batch")) as running:
        before = tls.channel_credentials(Settings(**mtls(live, "rules")))
        for name in ("rules.pem", "rules-key.pem"):  # now a certificate the server does not trust
            shutil.copy(pki / "rogue" / name, live / name)
        after = tls.channel_credentials(Settings(**mtls(live, "rules")))
        assert await health(running.target, before) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await health(running.target, after)
