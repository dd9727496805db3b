"""What the gateway passes on to a backend besides the message: who, which request, from where, until when."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from libs.client_ip import FORWARDED_FOR, Network, client_ip
from libs.interceptor import MAX_REQUEST_ID_LENGTH, REQUEST_ID_HEADER
from services.gateway.status import bad_request

GRPC_TIMEOUT_HEADER = "grpc-timeout"
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
_GRPC_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-Id when it is a sane token, else a fresh one."""
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class _HttpPeer:
    """An HTTP connection seen as the gRPC call context `libs.client_ip` reads."""

    def __init__(self, host: str, forwarded_for: str) -> None:
        self._host, self._forwarded_for = host, forwarded_for

    def peer(self) -> str:
        return f"ipv6:[{self._host}]:0" if ":" in self._host else f"ipv4:{self._host}:0"

    def invocation_metadata(self):
        return ((FORWARDED_FOR, self._forwarded_for),)


def client_address(peer_host: str, forwarded_for: str, trusted_proxies: tuple[Network, ...]) -> str:
    """The client's IP: X-Forwarded-For is believed only hop by hop from trusted proxies."""
    return client_ip(_HttpPeer(peer_host, forwarded_for), trusted_proxies)


def deadline_seconds(headers: Mapping[str, str], *, default: float | None, maximum: float) -> float | None:
    """The Grpc-Timeout header (gRPC's format: `5S`, `250m`...) capped at `maximum`, else `default`."""
    value = headers.get(GRPC_TIMEOUT_HEADER)
    if value is None:
        return default
    parsed = _GRPC_TIMEOUT.fullmatch(value.strip())
    if parsed is None:
        raise bad_request("Grpc-Timeout", "expected digits and a unit H, M, S, m, u or n, e.g. 5S or 250m")
    seconds = int(parsed.group(1)) * _TIMEOUT_UNITS[parsed.group(2)]
    return min(seconds, maximum)


def call_metadata(
    headers: Mapping[str, str], *, request_id: str, client: str
) -> tuple[tuple[str, str], ...]:
    metadata = [(REQUEST_ID_HEADER, request_id), (FORWARDED_FOR, client)]
    authorization = headers.get("authorization")
    if authorization is not None:
        if not _HEADER_VALUE.fullmatch(authorization):
            raise bad_request("Authorization", "must be printable ASCII")
        metadata.append(("authorization", authorization))
    return tuple(metadata)

