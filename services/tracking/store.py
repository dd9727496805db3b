"""The tracking schema's tables and queries (nothing else touches them).

Hot-path writes (interactions, de-duplication) go straight to psycopg with array
parameters: one multi-row statement per group commit, whatever its size.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from datetime import UTC, date, datetime, timedelta

import psycopg
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.db import async_url, is_transient, run_in_transaction, tune_for_bulk
from libs.errors import FailedPrecondition, NotFound
from libs.scratch_db import plain_url
from services.tracking.domain import FUNNEL, Event, Outcome, first_claims, session_rounds, share_lock_keys

log = structlog.get_logger("loom.tracking.store")
SALT_BYTES = 32
# Concurrent writers add to engagement_hourly rows; spreading them over shards keeps
# two group commits from queueing on the same counter row.
COUNTER_SHARDS = 16


class SaltBook:
    """The daily IP-hash salts, shared by every replica through the database.

    A salt lives two days (today's and yesterday's, so an hour-long window spanning
    midnight still matches); older salts are deleted, after which the hashes made
    with them cannot be linked back to an address.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._salts: dict[date, bytes] = {}
        self._fetching = asyncio.Lock()  # the first calls of a day wait for one fetch, not one each

    async def salt(self, day: date) -> bytes:
        cached = self._salts.get(day)
        if cached is not None:
            return cached
        async with self._fetching:
            cached = self._salts.get(day)
            return cached if cached is not None else await self._fetch(day)

    async def _fetch(self, day: date) -> bytes:

        async def fetch(conn: AsyncConnection) -> bytes:
            await conn.execute(
                text("INSERT INTO tracking.ip_salts (day, salt) VALUES (:day, :salt) ON CONFLICT (day) DO NOTHING"),
                {"day": day, "salt": os.urandom(SALT_BYTES)},
            )
            await conn.execute(text("DELETE FROM tracking.ip_salts WHERE day < :oldest"), {"oldest": day - timedelta(days=1)})
            return (await conn.execute(text("SELECT salt FROM tracking.ip_salts WHERE day = :day"), {"day": day})).scalar_one()

        salt = await run_in_transaction(self._engine, fetch)
        self._salts = {d: s for d, s in self._salts.items() if d >= day - timedelta(days=1)}
        self._salts[day] = salt
        return salt


# ---------------------------------------------------------------------------- ingestion

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

    def __init__(self, database_url: str, window: timedelta) -> None:
        self._url = plain_url(async_url(database_url))
        self._window = window
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, application_name="tracking-ingest")
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


def _answer(outcomes: dict[int, Outcome], events: list[Event], round_: dict[int, Sequence[int]], joined: dict[str, str]) -> None:
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


async def _store_carefully(cursor, events: list[Event], candidates: list[int], outcomes: dict[int, Outcome], window: timedelta) -> None:
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


# ---------------------------------------------------------------------------- posts


@dataclass(frozen=True)
class PostRow:
    post_id: str
    title: str
    url: str
    published: bool
    share_count: int
    publish_time: datetime | None
    create_time: datetime
    update_time: datetime


POST_COLUMNS = "post_id, title, url, published, share_count, publish_time, create_time, update_time"


async def insert_post(conn: AsyncConnection, *, post_id: str, title: str, url: str, published: bool, now: datetime) -> PostRow | None:
    """The new post, or None when the id is taken."""
    row = (
        await conn.execute(
            text(
                f"""INSERT INTO tracking.posts (post_id, title, url, published, publish_time, create_time, update_time)
                VALUES (:post_id, :title, :url, :published, CASE WHEN :published THEN :now END, :now, :now)
                ON CONFLICT (post_id) DO NOTHING RETURNING {POST_COLUMNS}"""
            ),
            {"post_id": post_id, "title": title, "url": url, "published": published, "now": now},
        )
    ).first()
    return PostRow(*row) if row else None


