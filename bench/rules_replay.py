"""Replay over 100k stored events: seconds for ReplayRule to stream every result, against a raw read.

Subject: the ReplayRule RPC of a running rules service (gRPC, streamed) over N stored
events of one hour, a rule that fires on about half of them and live executions of
its current version on those, so every event is evaluated, rendered and compared.
Baseline: one raw SELECT of the same events and the joined executions, read to the
end with psycopg (the I/O floor of any replay). Goal: <= 10 s for 100k.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from google.protobuf import json_format, struct_pb2
from loom.rules.v1 import rules_pb2

from bench.harness import BenchContext, Figure, benchmark, median
from libs.scratch_db import plain_url
from tests.support import auth, serve, stub_for

START = datetime(2024, 3, 1, tzinfo=UTC)

LOAD = """
INSERT INTO rules.events (event_id, type, source, occurred_time, data, evaluated_time)
SELECT 'bench-' || g, 'order.placed', 'batch', %(start)s + g * interval '1 millisecond' * 30,
       jsonb_build_object('order', jsonb_build_object('id', 'o-' || g, 'quantity', g %% 100, 'category', 'caps')), now()
FROM generate_series(1, %(n)s) AS g;
INSERT INTO rules.executions (execution_id, rule_id, rule_version, event_id, event_type, status, actions, finish_time)
SELECT gen_random_uuid(), %(rule)s, 1, event_id, type, 'success',
       jsonb_build_array(jsonb_build_object('index', 0, 'type', 'trigger_workflow', 'status', 'succeeded', 'error', '',
           'attempts', 1, 'duration_ms', 1.0,
           'params', jsonb_build_object('job', 'bench', 'params', jsonb_build_object('order', data->'order'->>'id')))),
       now()
FROM rules.events WHERE event_id LIKE 'bench-%%' AND (data->'order'->>'quantity')::int > 50
"""

RAW = """
SELECT e.*, x.execution_id, x.actions FROM rules.events e
LEFT JOIN rules.executions x ON x.event_id = e.event_id AND x.rule_id = %(rule)s
WHERE e.occurred_time >= %(start)s AND e.occurred_time < %(end)s ORDER BY e.seq
"""


def _load(url: str, n: int, rule_id: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM rules.executions WHERE event_id LIKE 'bench-%'")
        conn.execute("DELETE FROM rules.events WHERE event_id LIKE 'bench-%'")
        with conn.transaction():
            for statement in LOAD.split(";"):
                conn.execute(statement, {"start": START, "n": n, "rule": rule_id})
        conn.execute("VACUUM ANALYZE rules.events, rules.executions")


def _raw_seconds(url: str, rule_id: str) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        conn.execute(RAW, {"rule": rule_id, "start": START, "end": START + timedelta(days=1)}).fetchall()
        return time.perf_counter() - started


@benchmark("rules.replay", figures=("rules.replay.100k",))
async def replay(ctx: BenchContext) -> list[Figure]:
    url = plain_url(ctx.database_url)
    n = ctx.size("BENCH_RULES_REPLAY_EVENTS", full=100_000, quick=10_000)
    admin = auth("admin")
    async with (
        serve("rules", ctx.database_url, client_deadline_seconds=600) as running,
        stub_for("rules", running.target) as stub,
    ):
        rule = rules_pb2.Rule(
            name="bench replay",
            type=rules_pb2.RULE_TYPE_WORKFLOW,
            active=False,  # replayed, never live: the worker leaves the stored events alone
            conditions=json_format.ParseDict({"order_quantity": "> 50"}, struct_pb2.Value()),
            actions=[
                rules_pb2.Action(
                    type=rules_pb2.ACTION_TYPE_TRIGGER_WORKFLOW,
                    params=json_format.ParseDict({"job": "bench", "params": {"order": "{{order.id}}"}}, struct_pb2.Struct()),
                )
            ],
        )
        created = (
            await stub.CreateRule(rules_pb2.CreateRuleRequest(request_id=str(uuid.uuid4()), rule=rule), metadata=admin)
        ).rule
        _load(url, n, created.rule_id)
        request = rules_pb2.ReplayRuleRequest(rule_id=created.rule_id)
        request.start_time.FromDatetime(START)
        request.end_time.FromDatetime(START + timedelta(days=1))
        seconds, baselines = [], []
        for _ in range(ctx.runs):
            baselines.append(_raw_seconds(url, created.rule_id))
            started = time.perf_counter()
            results, summary = 0, None
            async for message in stub.ReplayRule(request, metadata=admin, timeout=600):
                results += len(message.results)
                if message.HasField("summary"):
                    summary = message.summary
            seconds.append(time.perf_counter() - started)
            assert summary is not None and summary.events_scanned == n and summary.same == summary.live_fired == results
    value = median(seconds)
    return [Figure("rules.replay.100k", value, "s", value / median(baselines), "raw SELECT of the events and live executions")]
