"""Evaluating events against the active rules and running what matched.

`RuleEvaluator.process` is the one path every evaluation takes (the background worker,
EvaluateEvent without dry run, ExecuteRules): load the active rules (so an edit or a
toggle applies to the next event), fetch the facts they need once, evaluate, claim
one execution per matched (rule, event) and mark the event evaluated in one
transaction, then run the claimed executions' actions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from google.protobuf import timestamp_pb2
from loom.batch.v1 import batch_pb2
from loom.tracking.v1 import tracking_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import tracing
from libs.clients import ServiceClients
from libs.db import run_in_transaction
from libs.leases import LeaseKeeper
from libs.tasks import wait_for_event
from services.rules import metrics, store
from services.rules.actions import TRANSIENT_CODES, ActionRunner
from services.rules.domain.conditions import fact_getter
from services.rules.domain.evaluation import (
    ActiveRule,
    RuleOutcome,
    evaluate,
    event_facts,
    facts_to_fetch,
    in_evaluation_order,
    plan_actions,
)
from services.rules.domain.guards import causation_of, refusal
from services.rules.domain.operators import MISSING, RegexLimits
from services.rules.domain.rules import RuleDefinition
from services.rules.domain.vocabulary import WINDOW_ROOT, WINDOWED_FACTS
from services.rules.records import ExecutionRecord, StoredEvent
from services.rules.settings import RulesSettings

log = structlog.get_logger("loom.rules.engine")


def rfc3339(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def facts_of(event: StoredEvent) -> dict[str, Any]:
    """The facts the event itself gives: its data keyed by entity, and the event under `event`."""
    return event_facts(event.event_id, event.type, event.source, rfc3339(event.occurred_time), event.data)


def supplier_facts(supplier: batch_pb2.Supplier) -> dict[str, Any]:
    return {
        "id": supplier.supplier_id,
        "name": supplier.name,
        "capacity": supplier.capacity,
        "moq": supplier.moq,
        "rating": supplier.rating,
        "lead_time_days": supplier.lead_time_days,
    }


def batch_facts(batch: batch_pb2.Batch) -> dict[str, Any]:
    status = batch_pb2.BatchStatus.Name(batch.status).removeprefix("BATCH_STATUS_").lower()
    return {
        "id": batch.batch_id,
        "status": status,
        "category": batch.category,
        "current_quantity": batch.current_quantity,
        "target_quantity": batch.target_quantity,
        "capacity": batch.capacity,
        "fill_percentage": batch.fill_percentage,
        "window_closes_at": rfc3339(batch.window_close_time.ToDatetime(tzinfo=UTC))
        if batch.HasField("window_close_time")
        else "",
        "supplier_id": batch.supplier_id,
    }


@dataclass
class Evaluation:
    outcomes: list[RuleOutcome]
    # The event's facts and those fetched for it.
    facts: dict[str, Any]
    fetched: dict[str, Any]
    # Facts that could not be fetched because a service was unreachable.
    unavailable: list[str] = field(default_factory=list)


@dataclass
class Processed:
    evaluation: Evaluation
    executions: list[ExecutionRecord]
    already_done: int
    postponed: bool = False


class RuleEvaluator:
    def __init__(self, engine: AsyncEngine, clients: ServiceClients, settings: RulesSettings, leases: LeaseKeeper) -> None:
        self._engine, self._clients, self._settings = engine, clients, settings
        self.leases = leases
        self._limits = RegexLimits(
            max_pattern_length=settings.regex_max_pattern_length,
            max_input_length=settings.regex_max_input_length,
            timeout_seconds=settings.regex_timeout_ms / 1000,
        )
        self._compiled: dict[tuple[str, int], ActiveRule] = {}
        self.runner = ActionRunner(engine, clients, settings, leases)

    @property
    def limits(self) -> RegexLimits:
        return self._limits

    def compile(self, rule_id: str, definition: RuleDefinition, *, version: int = 0) -> ActiveRule:
        """A rule that is not (or not necessarily) the live one, e.g. a draft to replay."""
        return ActiveRule.compile(
            rule_id=rule_id,
            name=definition.name,
            version=version,
            priority=definition.priority,
            event_types=definition.event_types,
            stop_processing=definition.stop_processing,
            conditions=definition.conditions,
            actions=definition.actions,
            limits=self._limits,
            triggered_by_rules=definition.triggered_by_rules,
            max_executions_per_minute=definition.max_executions_per_minute,
        )

    async def active_rules(self) -> list[ActiveRule]:
        """The active rules now, in evaluation order; each (rule, version) compiled once."""
        rows = await run_in_transaction(self._engine, store.active_rules)
        compiled = {}
        for row in rows:
            key = (row.rule_id, row.version)
            compiled[key] = self._compiled.get(key) or self.compile(row.rule_id, row.definition(), version=row.version)
        self._compiled = compiled
        return in_evaluation_order(list(compiled.values()))

    async def evaluate(self, event: StoredEvent, *, traced: bool, draft: ActiveRule | None = None) -> Evaluation:
        """With a `draft` (dry runs), it takes the place of the active rule of the same id, or joins them."""
        rules = await self.active_rules()
        if draft is not None:
            rules = in_evaluation_order([*(r for r in rules if r.rule_id != draft.rule_id), draft])
        facts = facts_of(event)
        # One cache per evaluation: every fact is fetched once however many rules name it.
        fetched, unavailable = await self.fetch(facts_to_fetch(rules, event.type, facts), facts, {})
        facts = {**facts, **fetched}
        caused = bool(causation_of(event.data))
        return Evaluation(
            evaluate(rules, event.type, facts, traced=traced, caused_by_rule=caused), facts, fetched, unavailable
        )

    async def process(self, event: StoredEvent, *, final_attempt: bool = True, traced: bool = False) -> Processed:
        """Evaluates a stored event and runs what matched, at most once per (rule, event).

        When a needed fact cannot be fetched and this is not the final attempt, the
        event is postponed instead (evaluating without it could wrongly not match).
        """
        evaluation = await self.evaluate(event, traced=traced)
        matched = [o for o in evaluation.outcomes if o.matched]
        metrics.EVALUATIONS.labels("matched" if matched else "no_match").inc()
        if evaluation.unavailable and not final_attempt:
            await run_in_transaction(
                self._engine, lambda conn: store.postpone_event(conn, event.event_id, self._settings.worker_poll_seconds * 2)
            )
            return Processed(evaluation, [], 0, postponed=True)

        chain = causation_of(event.data)
        settings = self._settings

        async def claim(conn) -> list[ExecutionRecord]:
            claimed = []
            for outcome in matched:
                rule = outcome.rule
                last_minute = await store.executions_last_minute(conn, rule.rule_id) if rule.max_executions_per_minute else 0
                refused = refusal(
                    rule.rule_id,
                    chain,
                    max_depth=settings.loop_max_depth,
                    per_minute=rule.max_executions_per_minute,
                    last_minute=last_minute,
                )
                if refused:
                    log.warning("execution refused", rule_id=rule.rule_id, event_id=event.event_id, reason=refused)
                execution = await store.claim_execution(
                    conn,
                    rule_id=outcome.rule.rule_id,
                    rule_version=outcome.rule.version,
                    event_id=event.event_id,
                    event_type=event.type,
                    actions=[
                        {
                            "index": a.index,
                            "type": a.type,
                            "params": a.params,
                            "status": "skipped" if refused else "failed" if a.error else "pending",
                            "error": a.error,
                            "attempts": 0,
                            "duration_ms": 0.0,
                        }
                        for a in plan_actions(outcome.rule.actions, outcome.action_facts(evaluation.facts))
                    ],
                    lease_seconds=self._settings.execution_lease_seconds,
                    owner=self.leases.owner,
                    causation=[link.as_dict() for link in chain],
                    refused_reason=refused,
                )
                if execution is not None and not refused:
                    claimed.append(execution)
            await store.mark_evaluated(conn, event.event_id)
            return claimed

        claimed = await run_in_transaction(self._engine, claim)
        finished = [await self.runner.run(execution) for execution in claimed]
        return Processed(evaluation, finished, len(matched) - len(claimed))

    async def fetch(
        self, roots: set[str], facts: dict[str, Any], cache: dict[Any, Any] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """Facts the event lacks, fetched once each from the batch service.

        A `cache` shared across calls (a replay's) makes each distinct request once.
        """
        cache = {} if cache is None else cache
        fetched: dict[str, Any] = {}
        unavailable: list[str] = []
        order, batch = facts.get("order") or {}, facts.get("batch") or {}
        try:
            if "batch" in roots and order.get("batch_id"):
                key = ("batch", str(order["batch_id"]))
                if key not in cache:
                    reply = await self._clients.batch.GetBatch(batch_pb2.GetBatchRequest(batch_id=key[1]))
                    cache[key] = batch_facts(reply.batch)
                fetched["batch"] = cache[key]
        except grpc.aio.AioRpcError as error:
            self._note_fetch_failure("batch", error, unavailable)
        category = order.get("category") or batch.get("category")
        quantity = order.get("quantity") or batch.get("target_quantity")
        try:
            if roots & {"best_supplier", "best_supplier_id"} and category and quantity:
                supplier_key = ("best_supplier", str(category), int(quantity))
                if supplier_key not in cache:
                    reply = await self._clients.batch.RecommendSupplier(
                        batch_pb2.RecommendSupplierRequest(category=supplier_key[1], quantity=supplier_key[2])
                    )
                    cache[supplier_key] = supplier_facts(reply.supplier) if reply.HasField("supplier") else None
                if cache[supplier_key] is not None:
                    fetched["best_supplier"] = cache[supplier_key]
                    fetched["best_supplier_id"] = cache[supplier_key]["id"]
        except grpc.aio.AioRpcError as error:
            self._note_fetch_failure("best_supplier", error, unavailable)
        windows = await self._windows(
            {p.partition(".")[2] for p in roots if p.startswith(WINDOW_ROOT + ".")}, facts, cache, unavailable
        )
        if windows:
            fetched[WINDOW_ROOT] = windows
        return fetched, unavailable

    async def _windows(
        self, names: set[str], facts: dict[str, Any], cache: dict[Any, Any], unavailable: list[str]
    ) -> dict[str, int]:
        """Windowed facts from their owning services, each asked once per evaluation (or per replay)."""
        found: dict[str, int] = {}
        now = datetime.now(UTC)
        for name in sorted(names):
            window = WINDOWED_FACTS[name]
            key = next((str(v) for path in window.keys if (v := fact_getter(path)(facts)) not in (MISSING, None, "")), None)
            if key is None:
                continue
            cached = (WINDOW_ROOT, name, key)
            try:
                if cached not in cache:
                    cache[cached] = await self._count(window.source, key, window.start(now))
                found[name] = cache[cached]
            except grpc.aio.AioRpcError as error:
                self._note_fetch_failure(f"{WINDOW_ROOT}.{name}", error, unavailable)
        return found

    async def _count(self, source: str, key: str, since: datetime) -> int:
        start = timestamp_pb2.Timestamp()
        start.FromDatetime(since)
        if source == "batch.recent_orders":
            reply = await self._clients.batch.CountRecentOrders(
                batch_pb2.CountRecentOrdersRequest(buyer_id=key, start_time=start)
            )
        elif source == "batch.confirmed_batches":
            reply = await self._clients.batch.CountConfirmedBatches(
                batch_pb2.CountConfirmedBatchesRequest(category=key, start_time=start)
            )
        else:
            reply = await self._clients.tracking.CountProductInteractions(
                tracking_pb2.CountProductInteractionsRequest(product_id=key, start_time=start)
            )
        return reply.count

    @staticmethod
    def _note_fetch_failure(fact: str, error: grpc.aio.AioRpcError, unavailable: list[str]) -> None:
        # NOT_FOUND and the like mean "no such fact"; only an unreachable service is worth waiting for.
        if error.code() in TRANSIENT_CODES:
            unavailable.append(fact)
        log.warning("fact not fetched", fact=fact, code=error.code().name)


class Worker:
    """Evaluates stored events in arrival order and resumes stalled executions, until cancelled."""

    def __init__(
        self,
        engine: AsyncEngine,
        evaluator: RuleEvaluator,
        settings: RulesSettings,
        resume_due_waits: Callable[[], Awaitable[int]],
    ) -> None:
        self._db, self._evaluator, self._settings = engine, evaluator, settings
        self._resume_due_waits = resume_due_waits
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker step failed")
                busy = False
            if not busy:
                await wait_for_event(self._wake, self._settings.worker_poll_seconds)
                self._wake.clear()

    async def step(self) -> bool:
        """One round: stalled executions, due waits, then a batch of events. True when there was work.

        What it leases stays leased (the heartbeat renews it) until the round is done with it.
        """
        settings, leases = self._settings, self._evaluator.leases
        stalled = await run_in_transaction(
            self._db,
            lambda conn: store.lease_stalled_executions(
                conn, limit=settings.worker_batch_size, lease_seconds=settings.execution_lease_seconds, owner=leases.owner
            ),
        )
        async with leases.holding("executions", [e.execution_id for e in stalled]):
            for execution in stalled:
                log.info("resuming execution", execution_id=execution.execution_id)
                await self._evaluator.runner.run(execution)
        resumed = await self._resume_due_waits()
        events = await run_in_transaction(
            self._db,
            lambda conn: store.lease_events(
                conn, limit=settings.worker_batch_size, lease_seconds=settings.event_lease_seconds, owner=leases.owner
            ),
        )
        async with leases.holding("events", [e.event_id for e in events]):
            for event in events:
                if leases.lost("events", event.event_id):
                    continue  # this replica stalled past the lease: the one that took the event evaluates it
                # Its own trace, linked to the call that wrote the event (which ended long ago elsewhere).
                attributes = {"loom.event_id": event.event_id, "loom.event_type": event.type}
                with tracing.span("rules.evaluate_event", link_to=event.trace_parent, attributes=attributes):
                    await self._evaluator.process(event, final_attempt=event.attempts >= settings.fact_fetch_attempts)
        return bool(stalled or resumed or events)
