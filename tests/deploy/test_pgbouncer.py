"""The suite through PgBouncer with the split docs/deploy.md prescribes: batch, rules and
tracking on a transaction-mode pool (prepared statements off), the schedulers on a
session-mode pool (their advisory locks and LISTEN live across transactions).

Every service reaches PostgreSQL only through PgBouncer; the assertions read the database
directly. The module has its own database (`own_database`, tests/deploy/conftest.py): the
outbox and the rules it holds are its own.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from contextlib import AsyncExitStack

import grpc
import psycopg
import pytest
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2

from libs.bootstrap import RunningService, start
from libs.scratch_db import plain_url
from services.scheduler import wiring as scheduler_wiring
from services.scheduler.leader import Replica
from services.scheduler.store import LEADER_LOCK_NAMESPACE
from tests.batch.conftest import create_supplier, place
from tests.deploy.pgbouncer import PgBouncer
from tests.rules.conftest import ADMIN, action, create, rule_message
from tests.rules.peers import eventually
from tests.support import free_port, from_gateway, settings_for, stub_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TRANSACTION, SESSION, TRANSACTION_ONE = "loom_transaction", "loom_session", "loom_transaction_one"
POOLS = {TRANSACTION: ("transaction", 20), SESSION: ("session", 40), TRANSACTION_ONE: ("transaction", 1)}
ORDERS = 12


@pytest.fixture(scope="module")
def bouncer(own_database):
    running = PgBouncer(own_database, POOLS).start()
    yield running
    running.stop()


def sql(database_url: str, statement: str, *args) -> list[tuple]:
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        cursor = conn.execute(statement, args)
        return cursor.fetchall() if cursor.description else []


async def asql(database_url: str, statement: str, *args) -> list[tuple]:
    """Off the event loop, which the in-process services run on."""
    return await asyncio.to_thread(sql, database_url, statement, *args)


class Suite:
    """The services in-process on ports chosen up front, each told where the others are."""

    def __init__(self, bouncer: PgBouncer, smtp_port: int) -> None:
        self.ports = {name: free_port() for name in ("batch", "rules", "tracking")}
        self.bouncer, self.smtp_port = bouncer, smtp_port
        self.stack = AsyncExitStack()

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def settings(self, name: str, **own):
        # docs/deploy.md: the scheduler holds session state, the others do not.
        if name == "scheduler":
            url, pooled = self.bouncer.url(SESSION), {}
        else:
            url, pooled = self.bouncer.url(TRANSACTION), {"db_prepared_statements": False}
        return settings_for(
            name, url, **{f"{n}_target": self.target(n) for n in self.ports}, client_deadline_seconds=5.0,
            db_pool_size=4, db_max_overflow=4, **pooled, **own,
        )

    async def start(self, name: str, port: int = 0, **own) -> RunningService:
        spec = importlib.import_module(f"services.{name}.wiring").SPEC
        running = await start(spec, self.settings(name, **own), port=port or self.ports.get(name, 0))
        self.stack.push_async_callback(running.stop, 1)
        return running


@pytest.fixture(scope="module")
async def suite(bouncer, smtp):
    suite = Suite(bouncer, smtp.port)
    async with suite.stack:
        await suite.start("rules", smtp_host="127.0.0.1", smtp_port=smtp.port, worker_poll_seconds=0.2)
        await suite.start("batch", outbox_poll_seconds=0.1, outbox_max_backoff_seconds=0.5)
        await suite.start("tracking")
        yield suite


async def test_orders_are_placed_once_and_each_runs_its_rule_once_through_the_transaction_pool(suite, smtp, own_database):
    category = f"bouncer_{uuid.uuid4().hex[:8]}"
    async with stub_for("batch", suite.target("batch")) as batch, stub_for("rules", suite.target("rules")) as rules:
        await create_supplier(batch, category)
        rule = await create(rules, rule_message(
            "mail each order", event_types=["order.placed"], conditions={"order_category": category},
            actions=[action("send_email", recipient="ops@example.com", subject="order {{order.id}}", body="placed")],
        ))
        keys = [uuid.uuid4().hex for _ in range(ORDERS)]
        placed = await asyncio.gather(*(place(batch, category, 5, rid=key) for key in keys))
        replayed = await asyncio.gather(*(place(batch, category, 5, rid=key) for key in keys))
        assert [p.order.order_id for p in replayed] == [p.order.order_id for p in placed]

        async def all_ran() -> list | None:
            listed = await rules.ListExecutions(
                rules_pb2.ListExecutionsRequest(rule_id=rule.rule_id, page_size=100), metadata=ADMIN
            )
            done = [e for e in listed.executions if e.status == rules_pb2.EXECUTION_STATUS_SUCCESS]
            return done if len(done) >= ORDERS else None

        await eventually(all_ran, timeout=30)
    stored = await asql(own_database, "SELECT count(*), sum(quantity) FROM batch.orders WHERE category = %s", category)
    assert stored == [(ORDERS, ORDERS * 5)]
    executions = await asql(
        own_database, "SELECT count(*), count(DISTINCT event_id) FROM rules.executions WHERE rule_id = %s", rule.rule_id
    )
    assert executions == [(ORDERS, ORDERS)], "one execution per order event"
    assert len([m for m in smtp.sink.messages if b"Subject: order " in m.content]) == ORDERS


async def test_tracking_ingests_and_holds_the_share_limit_through_the_transaction_pool(suite, own_database):
    unique = uuid.uuid4().hex[:8]
    async with stub_for("tracking", suite.target("tracking")) as tracking:
        items = [
            tracking_pb2.Interaction(
                client_event_id=f"{unique}-{i}", type=tracking_pb2.INTERACTION_TYPE_VIEW_DETAILS,
                product_id=f"p-{unique}-{i % 5}", session_id=f"s-{unique}-{i}",
            )
            for i in range(40)
        ]
        replies = await asyncio.gather(*(
            tracking.TrackInteractions(tracking_pb2.TrackInteractionsRequest(interactions=items[i:i + 10]))
            for i in range(0, 40, 10)
        ))
        again = await tracking.TrackInteractions(tracking_pb2.TrackInteractionsRequest(interactions=items[:10]))
        assert sum(r.accepted for r in replies) == 40
        assert (again.accepted, again.duplicates) == (0, 10), "a replayed client event id is stored once"
        assert [r.interaction_id for r in again.results] == [r.interaction_id for r in replies[0].results]
        post = await tracking.CreatePost(tracking_pb2.CreatePostRequest(
            request_id=uuid.uuid4().hex, post=tracking_pb2.Post(title="Bounced", url="https://loom.example/b", published=True),
        ), metadata=ADMIN)
        shares = await asyncio.gather(
            *(
                tracking.TrackShare(tracking_pb2.TrackShareRequest(
                    post_id=post.post.post_id, platform=tracking_pb2.SHARE_PLATFORM_LINKEDIN, session_id=f"s-{i}",
                    request_id=uuid.uuid4().hex,
                ), metadata=from_gateway("203.0.113.77"))
                for i in range(14)
            ),
            return_exceptions=True,
        )
    refused = [s for s in shares if isinstance(s, grpc.aio.AioRpcError)]
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED} and len(refused) == 4
    counted = await asql(
        own_database, "SELECT count(*) FROM tracking.interactions WHERE client_event_id LIKE %s", f"{unique}-%"
    )
    assert counted == [(40,)]
    assert await asql(own_database, "SELECT count(*) FROM tracking.shares WHERE post_id = %s", post.post.post_id) == [(10,)]


def leader_lock_holders(database_url: str) -> int:
    return sql(
        database_url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = 0"
        " AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        LEADER_LOCK_NAMESPACE,
    )[0][0]


@pytest.fixture
def replicas(monkeypatch) -> list[Replica]:
    """The scheduler replicas started in the test, to ask which of them leads."""
    started: list[Replica] = []

    class Recorded(Replica):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(scheduler_wiring, "Replica", Recorded)
    return started


async def test_scheduler_leadership_holds_and_passes_on_through_the_session_pool(suite, own_database, replicas):
    first = await suite.start("scheduler", scheduler_leader_poll_seconds=0.2)
    await eventually(lambda: asyncio.to_thread(lambda: leader_lock_holders(own_database) == 1 or None), timeout=10)
    second = await suite.start("scheduler", scheduler_leader_poll_seconds=0.2)
    for _ in range(5):  # on a transaction pool the standby's try-lock could run on the leader's server connection
        await asyncio.sleep(0.3)
        assert [r.leading for r in replicas] == [True, False]
        assert await asyncio.to_thread(leader_lock_holders, own_database) == 1
    async with stub_for("scheduler", second.target) as scheduler:
        run = (await scheduler.RunJobNow(scheduler_pb2.RunJobNowRequest(
            request_id=uuid.uuid4().hex, job_name="purge-batch-data"), metadata=ADMIN)).run

        async def finished():
            got = await scheduler.GetJobRun(scheduler_pb2.GetJobRunRequest(run_id=run.run_id), metadata=ADMIN)
            return got.run if got.run.status == scheduler_pb2.JOB_RUN_STATUS_SUCCEEDED else None

        await eventually(finished, timeout=20)
        await first.stop(grace=0)  # the leader: its client connection ends, DISCARD ALL releases its locks
        await eventually(lambda: asyncio.sleep(0, result=replicas[1].leading or None), timeout=10)
        assert await asyncio.to_thread(leader_lock_holders, own_database) == 1


def test_prepared_statements_break_on_a_transaction_pool_unless_turned_off(bouncer):
    """Why LOOM_DB_PREPARED_STATEMENTS=false: two clients of one server connection both
    prepare psycopg's first statement name, and the second finds it taken (PgBouncer 1.18)."""
    statement = "SELECT %s::int + 1"
    with psycopg.connect(bouncer.url(TRANSACTION_ONE), autocommit=True) as a, psycopg.connect(
        bouncer.url(TRANSACTION_ONE), autocommit=True
    ) as b:
        a.execute(statement, (1,), prepare=True)
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            b.execute(statement, (1,), prepare=True)
    with psycopg.connect(bouncer.url(TRANSACTION_ONE), autocommit=True, prepare_threshold=None) as a, psycopg.connect(
        bouncer.url(TRANSACTION_ONE), autocommit=True, prepare_threshold=None
    ) as b:
        for _ in range(10):
            assert a.execute(statement, (1,), prepare=True).fetchone() == (2,)
            assert b.execute(statement, (2,), prepare=True).fetchone() == (3,)