async def update_post(conn: AsyncConnection, post_id: str, changes: dict[str, object], now: datetime) -> PostRow:
    current = await get_post(conn, post_id, lock=True)
    values = {"title": current.title, "url": current.url, "published": current.published, **changes}
    publish_time = current.publish_time
    if values["published"] and not current.published:
        publish_time = now
    elif not values["published"]:
        publish_time = None
    row = (
        await conn.execute(
            text(
                f"""UPDATE tracking.posts SET title = :title, url = :url, published = :published,
                publish_time = :publish_time, update_time = :now WHERE post_id = :post_id RETURNING {POST_COLUMNS}"""
            ),
            {**values, "publish_time": publish_time, "now": now, "post_id": post_id},
        )
    ).one()
    return PostRow(*row)


async def get_post(conn: AsyncConnection, post_id: str, *, lock: bool = False) -> PostRow:
    row = (
        await conn.execute(
            text(f"SELECT {POST_COLUMNS} FROM tracking.posts WHERE post_id = :post_id{' FOR UPDATE' if lock else ''}"),
            {"post_id": post_id},
        )
    ).first()
    if row is None:
        raise NotFound("post", post_id)
    return PostRow(*row)


async def list_posts(conn: AsyncConnection, after: tuple[datetime, str] | None, limit: int) -> list[PostRow]:
    rows = await conn.execute(
        text(
            f"""SELECT {POST_COLUMNS} FROM tracking.posts
            WHERE CAST(:after_time AS timestamptz) IS NULL OR (create_time, post_id) > (:after_time, :after_id)
            ORDER BY create_time, post_id LIMIT :limit"""
        ),
        {"after_time": after[0] if after else None, "after_id": after[1] if after else None, "limit": limit},
    )
    return [PostRow(*row) for row in rows]


# ---------------------------------------------------------------------------- shares

# Advisory-lock class of per-IP share limits (the other int is 32 bits of an IP hash).
SHARE_LIMIT_LOCK_CLASS = 0x53484152  # "SHAR"


@dataclass(frozen=True)
class ShareOutcome:
    """Either accepted (share_id set) or rejected by the rate limit (retry_after_seconds set)."""

    share_id: str | None = None
    share_count: int = 0
    remaining: int = 0
    retry_after_seconds: float | None = None


async def record_share(
    conn: AsyncConnection,
    *,
    post_id: str,
    platform: int,
    session_id: str | None,
    user_id: str | None,
    ip_hashes: tuple[bytes, bytes],
    limit: int,
    now: datetime,
    decide,
) -> ShareOutcome:
    """Checks the post (known and published) and the IP's sliding hour, then stores the share and raises the count.

    ip_hashes is (today's hash, yesterday's hash) of the caller's address: the hour may
    span midnight. Shares from one IP are serialised by advisory locks (see
    share_lock_keys), so the count read is exact across replicas, midnight included.
    A rejection is recorded (for the stats) and returned, not raised, so that it commits.
    """
    post = await get_post(conn, post_id)
    if not post.published:
        raise FailedPrecondition(f"post {post_id!r} is not published", reason="POST_NOT_PUBLISHED", subject=f"posts/{post_id}")
    today_hash, yesterday_hash = ip_hashes
    for key in share_lock_keys(today_hash, yesterday_hash):
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:class, :key)"), {"class": SHARE_LIMIT_LOCK_CLASS, "key": key}
        )
    recent, oldest = (
        await conn.execute(
            text(
                """SELECT count(*), min(created_at) FROM tracking.shares
                WHERE ip_hash IN (:today, :yesterday) AND created_at > :since"""
            ),
            {"today": today_hash, "yesterday": yesterday_hash, "since": now - timedelta(hours=1)},
        )
    ).one()
    retry_after = decide(recent, oldest)
    if retry_after is not None:
        await conn.execute(
            text(
                """INSERT INTO tracking.share_rejections AS r (day, ip_hash, rejected) VALUES (:day, :ip_hash, 1)
                ON CONFLICT (day, ip_hash) DO UPDATE SET rejected = r.rejected + 1"""
            ),
            {"day": now.date(), "ip_hash": today_hash},
        )
        return ShareOutcome(retry_after_seconds=retry_after)
    share_id = str(uuid.uuid4())
    await conn.execute(
        text(
            """INSERT INTO tracking.shares (id, post_id, platform, session_id, user_id, ip_hash, created_at)
            VALUES (:id, :post_id, :platform, :session_id, :user_id, :ip_hash, :now)"""
        ),
        {"id": share_id, "post_id": post_id, "platform": platform, "session_id": session_id,
         "user_id": user_id, "ip_hash": today_hash, "now": now},
    )
    share_count = await _raise_share_count(conn, post_id)
    return ShareOutcome(share_id=share_id, share_count=share_count, remaining=limit - recent - 1)


