"""Ingestion's writes: a group commit's events in (usually) one statement.

Each group de-duplicates within the session window (tracking.dedup_windows), claims the
client event ids (a replay answers with the first event), stores the events that opened a
window, attributes sessions to users and raises the sharded hourly counters. See
services/tracking/README.md for the flow.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from libs.db import async_url, driver_options, is_transient
from libs.scratch_db import plain_url
from services.tracking.domain import Event, Outcome, first_claims, session_rounds

# Concurrent writers add to engagement_hourly rows; spreading them over shards keeps
# two group commits from queueing on the same counter row.
COUNTER_SHARDS = 16

# A group's rows travel as one array literal per column, unnested by the statement
# that stores them: no staging table, and a group of any size is a single statement.
INPUT = """
input AS (
    SELECT * FROM unnest(
        %(id)s::uuid[], %(occurred_at)s::timestamptz[], %(type)s::smallint[], %(product_id)s::text[],
        %(session_id)s::text[], %(user_id)s::text[], %(anonymous_id)s::text[], %(client_event_id)s::text[],
        %(page)s::text[], %(referrer_host)s::text[], %(country)s::text[], %(browser)s::text[], %(os)s::text[],
        %(device)s::text[], %(ip_hash)s::bytea[], %(representative)s::boolean[]
    ) AS input (id, occurred_at, type, product_id, session_id, user_id, anonymous_id, client_event_id, page,
                referrer_host, country, browser, os, device, ip_hash, representative)
)"""

# Representatives have distinct (session, product, type) keys: each opens or joins its
# key's de-duplication window; the events that opened one are stored, their sessions'
# users noted and the hourly counters raised. Followers (later events of a key within
# its representative's window) ride along for the client-id claim only.
STORE = """
windows AS (
    INSERT INTO tracking.dedup_windows AS w (session_id, product_id, type, window_start, interaction_id)
    SELECT session_id, product_id, type, occurred_at, id FROM input WHERE representative
    ORDER BY session_id, product_id, type
    ON CONFLICT (session_id, product_id, type) DO UPDATE SET
        window_start = CASE WHEN EXCLUDED.window_start >= w.window_start + %(window)s
                            THEN EXCLUDED.window_start ELSE w.window_start END,
        interaction_id = CASE WHEN EXCLUDED.window_start >= w.window_start + %(window)s
                              THEN EXCLUDED.interaction_id ELSE w.interaction_id END
    RETURNING w.session_id, w.product_id, w.type, w.interaction_id
),
fresh AS (
    SELECT input.* FROM input JOIN windows ON windows.interaction_id = input.id
),
stored AS (
    INSERT INTO tracking.interactions (id, occurred_at, type, product_id, session_id, user_id, anonymous_id,
        client_event_id, page, referrer_host, country, browser, os, device, ip_hash)
    SELECT id, occurred_at, type, product_id, session_id, user_id, anonymous_id, client_event_id, page,
        referrer_host, country, browser, os, device, ip_hash
    FROM fresh
),
attributed AS (
    INSERT INTO tracking.session_users (session_id, user_id)
    SELECT DISTINCT ON (session_id) session_id, user_id FROM fresh
    WHERE user_id IS NOT NULL ORDER BY session_id, occurred_at
    ON CONFLICT (session_id) DO NOTHING
),
counted AS (
    INSERT INTO tracking.engagement_hourly AS h (hour, type, shard, events, authenticated)
    SELECT date_trunc('hour', occurred_at, 'UTC'), type, %(shard)s, count(*), count(user_id)
    FROM fresh GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (hour, type, shard) DO UPDATE SET
        events = h.events + EXCLUDED.events, authenticated = h.authenticated + EXCLUDED.authenticated
)"""

# Answers the representatives that joined another event's window, with that event.
DUPLICATES = """
SELECT input.id::text, windows.interaction_id::text
FROM input JOIN windows USING (session_id, product_id, type)
WHERE input.representative AND windows.interaction_id <> input.id
"""

# The common case in one statement: every client id in the group is new (a plain
# INSERT, cheaper than ON CONFLICT; a taken one raises unique_violation and the group
# goes the careful way) and points at the event its window kept.
STORE_NEW_GROUP = f"""
WITH {INPUT}, {STORE},
claimed AS (
    INSERT INTO tracking.client_events (client_event_id, interaction_id)
    SELECT input.client_event_id, windows.interaction_id FROM input JOIN windows USING (session_id, product_id, type)
    WHERE input.client_event_id IS NOT NULL ORDER BY input.client_event_id
)
{DUPLICATES}"""

# Claims the client ids; answers only those already taken, with their event.
CLAIM_CLIENT_IDS = f"""
WITH {INPUT},
claimed AS (
    INSERT INTO tracking.client_events AS c (client_event_id, interaction_id)
    SELECT client_event_id, id FROM input WHERE client_event_id IS NOT NULL ORDER BY client_event_id
    ON CONFLICT (client_event_id) DO UPDATE SET client_event_id = EXCLUDED.client_event_id
    RETURNING client_event_id, interaction_id
)
SELECT input.id::text, claimed.interaction_id::text FROM claimed JOIN input USING (client_event_id)
WHERE claimed.interaction_id <> input.id
"""

STORE_ROUND = f"WITH {INPUT}, {STORE} {DUPLICATES}"

RELINK_CLIENT_IDS = """
UPDATE tracking.client_events AS c SET interaction_id = v.interaction_id
FROM unnest(%(client_event_id)s::text[], %(interaction_id)s::uuid[]) AS v(client_event_id, interaction_id)
WHERE c.client_event_id = v.client_event_id
"""


def _quoted(value: str) -> str:
    """An element of a PostgreSQL array literal, quoted (a bare NULL or empty string would be misread)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(values: list[str]) -> str:
    """An array literal of values that need no escaping (validated ids, numbers, timestamps)."""
    return '{"' + '","'.join(values) + '"}' if values else "{}"


