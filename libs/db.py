"""PostgreSQL access: the embedded server, async engines and retried transactions.

There is one SQL dialect everywhere: a real PostgreSQL. `DATABASE_URL` names
one; without it an embedded server (pgserver) runs from the data dir.
"""

from __future__ import annotations

import contextvars
import logging
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from libs import causation, tracing
from libs.errors import DomainError

T = TypeVar("T")
EMBEDDED_MAX_CONNECTIONS = 400
# The initdb defaults (100 connections, 128 MB buffers) are too small for four services'
# pools plus the tests, and for bulk jobs over a million rows (Orchestrate at 1M batches
# ran 25% faster with 1 GB than with 256 MB of buffers).
EMBEDDED_SETTINGS = {"max_connections": str(EMBEDDED_MAX_CONNECTIONS), "shared_buffers": "1GB"}

# serialization_failure, deadlock_detected, admin/crash shutdown, cannot_connect_now,
# and every connection exception (class 08).
TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03"}


def embedded_server_url(data_dir: Path) -> str:
    """Starts (or joins) the embedded PostgreSQL under data_dir and returns its URL.

    The server stops when the last process that joined it exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    tuned = pgdata / "loom-tuned"
    wanted = "".join(f"{name} = '{value}'\n" for name, value in sorted(EMBEDDED_SETTINGS.items()))
    if not tuned.exists() or tuned.read_text() != wanted:
        for name, value in EMBEDDED_SETTINGS.items():
            server.psql(f"ALTER SYSTEM SET {name} = '{value}';")
        server.cleanup()  # they apply from a restart
        tuned.write_text(wanted)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    socket_dir = server.get_postmaster_info().socket_dir
    return f"postgresql+psycopg://postgres@/postgres?host={quote(str(socket_dir))}"


def async_url(url: str) -> str:
    """The SQLAlchemy URL with the psycopg 3 driver, whatever scheme was given."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+asyncpg"):
        return f"postgresql+psycopg://{rest}"
    raise ValueError(f"only PostgreSQL is supported, not {scheme!r}")


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"


def driver_options(*, prepared_statements: bool = True) -> dict[str, Any]:
    """psycopg connection options. Without prepared statements (behind a transaction-mode
    pooler such as PgBouncer before 1.21, where the next transaction may run on another
    server connection that never saw the PREPARE) the driver prepares nothing, even where
    a statement asks to be prepared."""
    return {} if prepared_statements else {"prepare_threshold": None}


def make_engine(
    url: str,
    *,
    application_name: str,
    pool_size: int = 10,
    max_overflow: int = 10,
    prepared_statements: bool = True,
) -> AsyncEngine:
    """An engine whose pool holds pool_size connections and opens up to max_overflow more
    under load: pool_size + max_overflow is what it may hold of the server's max_connections
    (libs/connection_budget.py adds up a whole deployment)."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"application_name": application_name, **driver_options(prepared_statements=prepared_statements)},
    )


def is_transient(error: BaseException) -> bool:
    """A failure that a fresh attempt of the same transaction may not meet again."""
    if isinstance(error, DomainError):
        return False
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    # psycopg's own errors come from statements sent to the driver directly (hot paths).
    if isinstance(error, sa_exc.DBAPIError | psycopg.Error):
        original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        sqlstate = getattr(original, "sqlstate", None) or ""
        return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08") or (
            not sqlstate
            and isinstance(
                error, sa_exc.OperationalError | sa_exc.InterfaceError | psycopg.OperationalError | psycopg.InterfaceError
            )
        )
    return isinstance(error, ConnectionError | OSError)


def transaction_attempts(attempts: int) -> AsyncRetrying:
    """Attempts at a whole transaction: retried on transient errors, after short, growing,
    jittered waits; the last error is raised as it is."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.02, max=2.0),
        reraise=True,
    )


async def tune_for_bulk(conn: AsyncConnection) -> None:
    """For the rest of this transaction of a bulk job (Orchestrate, aggregation): no JIT (its
    compile time, ~0.7 s per statement, dwarfs the work at these sizes) and memory to sort and
    hash hundreds of thousands of rows without spilling to disk."""
    await conn.execute(text("SELECT set_config('jit', 'off', true), set_config('work_mem', '256MB', true)"))


async def run_in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *, attempts: int = 6
) -> T:
    """Runs work(conn) in one transaction, retrying the whole transaction on transient errors.

    Domain errors and anything else propagate at once (after rollback). What work
    registered with `after_commit` runs once, after the attempt that committed.
    """
    async for attempt in transaction_attempts(attempts):
        with attempt:
            callbacks: list[Callable[[], None]] = []
            token = _after_commit.set(callbacks)
            try:
                async with engine.begin() as conn:
                    result = await work(conn)
            finally:
                _after_commit.reset(token)
            for callback in callbacks:
                callback()
            return result
    raise AssertionError("unreachable")  # pragma: no cover


async def carry_trace(conn: AsyncConnection) -> None:
    """Makes the current span's traceparent and the call's causation chain (libs.causation)
    visible to SQL for the rest of the transaction (outbox rows default to them, so the
    work their events cause later links back here, and the rules service sees which rule
    executions caused them). One more statement per transaction while tracing or when the
    call carries a chain: only transactions that may write events call it, not reads."""
    traceparent, chain = tracing.current_traceparent(), causation.current()
    if traceparent or chain:
        await conn.execute(
            text("SELECT set_config('loom.traceparent', :traceparent, true), set_config('loom.causation', :chain, true)"),
            {"traceparent": traceparent, "chain": chain},
        )


# The callbacks of the transaction the running task is in (work runs in the caller's task).
_after_commit: contextvars.ContextVar[list[Callable[[], None]]] = contextvars.ContextVar("loom_after_commit")


def after_commit(callback: Callable[[], None]) -> None:
    """Runs callback once the transaction run_in_transaction is running has committed
    (counting what happened must not count an attempt that rolled back, or a replay)."""
    _after_commit.get().append(callback)
