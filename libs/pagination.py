"""AIP-158 pagination: page_size limits and opaque, tamper-evident page tokens.

A token is the keyset cursor of the last item served (e.g. [create_time, id]),
signed so a tampered, truncated or foreign token is rejected with a clear
INVALID_ARGUMENT instead of silently scanning from somewhere else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from libs.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_KEY = b"loom-page-token-v1"


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or default, maximum)


def _sign(payload: bytes) -> bytes:
    return hmac.new(_KEY, payload, hashlib.sha256).digest()[:12]


def encode_token(cursor: list[Any], *, scope: str) -> str:
    payload = json.dumps({"s": scope, "c": cursor}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(_sign(payload) + payload).decode().rstrip("=")


def decode_token(token: str, *, scope: str) -> list[Any] | None:
    """The cursor a token carries; None for the first page. scope ties it to one query."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        signature, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(signature, _sign(payload)):
            raise ValueError("bad signature")
        decoded = json.loads(payload)
    except (ValueError, TypeError):
        raise InvalidArgument.field("page_token", "not a token this server issued") from None
    if decoded.get("s") != scope:
        raise InvalidArgument.field("page_token", "issued for a different query")
    return decoded["c"]