async def _raise_share_count(conn: AsyncConnection, post_id: str) -> int:
    """Adds one to the post's counter; if that fails the share stands and the aggregation repairs the count."""
    try:
        async with conn.begin_nested():
            await conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            return (
                await conn.execute(
                    text("UPDATE tracking.posts SET share_count = share_count + 1 WHERE post_id = :p RETURNING share_count"),
                    {"p": post_id},
                )
            ).scalar_one()
    except Exception as error:  # noqa: BLE001 - the share is kept; AggregatePopularity repairs the counter
        if is_transient(error):
            raise  # the connection, and the share with it, is gone: the whole transaction is retried
        log.warning("share counter not raised; the aggregation job will repair it", post_id=post_id)
        return (
            await conn.execute(text("SELECT share_count FROM tracking.posts WHERE post_id = :p"), {"p": post_id})
        ).scalar_one()


async def share_stats(conn: AsyncConnection, post_id: str, start: datetime | None, end: datetime | None):
    """(total, [(platform, count)], [(day, platform, count)]) of the post's stored shares in the range."""
    await get_post(conn, post_id)
    rows = (
        await conn.execute(
            text(
                """SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, platform, count(*)
                FROM tracking.shares WHERE post_id = :post_id
                AND created_at >= COALESCE(CAST(:start AS timestamptz), '-infinity')
                AND created_at < COALESCE(CAST(:end AS timestamptz), 'infinity')
                GROUP BY 1, 2 ORDER BY 1, 2"""
            ),
            {"post_id": post_id, "start": start, "end": end},
        )
    ).all()
    by_platform: dict[int, int] = {}
    for _, platform, count in rows:
        by_platform[platform] = by_platform.get(platform, 0) + count
    return sum(by_platform.values()), sorted(by_platform.items()), [tuple(r) for r in rows]


async def rate_limit_stats(conn: AsyncConnection, start: datetime | None, end: datetime | None):
    """[(day, rejected, accepted)] of share attempts per UTC day."""
    rows = await conn.execute(
        text(
            """WITH rejected AS (
                SELECT day, sum(rejected) AS n FROM tracking.share_rejections
                WHERE day >= COALESCE(CAST(:start AS timestamptz) AT TIME ZONE 'UTC', '-infinity')::date
                  AND day <= COALESCE(CAST(:end AS timestamptz) AT TIME ZONE 'UTC', 'infinity')::date
                GROUP BY day
            ), accepted AS (
                SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM tracking.shares
                WHERE created_at >= COALESCE(CAST(:start AS timestamptz), '-infinity')
                  AND created_at < COALESCE(CAST(:end AS timestamptz), 'infinity')
                GROUP BY 1
            )
            SELECT to_char(day, 'YYYY-MM-DD'), COALESCE(rejected.n, 0), COALESCE(accepted.n, 0)
            FROM rejected FULL JOIN accepted USING (day) ORDER BY day"""
        ),
        {"start": start, "end": end},
    )
    return [(day, int(rejected), int(accepted)) for day, rejected, accepted in rows]


# ---------------------------------------------------------------------------- analytics

# The analytics rollups cover events before the last aggregation's as_of: whole hours
# (and days) before it come from them, later events from the raw table.
ROLLUP_BOUNDARY = """SELECT COALESCE(date_trunc('hour', max(aggregated_through), 'UTC'), '-infinity') AS until_hour,
    COALESCE(date_trunc('day', max(aggregated_through), 'UTC'), '-infinity') AS until_day FROM tracking.aggregation_state"""
