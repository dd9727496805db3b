"""Structured JSON logging (structlog) with personal data kept out of the logs.

Every string that reaches a log line is scanned: e-mail addresses and IP
addresses are replaced by a keyed hash, so lines about the same person still
correlate but the raw values are never written.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from libs import tracing

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Candidates only; ipaddress decides (so "12:30:45" is left alone).
IP_CANDIDATE = re.compile(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w.:])")


class Redactor:
    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def digest(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:12]

    def hash_ip(self, ip: str) -> str:
        return f"ip:{self.digest(ip)}"

    def _ip(self, match: re.Match[str]) -> str:
        text = match.group(0)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return text
        return self.hash_ip(text)

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            value = EMAIL.sub(lambda m: f"email:{self.digest(m.group(0).lower())}", value)
            return IP_CANDIDATE.sub(self._ip, value)
        if isinstance(value, dict):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        return {k: self.redact(v) for k, v in event_dict.items()}


def peer_ip(peer: str) -> str:
    """The address of a gRPC peer string ('ipv4:1.2.3.4:5', 'ipv6:[::1]:5')."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return ""


def configure(*, service: str, level: str, redaction_key: str, stream=None) -> Redactor:
    redactor = Redactor(redaction_key)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *([tracing.add_trace_ids] if tracing.active() else []),
            redactor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    return redactor
