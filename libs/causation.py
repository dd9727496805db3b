"""The causation chain a call carries: which rule executions' actions led to it.

The rules service sends it with every action call (`loom-causation` metadata: a JSON list
of {rule_id, execution_id, event_id} links, oldest first). Every service's interceptor
keeps it for the duration of the call when the caller is a Loom service (a user cannot
make their own events look rule-caused and so escape rules); `libs.db.carry_trace` hands
it to SQL so that the events the call writes carry it, and `libs.clients` passes it on to
the calls the call makes (a rule's trigger_workflow -> the scheduler's job -> batch).
"""

from __future__ import annotations

import contextvars
import json

METADATA_KEY = "loom-causation"
# Longer chains are cut at the oldest links: the loop guard counts far fewer.
MAX_LINKS = 32
LINK_FIELDS = ("rule_id", "execution_id", "event_id")
# Each field of a link: a UUID or an event id, at most this long.
MAX_FIELD_LENGTH = 128

_current: contextvars.ContextVar[str] = contextvars.ContextVar("loom_causation", default="")


def canonical(value: str | bytes | None) -> str:
    """The chain as compact JSON, or '' when `value` is not a well-formed chain."""
    if not value:
        return ""
    try:
        chain = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(chain, list):
        return ""
    links = []
    for link in chain[-MAX_LINKS:]:
        if not isinstance(link, dict):
            return ""
        fields = {name: link.get(name) for name in LINK_FIELDS}
        if not all(isinstance(v, str) and 0 < len(v) <= MAX_FIELD_LENGTH and v.isprintable() for v in fields.values()):
            return ""
        links.append(fields)
    return json.dumps(links, separators=(",", ":")) if links else ""


def enter(metadata: dict[str, str | bytes]) -> None:
    """Keeps the chain the call carries (nothing when it carries none or a malformed one)."""
    chain = canonical(metadata.get(METADATA_KEY))
    if chain:
        _current.set(chain)


def current() -> str:
    """The chain of the call being served, as compact JSON; '' when it carries none."""
    return _current.get()