# Bit n of a session's funnel steps: it reached domain.FUNNEL[n] (over raw events aliased i).
FUNNEL_STEP_BIT = "CASE i.type " + " ".join(f"WHEN {t} THEN {1 << n}" for n, t in enumerate(FUNNEL)) + " ELSE 0 END"


async def engagement_summary(conn: AsyncConnection, start: datetime | None, end: datetime | None):
    """({type: count}, authenticated, unique sessions) from the hourly counters (whole hours)."""
    rows = (
        await conn.execute(
            text(
                """SELECT type, sum(events), sum(authenticated) FROM tracking.engagement_hourly
                WHERE hour >= date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC')
                  AND hour < COALESCE(CAST(:end AS timestamptz), 'infinity')
                GROUP BY type ORDER BY type"""
            ),
            {"start": start, "end": end},
        )
    ).all()
    sessions = (
        await conn.execute(
            text(
                f"""WITH bound AS ({ROLLUP_BOUNDARY}), span AS (
                    SELECT date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC') AS first_hour,
                           COALESCE(CAST(:end AS timestamptz), 'infinity') AS stop
                )
                SELECT count(*) FROM (
                    SELECT session_id FROM tracking.session_hours, bound, span
                    WHERE hour >= first_hour AND hour < stop AND hour < until_hour
                    UNION
                    SELECT session_id FROM tracking.interactions, bound, span
                    WHERE occurred_at >= greatest(first_hour, until_hour) AND occurred_at < stop
                ) sessions"""
            ),
            {"start": start, "end": end},
        )
    ).scalar_one()
    return {t: int(n) for t, n, _ in rows}, sum(int(a) for _, _, a in rows), int(sessions)


async def engagement_trend(conn: AsyncConnection, start: datetime | None, end: datetime | None, unit: str, type_: int | None):
    """[(period_start, type, events, authenticated)] by UTC day or ISO week."""
    rows = await conn.execute(
        text(
            """SELECT date_trunc(:unit, hour, 'UTC') AS period, type, sum(events), sum(authenticated)
            FROM tracking.engagement_hourly
            WHERE hour >= date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC')
              AND hour < COALESCE(CAST(:end AS timestamptz), 'infinity')
              AND (CAST(:type AS smallint) IS NULL OR type = :type)
            GROUP BY 1, 2 ORDER BY 1, 2"""
        ),
        {"unit": unit, "start": start, "end": end, "type": type_},
    )
    return [(period, t, int(n), int(a)) for period, t, n, a in rows]


async def funnel(conn: AsyncConnection, product_id: str, start, end) -> list[int]:
    """Sessions that reached each step of the product's funnel (domain.FUNNEL), having reached
    every earlier step; whole hours, from the hourly funnel rollup plus the newer raw events."""
    reached = ", ".join(f"count(*) FILTER (WHERE steps & {(2 << n) - 1} = {(2 << n) - 1})" for n in range(len(FUNNEL)))
    row = (
        await conn.execute(
            text(
                f"""WITH bound AS ({ROLLUP_BOUNDARY}), span AS (
                    SELECT date_trunc('hour', COALESCE(CAST(:start AS timestamptz), '-infinity'), 'UTC') AS first_hour,
                           COALESCE(CAST(:end AS timestamptz), 'infinity') AS stop
                ), steps AS (
                    SELECT session_id, steps FROM tracking.funnel_steps, bound, span
                    WHERE product_id = :product_id AND hour >= first_hour AND hour < stop AND hour < until_hour
                    UNION ALL
                    SELECT session_id, {FUNNEL_STEP_BIT} FROM tracking.interactions i, bound, span
                    WHERE product_id = :product_id AND type IN ({", ".join(str(t) for t in FUNNEL)})
                      AND occurred_at >= greatest(first_hour, until_hour) AND occurred_at < stop
                ), sessions AS (
                    SELECT bit_or(steps) AS steps FROM steps GROUP BY session_id
                ) SELECT {reached} FROM sessions"""
            ),
            {"product_id": product_id, "start": start, "end": end},
        )
    ).one()
    return [int(n) for n in row]


