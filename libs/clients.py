"""Channels and stubs for calling other Loom services.

Every channel carries a gRPC service config that balances calls round-robin over
the target's addresses and retries UNAVAILABLE with
exponential backoff (safe for mutations: they all carry an idempotency key),
a default deadline, the caller's request id and causation chain (libs.causation), and a
service-role token that is re-minted before it expires.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import structlog
from loom.batch.v1 import batch_pb2_grpc
from loom.rules.v1 import rules_pb2_grpc
from loom.scheduler.v1 import scheduler_pb2_grpc
from loom.tracking.v1 import tracking_pb2_grpc

from libs import causation
from libs.auth import FORWARDER_HEADER, SERVICE_SUBJECT_PREFIX, mint_token
from libs.interceptor import REQUEST_ID_HEADER
from libs.settings import Settings
from libs.tls import channel_credentials

RETRY_SERVICE_CONFIG = json.dumps(
    {
        # Per-call balancing over every address a `dns:///` target resolves to
        # (replicas), not one long-lived connection to the first.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS = (
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)

def channel_options(target: str) -> tuple[tuple[str, Any], ...]:
    """CHANNEL_OPTIONS, plus, for a list of addresses (`ipv4:10.0.0.1:50051,10.0.0.2:50051`,
    as `loom up --replicas` gives), the first one's host as the authority: the default would
    be the whole list, which no certificate names, so TLS hostname verification would fail."""
    scheme, _, addresses = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or "," not in addresses:
        return CHANNEL_OPTIONS
    host = addresses.split(",", 1)[0].rsplit(":", 1)[0].strip("[]")
    return (*CHANNEL_OPTIONS, ("grpc.default_authority", host))


STUBS = {
    "batch": batch_pb2_grpc.BatchServiceStub,
    "rules": rules_pb2_grpc.RulesServiceStub,
    "tracking": tracking_pb2_grpc.TrackingServiceStub,
    "scheduler": scheduler_pb2_grpc.SchedulerServiceStub,
}


class ServiceToken:
    """A service-role bearer token, minted again shortly before it expires."""

    # Short-lived: a leaked service token is worth minutes, and it only ever carries the
    # service role with this service's own name, never a caller's or admin rights.
    TTL_SECONDS = 300

    def __init__(self, key: str, *, subject: str, issuer: str) -> None:
        self._key, self._subject, self._issuer = key, subject, issuer
        self._token, self._expires = "", 0.0

    def header(self) -> str:
        if time.monotonic() > self._expires:
            self._token = mint_token(
                self._key, subject=self._subject, role="service", ttl_seconds=self.TTL_SECONDS, issuer=self._issuer
            )
            self._expires = time.monotonic() + self.TTL_SECONDS / 2
        return f"Bearer {self._token}"


class _CallDefaults(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    def __init__(self, token: ServiceToken | None, deadline_seconds: float) -> None:
        self._token, self._deadline = token, deadline_seconds

    def _details(self, details: grpc.aio.ClientCallDetails, streaming: bool) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._token is not None and "authorization" not in metadata:
            metadata["authorization"] = self._token.header()
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id and REQUEST_ID_HEADER not in metadata:
            metadata[REQUEST_ID_HEADER] = request_id
        # The rule executions that led to the call being served lead to this one too.
        chain = causation.current()
        if chain and causation.METADATA_KEY not in metadata:
            metadata[causation.METADATA_KEY] = chain
        timeout = details.timeout if details.timeout is not None or streaming else self._deadline
        return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details, streaming=False), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details, streaming=True), request)


def open_channel(
    target: str,
    *,
    token: ServiceToken | None = None,
    deadline_seconds: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel to `target`: TLS with `credentials` (see libs.tls), else plaintext."""
    interceptors = [_CallDefaults(token, deadline_seconds)]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=channel_options(target), interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=channel_options(target), interceptors=interceptors)


class _Forwarder(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds the forwarding process's own service token beside its caller's token."""

    def __init__(self, token: ServiceToken) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata[FORWARDER_HEADER] = self._token.header()
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def forwarding_channel(settings: Settings, service: str, *, identity: str = "gateway") -> grpc.aio.Channel:
    """A channel for a process that forwards its own callers' tokens (the gateway): no
    service token in `authorization` and no default deadline. Its identity travels in
    its client certificate under mutual TLS, else as a forwarder token."""
    target, credentials = settings.target_of(service), channel_credentials(settings)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=channel_options(target))
    token = ServiceToken(settings.jwt_key, subject=f"{SERVICE_SUBJECT_PREFIX}{identity}", issuer=settings.jwt_issuer)
    return grpc.aio.insecure_channel(target, options=channel_options(target), interceptors=[_Forwarder(token)])


class ServiceClients:
    """Lazily opened stubs to the other services, authenticated as this service."""

    def __init__(self, settings: Settings, *, caller: str) -> None:
        self._settings = settings
        self._token = ServiceToken(
            settings.jwt_key, subject=f"{SERVICE_SUBJECT_PREFIX}{caller}", issuer=settings.jwt_issuer
        )
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}

    def stub(self, service: str) -> Any:
        if service not in self._stubs:
            channel = open_channel(
                self._settings.target_of(service),
                token=self._token,
                deadline_seconds=self._settings.client_deadline_seconds,
                credentials=channel_credentials(self._settings),
            )
            self._channels[service] = channel
            self._stubs[service] = STUBS[service](channel)
        return self._stubs[service]

    @property
    def batch(self) -> batch_pb2_grpc.BatchServiceStub:
        return self.stub("batch")

    @property
    def rules(self) -> rules_pb2_grpc.RulesServiceStub:
        return self.stub("rules")

    @property
    def tracking(self) -> tracking_pb2_grpc.TrackingServiceStub:
        return self.stub("tracking")

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return self.stub("scheduler")

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
