"""Monthly partitions of raw interactions and shares: routing, creation ahead, retention by
dropping months, the idempotency keys that outlive them, and partition pruning.

Tests work on months long past (2021) so that the current months, which the running
service writes to, stay out of their way; each starts from a schema holding only the
current and next months' partitions and empty default partitions.
"""

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text

from libs.db import make_engine, run_in_transaction
from libs.domain_errors import Unavailable
from libs.scratch_db import plain_url
from services.tracking.domain import Event
from services.tracking.store import partitions, retention
from services.tracking.store.aggregation import RECENT_EVENTS
from services.tracking.store.interactions import InteractionWriter
from services.tracking.store.partitions import INTERACTIONS, SHARES, months_ahead
from tests.support import serve

WINDOW = timedelta(minutes=30)


@pytest.fixture(scope="module")
async def engine(tracking_db):
    engine = make_engine(tracking_db, application_name="test-partitions", pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def writer(tracking_db):
    writer = InteractionWriter(tracking_db, WINDOW)
    yield writer
    await writer.close()


@pytest.fixture(autouse=True)
def only_the_months_ahead(tracking_db):
    """Drops every month partition but the current and next ones; empties the default partitions."""
    keep = {partitions.partition_name(t, m) for t in (INTERACTIONS, SHARES) for m in months_ahead(datetime.now(UTC))}
    with psycopg.connect(plain_url(tracking_db), autocommit=True) as conn:
        for table in ("interactions", "shares"):
            names = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass AND c.relname ~ '_\\d{4}_\\d{2}$'", (f"tracking.{table}",)
            ).fetchall()
            for (name,) in names:
                if name not in keep:
                    conn.execute(f"DROP TABLE tracking.{name}")
            conn.execute(f"TRUNCATE tracking.{table}_default")