async def top_products(conn: AsyncConnection, user_id: str | None, limit: int, start, end) -> list[tuple[str, int]]:
    """Most-used products over whole UTC days: overall from the daily product rollup, or one
    user's (their events, else their session's attributed user) from the daily per-person
    rollup plus the raw events after it."""
    if user_id:
        sql = f"""WITH bound AS ({ROLLUP_BOUNDARY}), span AS (
                SELECT COALESCE(CAST(:start AS timestamptz) AT TIME ZONE 'UTC', '-infinity')::date AS first_day,
                       COALESCE(CAST(:end AS timestamptz) AT TIME ZONE 'UTC', 'infinity')::date AS last_day
            )
            SELECT product_id, sum(n) AS n FROM (
                SELECT product_id, events AS n FROM tracking.user_products_daily, bound, span
                WHERE user_id = :user_id AND day >= first_day AND day <= last_day
                  AND day < (until_day AT TIME ZONE 'UTC')::date
                UNION ALL
                SELECT i.product_id, 1 FROM tracking.interactions i
                LEFT JOIN tracking.session_users su USING (session_id), bound, span
                WHERE COALESCE(i.user_id, su.user_id) = :user_id AND i.occurred_at >= until_day
                  AND (i.occurred_at AT TIME ZONE 'UTC')::date BETWEEN first_day AND last_day
            ) used GROUP BY product_id ORDER BY n DESC, product_id LIMIT :limit"""
    else:
        sql = """SELECT product_id, sum(events) AS n FROM tracking.product_daily
            WHERE day >= COALESCE(CAST(:start AS timestamptz) AT TIME ZONE 'UTC', '-infinity')::date
              AND day <= COALESCE(CAST(:end AS timestamptz) AT TIME ZONE 'UTC', 'infinity')::date
            GROUP BY product_id ORDER BY n DESC, product_id LIMIT :limit"""
    rows = await conn.execute(text(sql), {"user_id": user_id, "limit": limit, "start": start, "end": end})
    return [(p, int(n)) for p, n in rows]


@dataclass(frozen=True)
class PopularityRow:
    product_id: str
    count_7d: int
    count_30d: int
    score: float
    compute_time: datetime | None
    paired: list[tuple[str, float, int]]


async def popularity(conn: AsyncConnection, product_id: str, paired_limit: int) -> PopularityRow | None:
    row = (
        await conn.execute(
            text("SELECT count_7d, count_30d, score, compute_time FROM tracking.product_popularity WHERE product_id = :p"),
            {"p": product_id},
        )
    ).first()
    if row is None:
        return None
    paired = await conn.execute(
        text(
            """SELECT paired_product_id, percentage, together FROM tracking.product_pairs WHERE product_id = :p
            ORDER BY together DESC, paired_product_id LIMIT :limit"""
        ),
        {"p": product_id, "limit": paired_limit},
    )
    return PopularityRow(product_id, row[0], row[1], row[2], row[3], [tuple(r) for r in paired])


