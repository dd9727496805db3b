"""The database plumbing: retried transactions, per-service schemas, page tokens."""

import asyncio

import pytest
from sqlalchemy import text

from libs.db import after_commit, make_engine, run_in_transaction
from libs.errors import InvalidArgument, NotFound
from libs.pagination import decode_token, encode_token, page_size
from libs.settings import SERVICE_NAMES


@pytest.fixture(scope="module")
async def engine(database_url):
    engine = make_engine(database_url, application_name="loom-test-db", pool_size=4)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS public.counter (id int PRIMARY KEY, value int NOT NULL)"))
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE public.counter"))
    await engine.dispose()


async def reset_counter(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM public.counter"))
        await conn.execute(text("INSERT INTO public.counter VALUES (1, 0)"))


async def counter_value(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT value FROM public.counter WHERE id = 1"))).scalar_one()


async def test_serialization_failure_is_retried_until_both_increments_land(engine):
    await reset_counter(engine)
    both_read = asyncio.Barrier(2)
    first_committed = asyncio.Event()
    attempts = {"first": 0, "second": 0}

    def increment(name: str):
        async def work(conn):
            attempts[name] += 1
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            value = (await conn.execute(text("SELECT value FROM public.counter WHERE id = 1"))).scalar_one()
            if attempts[name] == 1:
                await both_read.wait()
                if name == "second":
                    await first_committed.wait()
            await conn.execute(text("UPDATE public.counter SET value = :v WHERE id = 1"), {"v": value + 1})

        return work

    async def first():
        await run_in_transaction(engine, increment("first"))
        first_committed.set()

    await asyncio.gather(first(), run_in_transaction(engine, increment("second")))
    assert await counter_value(engine) == 2
    assert attempts == {"first": 1, "second": 2}


async def test_a_connection_dropped_mid_transaction_is_retried_on_a_fresh_one(engine):
    await reset_counter(engine)
    attempts = 0

    async def work(conn):
        nonlocal attempts
        attempts += 1
        await conn.execute(text("UPDATE public.counter SET value = value + 1 WHERE id = 1"))
        if attempts == 1:
            await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    await run_in_transaction(engine, work)
    assert attempts == 2
    assert await counter_value(engine) == 1


async def test_after_commit_runs_once_for_the_attempt_that_committed_and_never_after_a_rollback(engine):
    await reset_counter(engine)
    ran: list[int] = []
    attempts = 0

    async def dropped_once(conn):
        nonlocal attempts
        attempts += 1
        after_commit(lambda attempt=attempts: ran.append(attempt))
        if attempts == 1:
            await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    await run_in_transaction(engine, dropped_once)
    assert ran == [2]

    async def refused(conn):
        after_commit(lambda: ran.append(-1))
        raise NotFound("order", "o-1")

    with pytest.raises(NotFound):
        await run_in_transaction(engine, refused)
    assert ran == [2]


async def test_a_domain_error_is_not_retried_and_its_writes_are_rolled_back(engine):
    await reset_counter(engine)
    attempts = 0

    async def work(conn):
        nonlocal attempts
        attempts += 1
        await conn.execute(text("UPDATE public.counter SET value = 99 WHERE id = 1"))
        raise NotFound("order", "o-1")

    with pytest.raises(NotFound):
        await run_in_transaction(engine, work)
    assert attempts == 1
    assert await counter_value(engine) == 0


async def test_each_service_has_its_own_schema_and_migration_history(engine):
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'")
        )
        schemas = {row.table_schema for row in rows}
    assert schemas == set(SERVICE_NAMES)


def test_a_page_token_round_trips_its_cursor():
    token = encode_token(["2026-11-23T10:00:00Z", "b-1"], scope="batches")
    assert decode_token(token, scope="batches") == ["2026-11-23T10:00:00Z", "b-1"]


def test_an_empty_page_token_means_the_first_page():
    assert decode_token("", scope="batches") is None


def test_a_tampered_page_token_is_invalid_argument():
    token = encode_token(["x", 1], scope="batches")
    with pytest.raises(InvalidArgument):
        decode_token(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], scope="batches")


def test_a_page_token_from_another_query_is_invalid_argument():
    with pytest.raises(InvalidArgument):
        decode_token(encode_token(["x"], scope="orders"), scope="batches")


def test_page_size_defaults_caps_and_rejects_negatives():
    assert page_size(0) == 50
    assert page_size(5000) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)