def at(year: int, month: int, day: int = 1, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def event(occurred_at: datetime, *, session: str | None = None, client_event_id: str | None = None) -> Event:
    return Event(
        str(uuid.uuid4()), occurred_at, 1, "p1", session or f"s-{uuid.uuid4().hex[:8]}", None, None, client_event_id,
        None, None, None, None, None, "desktop", b"\x01" * 16,
    )


async def store_at(engine, *moments: datetime) -> None:
    """Raw interactions at these times, inserted as a backfill would."""
    async with engine.begin() as conn:
        for moment in moments:
            await conn.execute(
                text("INSERT INTO tracking.interactions (id, occurred_at, type, product_id, session_id)"
                     " VALUES (gen_random_uuid(), :t, 1, 'p1', 's1')"),
                {"t": moment},
            )


async def where_rows_are(engine) -> dict[str, int]:
    """Rows per partition of tracking.interactions."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tableoid::regclass::text, count(*) FROM tracking.interactions GROUP BY 1"))
        return dict(rows.all())


async def create_months(engine, *months: date) -> None:
    async def work(conn):
        await partitions.lock(conn)
        for month in months:
            for table in (INTERACTIONS, SHARES):
                await partitions.create_month(conn, table, month)

    await run_in_transaction(engine, work)


async def purge(engine, cutoff: datetime, *, whole_months: bool = False):
    now = datetime.now(UTC)
    return await run_in_transaction(
        engine, lambda conn: retention.purge(conn, cutoff, WINDOW, now, whole_months=whole_months)
    )


async def test_an_event_no_month_partition_covers_is_stored_in_the_default_partition(engine):
    await store_at(engine, at(2021, 3, 9))
    assert await where_rows_are(engine) == {"tracking.interactions_default": 1}


async def test_creating_a_month_moves_its_rows_out_of_the_default_partition(engine):
    await store_at(engine, at(2021, 3, 1), at(2021, 3, 31, 23, 59), at(2021, 4, 1))
    await create_months(engine, date(2021, 3, 1))
    assert await where_rows_are(engine) == {"tracking.interactions_2021_03": 2, "tracking.interactions_default": 1}


async def test_the_service_creates_the_current_and_next_months_at_startup(engine, tracking_db):
    ahead = {partitions.partition_name(t, m) for t in (INTERACTIONS, SHARES) for m in months_ahead(datetime.now(UTC))}
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE " + ", ".join(f"tracking.{name}" for name in ahead)))
    async with serve("tracking", tracking_db):
        with psycopg.connect(plain_url(tracking_db)) as conn:
            found = {
                name for (name,) in conn.execute(
                    "SELECT relname FROM pg_class WHERE relnamespace = 'tracking'::regnamespace"
                    " AND relname ~ '_\\d{4}_\\d{2}$'"
                )
            }
    assert found == ahead


async def test_purge_creates_next_months_partition_when_it_is_missing(engine):
    next_month = months_ahead(datetime.now(UTC))[1]
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE tracking.{partitions.partition_name(INTERACTIONS, next_month)}"))
    await purge(engine, at(2000, 1))
    async with engine.connect() as conn:
        assert next_month in await partitions.months(conn, INTERACTIONS)


async def test_purge_drops_expired_months_and_deletes_only_the_expired_rows_of_the_boundary_month(engine):
    await create_months(engine, date(2021, 1, 1), date(2021, 2, 1))
    await store_at(engine, at(2021, 1, 5), at(2021, 1, 31, 23), at(2021, 2, 14, 23), at(2021, 2, 15, 1), at(2021, 2, 20))
    purged = await purge(engine, at(2021, 2, 15))
    assert purged.interactions == 3
    async with engine.connect() as conn:
        assert date(2021, 1, 1) not in await partitions.months(conn, INTERACTIONS)  # dropped, not emptied
    assert await where_rows_are(engine) == {"tracking.interactions_2021_02": 2}


async def test_purge_deletes_expired_rows_of_the_default_partition(engine):
    await store_at(engine, at(2020, 6, 1), at(2021, 6, 1))
    purged = await purge(engine, at(2021, 2, 15))
    assert purged.interactions == 1
    assert await where_rows_are(engine) == {"tracking.interactions_default": 1}


async def test_whole_month_retention_keeps_the_boundary_month_until_it_expires_entirely(engine):
    await create_months(engine, date(2021, 1, 1), date(2021, 2, 1))
    await store_at(engine, at(2021, 1, 5), at(2021, 2, 14))
    purged = await purge(engine, at(2021, 2, 15), whole_months=True)
    assert purged.interactions == 1
    assert await where_rows_are(engine) == {"tracking.interactions_2021_02": 1}


async def test_purged_shares_of_a_dropped_month_still_count_in_the_posts_share_count(engine):
    post = f"post-{uuid.uuid4().hex[:8]}"
    await create_months(engine, date(2021, 1, 1))
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO tracking.posts (post_id, title, url, published, share_count) VALUES (:p, 't', 'u', true, 3)"),
            {"p": post},
        )
        for moment in (at(2021, 1, 3), at(2021, 1, 4), at(2021, 2, 20)):
            await conn.execute(
                text("INSERT INTO tracking.shares (id, post_id, platform, ip_hash, created_at)"
                     " VALUES (gen_random_uuid(), :p, 1, '\\x01', :t)"),
                {"p": post, "t": moment},
            )
    purged = await purge(engine, at(2021, 3, 1))
    assert purged.shares == 3  # two in the dropped January, one deleted from the default partition
    async with engine.connect() as conn:
        folded = await conn.execute(text("SELECT purged_shares FROM tracking.posts WHERE post_id = :p"), {"p": post})
        assert folded.one() == (3,)


async def test_a_client_event_id_stays_idempotent_after_its_month_is_dropped(engine, writer):
    await create_months(engine, date(2021, 5, 1))
    client_id = f"c-{uuid.uuid4().hex}"
    [first] = await writer.store([event(at(2021, 5, 10), client_event_id=client_id)])
    await purge(engine, at(2021, 6, 1))
    [replay] = await writer.store([event(datetime.now(UTC), client_event_id=client_id)])
    assert replay.duplicate and replay.interaction_id == first.interaction_id


async def test_a_dedup_window_spans_a_month_boundary(engine, writer):
    await create_months(engine, date(2021, 7, 1), date(2021, 8, 1))
    session = f"s-{uuid.uuid4().hex[:8]}"
    [first] = await writer.store([event(at(2021, 7, 31, 23, 50), session=session)])
    [second] = await writer.store([event(at(2021, 8, 1, 0, 10), session=session)])
    assert second.duplicate and second.interaction_id == first.interaction_id
    assert await where_rows_are(engine) == {"tracking.interactions_2021_07": 1}


async def test_a_purge_that_cannot_lock_the_partitions_fails_as_unavailable_instead_of_waiting(engine, tracking_db):
    await create_months(engine, date(2021, 1, 1))
    with psycopg.connect(plain_url(tracking_db)) as reader:  # a long read, as an aggregation is
        reader.execute("SELECT count(*) FROM tracking.interactions")
        with pytest.raises(Unavailable):
            await purge(engine, at(2021, 2, 15))
    async with engine.connect() as conn:
        assert date(2021, 1, 1) in await partitions.months(conn, INTERACTIONS)


async def test_the_aggregation_reads_only_the_months_it_covers(engine):
    await create_months(engine, date(2021, 1, 1), date(2021, 2, 1), date(2021, 3, 1))
    span = {"first_instant": at(2021, 2, 10), "as_of": at(2021, 2, 11, 3)}
    async with engine.connect() as conn:
        plan = "\n".join(line for (line,) in await conn.execute(text(f"EXPLAIN {RECENT_EVENTS}"), span))
    scanned = set(re.findall(r" on (interactions_(?:\d{4}_\d{2}|default))\b", plan))
    assert scanned == {"interactions_2021_02"}
