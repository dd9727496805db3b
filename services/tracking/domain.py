"""Pure decisions of the tracking service: validation, enrichment rules, de-duplication, limits.

Nothing here does I/O; the store and the servicer feed it values and act on its answers.
"""

from __future__ import annotations

import hmac
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

from libs.domain_errors import FieldViolation

INTERACTION_TYPES = {
    1: "hover",
    2: "quick_view_click",
    3: "wishlist_click",
    4: "color_swatch_click",
    5: "design_click",
    6: "quote_click",
    7: "add_to_cart",
    8: "view_details",
}
VIEW_DETAILS, ADD_TO_CART, QUOTE_CLICK = 8, 7, 6
FUNNEL = (VIEW_DETAILS, ADD_TO_CART, QUOTE_CLICK)
SHARE_PLATFORMS = {1: "linkedin", 2: "facebook", 3: "twitter", 4: "whatsapp"}

MAX_BATCH = 1000
MAX_ID_LENGTH = 128
MAX_URL_LENGTH = 2048
MAX_USER_AGENT_LENGTH = 1024
MAX_TITLE_LENGTH = 300
# Ids are opaque tokens: letters, digits and a few separators, no spaces or control characters.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")


@dataclass(frozen=True)
class IngestLimits:
    dedup_window: timedelta
    max_age: timedelta
    max_skew: timedelta


@dataclass(frozen=True)
class Agent:
    browser: str | None
    os: str | None
    device: str


@dataclass(slots=True)
class Event:
    """A validated, enriched interaction ready to store (no raw IP: only its salted hash)."""

    id: str  # a UUID, proposed; the stored id may differ for a duplicate
    occurred_at: datetime
    type: int
    product_id: str
    session_id: str
    user_id: str | None
    anonymous_id: str | None
    client_event_id: str | None
    page: str | None
    referrer_host: str | None
    country: str | None
    browser: str | None
    os: str | None
    device: str
    ip_hash: bytes


class Outcome(NamedTuple):
    """What became of one submitted event (a tuple: ingestion makes one per event)."""

    interaction_id: str
    duplicate: bool


MALFORMED_ID = f"malformed: 1-{MAX_ID_LENGTH} letters, digits or ._:@/+=- starting with a letter or digit"


def _acceptable_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and ID_PATTERN.fullmatch(value) is not None


def id_problem(value: str, *, required: bool) -> str | None:
    """Why an id is unacceptable, or None."""
    if not value:
        return "required" if required else None
    return None if _acceptable_id(value) else MALFORMED_ID


# Lines each empty or an id: a whole batch's ids are checked by one regex pass over them
# joined by newlines (which no id may hold), far cheaper than a call per id.
_ID_LINES = re.compile(rf"(?:{ID_PATTERN.pattern})?(?:\n(?:{ID_PATTERN.pattern})?)*")


def ids_acceptable(ids: list[str]) -> bool:
    """Whether every non-empty id in ids is well-formed (presence is checked apart)."""
    joined = "\n".join(ids)
    return not ids or (joined.count("\n") == len(ids) - 1 and _ID_LINES.fullmatch(joined) is not None)


def interaction_acceptable(
    type: int, product_id: str, session_id: str, occurred_at: datetime, earliest: datetime, latest: datetime,
    referrer: str, user_agent: str, page: str,
) -> bool:
    """The common case of ingestion but for the ids' form (see ids_acceptable), decided without
    building anything (positional: it runs per event)."""
    return (
        type in INTERACTION_TYPES
        and product_id != "" and session_id != ""
        and earliest <= occurred_at <= latest
        and len(referrer) <= MAX_URL_LENGTH and len(page) <= MAX_URL_LENGTH
        and len(user_agent) <= MAX_USER_AGENT_LENGTH
        and "\x00" not in page and "\x00" not in referrer and "\x00" not in user_agent
    )


def interaction_violations(
    *,
    type: int,
    product_id: str,
    session_id: str,
    user_id: str,
    anonymous_id: str,
    client_event_id: str,
    occurred_at: datetime | None,
    referrer: str,
    user_agent: str,
    page: str,
    now: datetime,
    limits: IngestLimits,
) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if type not in INTERACTION_TYPES:
        found.append(FieldViolation("type", f"must be one of {', '.join(INTERACTION_TYPES.values())}"))
    for field, value, required in (
        ("product_id", product_id, True),
        ("session_id", session_id, True),
        ("user_id", user_id, False),
        ("anonymous_id", anonymous_id, False),
        ("client_event_id", client_event_id, False),
    ):
        problem = id_problem(value, required=required)
        if problem:
            found.append(FieldViolation(field, problem))
    if occurred_at is not None:
        if occurred_at > now + limits.max_skew:
            found.append(FieldViolation("occurred_time", "in the future"))
        elif occurred_at < now - limits.max_age:
            found.append(FieldViolation("occurred_time", f"older than {limits.max_age.days} days"))
    for field, value, limit in (
        ("referrer", referrer, MAX_URL_LENGTH),
        ("page", page, MAX_URL_LENGTH),
        ("user_agent", user_agent, MAX_USER_AGENT_LENGTH),
    ):
        if len(value) > limit:
            found.append(FieldViolation(field, f"at most {limit} characters"))
        elif "\x00" in value:  # PostgreSQL text cannot hold it
            found.append(FieldViolation(field, "must not contain NUL characters"))
    return found