async def recommendations(conn: AsyncConnection, user_id: str | None, session_id: str | None, limit: int):
    """[(product, score, because)]: products paired with the actor's own products (a user's
    include their attributed sessions) that they have not used yet, best pairing first;
    popular products (because None) fill up the list."""
    own = dict(
        (
            await conn.execute(
                text(
                    """SELECT product_id, count(*) FROM tracking.interactions
                    WHERE (CAST(:user_id AS text) IS NOT NULL AND (user_id = :user_id OR session_id IN
                              (SELECT session_id FROM tracking.session_users WHERE user_id = :user_id)))
                       OR (CAST(:session_id AS text) IS NOT NULL AND session_id = :session_id)
                    GROUP BY product_id"""
                ),
                {"user_id": user_id, "session_id": session_id},
            )
        ).all()
    )
    rows = await conn.execute(
        text(
            """SELECT product_id, percentage, because FROM (
                SELECT DISTINCT ON (p.paired_product_id) p.paired_product_id AS product_id, p.percentage,
                       p.product_id AS because
                FROM tracking.product_pairs p
                JOIN unnest(CAST(:own AS text[]), CAST(:uses AS bigint[])) AS own(product_id, uses)
                  ON p.product_id = own.product_id
                WHERE p.paired_product_id <> ALL(:own)
                ORDER BY p.paired_product_id, p.percentage DESC, own.uses DESC, p.product_id
            ) candidates ORDER BY percentage DESC, product_id LIMIT :limit"""
        ),
        {"own": list(own), "uses": list(own.values()), "limit": limit},
    )
    picked = [(p, pct, because) for p, pct, because in rows]
    if len(picked) < limit:
        taken = list(own) + [p for p, _, _ in picked]
        popular = await conn.execute(
            text(
                """SELECT product_id, score FROM tracking.product_popularity
                WHERE product_id <> ALL(:taken) AND score > 0 ORDER BY score DESC, product_id LIMIT :limit"""
            ),
            {"taken": taken, "limit": limit - len(picked)},
        )
        picked += [(p, score, None) for p, score in popular]
    return picked


# ---------------------------------------------------------------------------- aggregation and retention

AGGREGATION_LOCK = (0x54524B41, 1)  # "TRKA": one aggregation at a time across replicas


@dataclass(frozen=True)
class AggregationResult:
    scanned: int
    products: int
    pairs: int
    repaired: int


# Co-occurrence works on integer codes of the distinct (person, product) pairs of the last
# 30 days: the self-join, its grouping and the ranking handle small integers, not text.
# Product codes follow the product ids' order, so ranking ties break as by id.
PAIR_STAGING = (
    """CREATE TEMP TABLE product_codes ON COMMIT DROP AS
    SELECT product_id, row_number() OVER (ORDER BY product_id) AS product FROM (
        SELECT DISTINCT product_id FROM tracking.product_daily
        WHERE day > CAST(:as_of_day AS date) - 30 AND day <= :as_of_day
    ) p""",
    """CREATE TEMP TABLE used ON COMMIT DROP AS
    SELECT dense_rank() OVER (ORDER BY u.actor COLLATE "C") AS actor, p.product FROM (
        SELECT DISTINCT actor, product_id FROM tracking.actor_products_daily
        WHERE day > CAST(:as_of_day AS date) - 30 AND day <= :as_of_day
    ) u JOIN product_codes p USING (product_id)""",
    "ANALYZE used",
    "ANALYZE product_codes",
)
RANK_PAIRS = """
WITH half AS (  -- "together" is symmetric: count each unordered pair once, then use it both ways
    SELECT a.product AS low, b.product AS high, count(*) AS n
    FROM used a JOIN used b ON a.actor = b.actor AND a.product < b.product
    GROUP BY 1, 2
), together AS (
    SELECT low AS product, high AS paired, n FROM half
    UNION ALL
    SELECT high, low, n FROM half
), ranked AS (
    SELECT product, paired, n, row_number() OVER (PARTITION BY product ORDER BY n DESC, paired) AS rank FROM together
), people AS (
    SELECT product, count(*) AS n FROM used GROUP BY product
)
INSERT INTO tracking.product_pairs (product_id, paired_product_id, together, percentage)
SELECT named.product_id, paired.product_id, ranked.n, round(100.0 * ranked.n / people.n, 2)
FROM ranked JOIN people USING (product)
JOIN product_codes named ON named.product = ranked.product
JOIN product_codes paired ON paired.product = ranked.paired
WHERE rank <= :k
"""


async def _pair_products(conn: AsyncConnection, params: dict, pairs_per_product: int) -> int:
    """Stores each product's top pairings: X->Y with 100 x (people who used X and Y) / (people who used X)."""
    for statement in PAIR_STAGING:
        await conn.execute(text(statement), params)
    return (await conn.execute(text(RANK_PAIRS), {"k": pairs_per_product})).rowcount


