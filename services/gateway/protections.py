"""What the gateway does for every HTTP request before it is answered, and to every answer.

Before: header sizes (`limits.py`, 431), then token-bucket rate limits per client IP
and per subject (429 with Retry-After and a google.rpc RetryInfo). After: security
headers on every response, the console's pages and files, JSON answers and errors alike
(Strict-Transport-Security only when the gateway itself serves HTTPS).

Buckets live in this process: with N gateway replicas behind a load balancer a client
gets up to N times the configured rate. The client IP is the one the gateway forwards to
the services (X-Forwarded-For walked back through LOOM_TRUSTED_PROXIES); IPv6 clients
share a bucket per /64, the block one host usually holds. The subject is the bearer
token's `sub`, verified as the services verify it (cached by token); a token that does
not verify counts only against its IP (the service refuses it anyway), so nobody can
drain someone else's bucket by naming them in a forged token.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Mapping

from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from prometheus_client import Counter
from starlette.types import Message, Scope, Send

from libs.auth import Authenticator, identity_provider
from libs.client_ip import parse_networks
from libs.errors import ERROR_DOMAIN
from services.gateway import forwarding
from services.gateway.limits import Limits
from services.gateway.settings import GatewaySettings
from services.gateway.status import HttpError, gateway_error

# The console's pages load only their own scripts and styles (no inline code, no third
# party); JSON answers need nothing at all, and the one policy fits both.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HSTS_HEADER = (b"strict-transport-security", b"max-age=31536000")
CLIENT_IP_KEY = "loom.client_ip"  # the scope entry where the transcoder finds the client IP
UNLIMITED_PATHS = frozenset({"/healthz"})  # load balancers' probes
REFUSED = Counter(
    "loom_gateway_refused_total",
    "Requests the gateway refused before routing: rate limits per address or subject, oversized headers.",
    ["reason"],
)
SUBJECTS_KEPT = 4096
SUBJECT_KEPT_SECONDS = 60.0  # a cached subject serves rate limiting only, never authorization


class TokenBuckets:
    """`rate` tokens a second up to `burst` per key; a request takes one.

    A bucket left alone long enough to be full again is the same as no bucket, so those
    are dropped (at most once per refill period, when a new key arrives): memory stays
    bounded by the keys seen in one refill period, whatever the number of clients.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(max(burst, 1))
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, when counted]
        self._refill_seconds = self.burst / rate
        self._swept = float("-inf")

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """0 when a token was taken, else the seconds until one will be there (nothing taken)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if now - self._swept >= self._refill_seconds:
                self._sweep(now)
            self._buckets[key] = [self.burst - 1, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def give_back(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + 1)

    def _sweep(self, now: float) -> None:
        self._swept = now
        rate, burst = self.rate, self.burst
        full = [key for key, (tokens, when) in self._buckets.items() if tokens + (now - when) * rate >= burst]
        for key in full:
            del self._buckets[key]


def ip_key(ip: str) -> str:
    """The bucket of a client address: itself, or its /64 for IPv6."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def rate_limited(who: str, wait_seconds: float) -> HttpError:
    seconds = max(1, math.ceil(wait_seconds))
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    info = error_details_pb2.ErrorInfo(reason="GATEWAY_RATE_LIMITED", domain=ERROR_DOMAIN, metadata={"limit": who})
    return gateway_error(
        429,
        code_pb2.RESOURCE_EXHAUSTED,
        f"too many requests from this {who}; retry in {seconds} s",
        retry,
        info,
        headers={"retry-after": str(seconds)},
    )


class Protections:
    """Admits or refuses a request (`admit`) and adds the security headers to its answer (`secure`)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.limits = Limits.of(settings)
        self._trusted_proxies = parse_networks(settings.trusted_proxies)
        self._ips = _buckets(settings.rate_limit_ip_per_second, settings.rate_limit_ip_burst)
        self._subjects = _buckets(settings.rate_limit_subject_per_second, settings.rate_limit_subject_burst)
        self._authenticator = _authenticator(settings) if self._subjects is not None else None
        self._subject_of: dict[str, tuple[str, float]] = {}
        self._headers = list(SECURITY_HEADERS)
        self._https_headers = [*SECURITY_HEADERS, HSTS_HEADER]

    def secure(self, scope: Scope, send: Send) -> Send:
        """`send`, adding the security headers to the response's start."""
        extra = self._https_headers if scope.get("scheme") == "https" else self._headers

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return secured

    async def admit(self, scope: Scope, headers: Mapping[str, str]) -> HttpError | None:
        """None to go on, else the refusal (431, 429). Leaves the client IP in the scope."""
        refusal = self.limits.check_headers(scope["headers"])
        if refusal is not None:
            REFUSED.labels("headers").inc()
            return refusal
        client = scope.get("client")
        ip = forwarding.client_address(client[0] if client else "", headers.get("x-forwarded-for", ""), self._trusted_proxies)
        scope[CLIENT_IP_KEY] = ip
        if scope["path"] in UNLIMITED_PATHS:
            return None
        now = time.monotonic()
        ip_bucket = ""
        if self._ips is not None:
            ip_bucket = ip_key(ip)
            wait = self._ips.take(ip_bucket, now)
            if wait:
                REFUSED.labels("address").inc()
                return rate_limited("address", wait)
        if self._subjects is not None:
            subject = await self._subject(headers.get("authorization"), now)
            if subject:
                wait = self._subjects.take(subject, now)
                if wait:
                    if self._ips is not None:
                        self._ips.give_back(ip_bucket)
                    REFUSED.labels("subject").inc()
                    return rate_limited("subject", wait)
        return None

    async def _subject(self, authorization: str | None, now: float) -> str:
        """The verified subject of the bearer token; '' for none or one that does not verify."""
        if not authorization or self._authenticator is None:
            return ""
        known = self._subject_of.get(authorization)
        if known is not None and now < known[1]:
            return known[0]
        try:
            subject = (await self._authenticator.caller(authorization)).subject
        except Exception:  # noqa: BLE001 - any token that does not verify (or names no Loom role) has no subject here
            subject = ""
        if len(self._subject_of) >= SUBJECTS_KEPT:
            self._subject_of.clear()
        self._subject_of[authorization] = (subject, now + SUBJECT_KEPT_SECONDS)
        return subject


def _buckets(rate: float, burst: int) -> TokenBuckets | None:
    return TokenBuckets(rate, burst) if rate > 0 else None


def _authenticator(settings: GatewaySettings) -> Authenticator:
    return Authenticator(settings.jwt_key, issuer=settings.jwt_issuer, provider=identity_provider(settings))