def _nullable_array(values: list[str | None]) -> str:
    return "{" + ",".join("NULL" if v is None else f'"{v}"' for v in values) + "}"


def _formatted_array(values: list, element: Callable[[Any], str]) -> str:
    """An array literal of element(value) (NULL for None); a value repeated across a group,
    as times, addresses and agents are, is formatted once."""
    formatted: dict[Any, str] = {None: "NULL"}
    parts = []
    for value in values:
        part = formatted.get(value)
        if part is None:
            part = formatted[value] = element(value)
        parts.append(part)
    return "{" + ",".join(parts) + "}"


def _input(events: list[Event], indices: list[int], representatives: set[int] | None = None) -> dict[str, str]:
    """The INPUT parameters for events[indices]; all are representatives unless a set is given.

    Ids were validated to a character set that needs no escaping.
    """
    rows = [events[i] for i in indices]
    return {
        "id": _array([e.id for e in rows]),
        "occurred_at": _formatted_array([e.occurred_at for e in rows], datetime.isoformat),
        "type": _array([str(e.type) for e in rows]),
        "product_id": _array([e.product_id for e in rows]),
        "session_id": _array([e.session_id for e in rows]),
        "user_id": _nullable_array([e.user_id for e in rows]),
        "anonymous_id": _nullable_array([e.anonymous_id for e in rows]),
        "client_event_id": _nullable_array([e.client_event_id for e in rows]),
        "page": _formatted_array([e.page for e in rows], _quoted),
        "referrer_host": _formatted_array([e.referrer_host for e in rows], _quoted),
        "country": _formatted_array([e.country for e in rows], _quoted),
        "browser": _formatted_array([e.browser for e in rows], _quoted),
        "os": _formatted_array([e.os for e in rows], _quoted),
        "device": _formatted_array([e.device for e in rows], _quoted),
        "ip_hash": _formatted_array([e.ip_hash for e in rows], lambda h: '"\\\\x' + h.hex() + '"'),
        "representative": _array(["t" if representatives is None or i in representatives else "f" for i in indices]),
    }