@lru_cache(maxsize=16384)
def referrer_host(referrer: str) -> str | None:
    if not referrer:
        return None
    try:
        host = urlsplit(referrer if "//" in referrer else f"//{referrer}").hostname
    except ValueError:
        return None
    return host or None


def device_class(user_agent: str, device_family: str, os_family: str) -> str:
    """bot, tablet, mobile, desktop or unknown, from the UA string and ua-parser's families."""
    lower = user_agent.lower()
    if not lower:
        return "unknown"
    if device_family == "Spider" or "bot" in lower or "crawler" in lower:
        return "bot"
    if "ipad" in lower or "tablet" in lower or (os_family == "Android" and "mobile" not in lower):
        return "tablet"
    if "mobi" in lower or "iphone" in lower or os_family in ("iOS", "Android"):
        return "mobile"
    return "desktop"


def ip_hash(salt: bytes, ip: str) -> bytes:
    """A keyed hash of the IP: stable for a day (one salt), not reversible once the salt is gone."""
    return hmac.digest(salt, ip.encode(), "sha256")[:16]


def first_claims(client_event_ids: Sequence[str | None]) -> dict[int, int]:
    """For each event repeating an earlier event's client id in the same batch: index -> first index."""
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for index, client_id in enumerate(client_event_ids):
        if client_id is None:
            continue
        if client_id in first:
            repeats[index] = first[client_id]
        else:
            first[client_id] = index
    return repeats


def session_rounds(events: Sequence[Event], indices: Sequence[int], window: timedelta) -> Sequence[Mapping[int, Sequence[int]]]:
    """Splits a batch into rounds of events with distinct (session, product, type) keys.

    In each round every key appears once, as a representative; later events of the
    same key within the window of their representative are its followers (stored
    once: they share its outcome as duplicates). An event beyond that window goes to
    the next round as a representative itself.
    """
    by_key: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for index in indices:
        event = events[index]
        by_key[(event.session_id, event.product_id, event.type)].append(index)
    if len(by_key) == len(indices):  # the common case: no key repeats, one round
        return [dict.fromkeys(indices, ())] if indices else []
    rounds: list[dict[int, list[int]]] = []
    for group in by_key.values():
        group.sort(key=lambda i: events[i].occurred_at)
        round_number, representative = 0, None
        for index in group:
            if representative is not None and events[index].occurred_at < events[representative].occurred_at + window:
                rounds[round_number - 1][representative].append(index)
                continue
            if len(rounds) <= round_number:
                rounds.append({})
            rounds[round_number][index] = []
            representative = index
            round_number += 1
    return rounds


def share_lock_keys(today_hash: bytes, yesterday_hash: bytes) -> list[int]:
    """Advisory-lock keys that serialise one address's shares across the midnight salt rotation.

    A share locks the keys of both its hashes, lowest first: just before midnight that is
    {hash(day D), hash(D-1)}, just after it {hash(D+1), hash(D)}; the two share hash(D), so
    they cannot both count the same hour at once, and the fixed order cannot deadlock.
    """
    return sorted({int.from_bytes(h[:4], "big", signed=True) for h in (today_hash, yesterday_hash)})


def share_decision(recent: int, oldest: datetime | None, now: datetime, limit: int) -> float | None:
    """None when one more share is allowed; otherwise seconds until the oldest share leaves the hour."""
    if recent < limit:
        return None
    assert oldest is not None
    return max(1.0, (oldest + timedelta(hours=1) - now).total_seconds())


def post_violations(*, post_id: str, title: str, url: str, check: set[str]) -> list[FieldViolation]:
    """Violations of the post fields named in check (all of them on create)."""
    found: list[FieldViolation] = []
    if "post_id" in check:
        problem = id_problem(post_id, required=False)
        if problem:
            found.append(FieldViolation("post.post_id", problem))
    if "title" in check and not (0 < len(title.strip()) <= MAX_TITLE_LENGTH):
        found.append(FieldViolation("post.title", f"required, at most {MAX_TITLE_LENGTH} characters"))
    if "url" in check:
        parts = urlsplit(url) if len(url) <= MAX_URL_LENGTH else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            found.append(FieldViolation("post.url", f"an http(s) URL of at most {MAX_URL_LENGTH} characters"))
    return found