async def aggregate(conn: AsyncConnection, as_of: datetime, recompute: timedelta, pairs_per_product: int) -> AggregationResult:
    """Rebuilds the rollups of the days that can still change, then the scores and pairs.

    Incremental: only days from (last run - recompute horizon) on are re-derived from raw
    events; older days keep their rollups even after the raw events are purged. The
    rollups (per day: product events, a signed-in person's product events; per hour:
    sessions, funnel steps) also serve the analytics queries, which add the raw events after
    aggregated_through (see analytics_boundary).
    Idempotent: the same as_of over the same events yields the same tables.

    Score (0-100): w = 2 x count_7d + count_30d, score = 100 x w / max w, rounded to 2 places.
    Pair X->Y: percentage = 100 x (people who used X and Y) / (people who used X) over 30 days,
    a person being the (attributed) user, else the session.
    """
    await conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": AGGREGATION_LOCK[0], "b": AGGREGATION_LOCK[1]})
    await tune_for_bulk(conn)
    previous = (await conn.execute(text("SELECT aggregated_through FROM tracking.aggregation_state"))).scalar()
    if previous is None:
        oldest = (await conn.execute(text("SELECT min(occurred_at) FROM tracking.interactions"))).scalar()
        first_day = (oldest or as_of).astimezone(UTC).date()
    else:
        first_day = (min(previous, as_of) - recompute).astimezone(UTC).date()
    as_of_day = as_of.astimezone(UTC).date()
    first_instant = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    params = {"first_day": first_day, "first_instant": first_instant, "as_of": as_of, "as_of_day": as_of_day}
    for rollup in ("product_daily WHERE day", "actor_products_daily WHERE day", "user_products_daily WHERE day"):
        await conn.execute(text(f"DELETE FROM tracking.{rollup} >= :first_day"), params)
    for rollup in ("session_hours WHERE hour", "funnel_steps WHERE hour"):
        await conn.execute(text(f"DELETE FROM tracking.{rollup} >= :first_instant"), params)
    # One pass over the raw events of the hours that can still change: events and funnel
    # steps per hour, product, session and person, from which every rollup is derived.
    await conn.execute(
        text(
            f"""CREATE TEMP TABLE recent ON COMMIT DROP AS
            SELECT date_trunc('hour', i.occurred_at, 'UTC') AS hour, i.product_id, i.session_id,
                   COALESCE('u:' || COALESCE(i.user_id, su.user_id), 's:' || i.session_id) AS actor,
                   count(*) AS events, bit_or({FUNNEL_STEP_BIT})::smallint AS steps
            FROM tracking.interactions i LEFT JOIN tracking.session_users su USING (session_id)
            WHERE i.occurred_at >= :first_instant AND i.occurred_at < :as_of
            GROUP BY 1, 2, 3, 4"""
        ),
        params,
    )
    await conn.execute(text("ANALYZE recent"))  # the planner picks hash aggregation once it knows the size
    scanned = (await conn.execute(text("SELECT COALESCE(sum(events), 0) FROM recent"))).scalar_one()
    for statement in (
        """INSERT INTO tracking.product_daily SELECT (hour AT TIME ZONE 'UTC')::date, product_id, sum(events)
        FROM recent GROUP BY 1, 2""",
        "INSERT INTO tracking.actor_products_daily SELECT DISTINCT (hour AT TIME ZONE 'UTC')::date, actor, product_id FROM recent",
        """INSERT INTO tracking.user_products_daily SELECT (hour AT TIME ZONE 'UTC')::date, substr(actor, 3), product_id,
        sum(events) FROM recent WHERE actor LIKE 'u:%' GROUP BY 1, 2, 3""",
        "INSERT INTO tracking.session_hours SELECT DISTINCT hour, session_id FROM recent",
        """INSERT INTO tracking.funnel_steps SELECT hour, product_id, session_id, bit_or(steps) FROM recent
        WHERE steps <> 0 GROUP BY 1, 2, 3""",
    ):
        await conn.execute(text(statement))
    await conn.execute(text("DELETE FROM tracking.product_popularity"))
    products = (
        await conn.execute(
            text(
                """INSERT INTO tracking.product_popularity (product_id, count_7d, count_30d, score, compute_time)
                SELECT product_id, c7, c30,
                       CASE WHEN max(2 * c7 + c30) OVER () > 0
                            THEN round(100.0 * (2 * c7 + c30) / max(2 * c7 + c30) OVER (), 2) ELSE 0 END,
                       :as_of
                FROM (
                    SELECT product_id,
                           COALESCE(sum(events) FILTER (WHERE day > CAST(:as_of_day AS date) - 7 AND day <= :as_of_day), 0) AS c7,
                           COALESCE(sum(events) FILTER (WHERE day > CAST(:as_of_day AS date) - 30 AND day <= :as_of_day), 0) AS c30
                    FROM tracking.product_daily GROUP BY product_id
                ) counts"""
            ),
            params,
        )
    ).rowcount
    await conn.execute(text("DELETE FROM tracking.product_pairs"))
    pairs = await _pair_products(conn, params, pairs_per_product)
    await conn.execute(
        text(
            """INSERT INTO tracking.aggregation_state (id, aggregated_through) VALUES (true, :as_of)
            ON CONFLICT (id) DO UPDATE SET aggregated_through = EXCLUDED.aggregated_through"""
        ),
        params,
    )
    repaired = await repair_share_counts(conn)
    return AggregationResult(int(scanned), int(products), int(pairs), repaired)