class InteractionWriter:
    """One group-commit writer's own connection.

    Owning the connection spares each group the pool's checkout ping and the ORM layer:
    a group is usually one statement in its own implicit transaction. A transient failure
    (a dropped connection, a serialization failure, a deadlock) retries the whole group,
    on a fresh connection when the old one is gone.
    """

    ATTEMPTS = 6

    def __init__(self, database_url: str, window: timedelta, *, prepared_statements: bool = True) -> None:
        self._url = plain_url(async_url(database_url))
        self._window = window
        self._options = driver_options(prepared_statements=prepared_statements)
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, application_name="tracking-ingest", **self._options
            )
        return self._conn

    async def store(self, events: list[Event]) -> list[Outcome]:
        """Stores a group of events in one transaction; an outcome per event, in order.

        A repeated client event id gets the first event's answer; a repeated
        (session, product, type) within the window is a duplicate of the window's event.
        """
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                conn = await self._connection()
                async with conn.cursor() as cursor:
                    return await _store_group(conn, cursor, events, self._window)
            except psycopg.Error as error:
                if attempt == self.ATTEMPTS or not is_transient(error):
                    raise
                if self._conn is not None and self._conn.broken:
                    self._conn = None
                await asyncio.sleep(min(2.0, 0.02 * 2**attempt) * random.random())
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _answer(
    outcomes: dict[int, Outcome], events: list[Event], round_: Mapping[int, Sequence[int]], joined: dict[str, str]
) -> None:
    """Outcomes of a stored round: a representative keeps its id unless its window had
    another event; followers are duplicates of whatever the representative got."""
    for i, followers in round_.items():
        own = events[i].id
        window_event = joined.get(own)
        outcomes[i] = Outcome(own, False) if window_event is None else Outcome(window_event, True)
        if followers:
            duplicate = Outcome(window_event or own, True)
            for follower in followers:
                outcomes[follower] = duplicate


async def _store_group(conn: psycopg.AsyncConnection, cursor, events: list[Event], window: timedelta) -> list[Outcome]:
    repeats = first_claims([e.client_event_id for e in events])
    candidates = [i for i in range(len(events)) if i not in repeats]
    rounds = session_rounds(events, candidates, window)
    outcomes: dict[int, Outcome] = {}
    stored = False
    if len(rounds) == 1:
        [round_] = rounds
        try:
            await cursor.execute(
                STORE_NEW_GROUP,
                {**_input(events, candidates, set(round_)), "window": window, "shard": random.randrange(COUNTER_SHARDS)},
                prepare=True,
            )
        except psycopg.errors.UniqueViolation:
            pass  # a client id was taken (a replay, or a concurrent twin): nothing of the group was written
        else:
            _answer(outcomes, events, round_, dict(await cursor.fetchall()))
            stored = True
    if not stored:
        async with conn.transaction():
            await _store_carefully(cursor, events, candidates, outcomes, window)
    for i, first in repeats.items():
        outcomes[i] = Outcome(outcomes[first].interaction_id, True)
    return [outcomes[i] for i in range(len(events))]


async def _store_carefully(
    cursor, events: list[Event], candidates: list[int], outcomes: dict[int, Outcome], window: timedelta
) -> None:
    """Claims the client ids first: an event whose id is taken answers with the event that
    took it and leaves the de-duplication plan. The rest is stored round by round."""
    claimants = [i for i in candidates if events[i].client_event_id is not None]
    if claimants:
        await cursor.execute(CLAIM_CLIENT_IDS, _input(events, claimants))
        by_id = {events[i].id: i for i in claimants}
        for proposed_id, owner in await cursor.fetchall():
            outcomes[by_id[proposed_id]] = Outcome(owner, True)
    newly_claimed = [i for i in claimants if i not in outcomes]
    for round_ in session_rounds(events, [i for i in candidates if i not in outcomes], window):
        await cursor.execute(
            STORE_ROUND, {**_input(events, list(round_)), "window": window, "shard": random.randrange(COUNTER_SHARDS)}
        )
        _answer(outcomes, events, round_, dict(await cursor.fetchall()))
    # A new client id whose event joined an existing window answers, now and on every
    # replay, with the window's event.
    relinks = [(events[i].client_event_id, outcomes[i].interaction_id) for i in newly_claimed if outcomes[i].duplicate]
    if relinks:
        await cursor.execute(
            RELINK_CLIENT_IDS,
            {"client_event_id": [r[0] for r in relinks], "interaction_id": [r[1] for r in relinks]},
        )