async def repair_share_counts(conn: AsyncConnection) -> int:
    """Sets every post's share_count to its stored (plus purged) shares.

    The posts are locked first, so each following statement sees every share whose
    counter update had already happened, and later shares add to the repaired value.
    """
    await conn.execute(text("SELECT post_id FROM tracking.posts ORDER BY post_id FOR NO KEY UPDATE"))
    return (
        await conn.execute(
            text(
                """WITH actual AS (
                    SELECT p.post_id, p.purged_shares + COALESCE(s.n, 0) AS n FROM tracking.posts p
                    LEFT JOIN (SELECT post_id, count(*) AS n FROM tracking.shares GROUP BY post_id) s USING (post_id)
                )
                UPDATE tracking.posts p SET share_count = actual.n FROM actual
                WHERE p.post_id = actual.post_id AND p.share_count <> actual.n"""
            )
        )
    ).rowcount


async def purge(conn: AsyncConnection, cutoff: datetime, dedup_window: timedelta, now: datetime) -> tuple[int, int, int]:
    """Deletes raw interactions, shares (folded into purged_shares) and rejection records before cutoff."""
    interactions = (
        await conn.execute(text("DELETE FROM tracking.interactions WHERE occurred_at < :cutoff"), {"cutoff": cutoff})
    ).rowcount
    shares = (
        await conn.execute(
            text(
                """WITH gone AS (DELETE FROM tracking.shares WHERE created_at < :cutoff RETURNING post_id),
                per_post AS (SELECT post_id, count(*) AS n FROM gone GROUP BY post_id),
                folded AS (UPDATE tracking.posts p SET purged_shares = p.purged_shares + per_post.n
                           FROM per_post WHERE p.post_id = per_post.post_id)
                SELECT COALESCE(sum(n), 0) FROM per_post"""
            ),
            {"cutoff": cutoff},
        )
    ).scalar_one()
    rejections = (
        await conn.execute(
            text("DELETE FROM tracking.share_rejections WHERE day < CAST(:cutoff AS timestamptz)::date"), {"cutoff": cutoff}
        )
    ).rowcount
    # Closed de-duplication windows decide nothing any more.
    await conn.execute(
        text("DELETE FROM tracking.dedup_windows WHERE window_start < :closed"), {"closed": now - dedup_window}
    )
    return int(interactions), int(shares), int(rejections)
