"""The durable-wait use cases: resume waits that are due, cancel one.

Every replica's worker calls `resume_due` each round. Due waits are leased with FOR
UPDATE SKIP LOCKED, so one replica takes each; ending a wait is conditional on it
still waiting, in the same transaction that moves its execution on, so a wait fires
once even when a replica dies holding it (the lease lapses, another takes it) or dies
after it (the execution is running and leased, and the stalled-execution sweep
finishes it). The conditions re-checked are the ones stored with the wait, from the
rule version the execution started on.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import run_in_transaction
from libs.errors import FailedPrecondition
from services.rules import store
from services.rules.domain.conditions import compile_condition, fact_paths
from services.rules.domain.evaluation import wanted_facts
from services.rules.domain.waits import after_wait, cancelled
from services.rules.evaluator import RuleEvaluator, facts_of
from services.rules.records import WaitRecord
from services.rules.settings import RulesSettings

log = structlog.get_logger("loom.rules.waits")


class Waits:
    def __init__(self, engine: AsyncEngine, evaluator: RuleEvaluator, settings: RulesSettings) -> None:
        self._engine, self._evaluator, self._settings = engine, evaluator, settings

    async def resume_due(self) -> int:
        """Resumes the waits that are due; how many."""
        settings = self._settings
        leases = self._evaluator.leases
        due = await run_in_transaction(
            self._engine,
            lambda conn: store.lease_due_waits(
                conn, limit=settings.worker_batch_size, lease_seconds=settings.execution_lease_seconds, owner=leases.owner
            ),
        )
        async with leases.holding("waits", [w.wait_id for w in due]):
            for wait in due:
                await self._resume(wait)
        return len(due)

    async def _resume(self, wait: WaitRecord) -> None:
        holds = await self._still_holds(wait)
        lease, owner = self._settings.execution_lease_seconds, self._evaluator.leases.owner

        async def end(conn):
            execution = await store.get_execution(conn, wait.execution_id)
            actions, status = after_wait(execution.actions, wait.action_index, still_holds=holds)
            return await store.end_wait(
                conn, wait.wait_id, "resumed", actions, execution_status=status, lease_seconds=lease, owner=owner
            )

        execution = await run_in_transaction(self._engine, end)
        log.info("wait resumed", wait_id=wait.wait_id, conditions_hold=holds)
        if execution is not None and execution.status == "running":
            await self._evaluator.runner.run(execution)

    async def _still_holds(self, wait: WaitRecord) -> bool:
        event = await run_in_transaction(self._engine, lambda conn: store.get_event(conn, wait.event_id))
        if event is None:  # purged by retention: nothing left to check against
            return False
        facts = facts_of(event)
        condition = compile_condition(wait.conditions, self._evaluator.limits)
        fetched, _ = await self._evaluator.fetch(wanted_facts(fact_paths(wait.conditions), facts), facts)
        return condition.test({**facts, **fetched})


async def cancel_wait(conn, wait_id: str) -> WaitRecord:
    """Cancels a waiting wait: the rest of its execution is skipped. FailedPrecondition once it ended."""
    wait = await store.get_wait(conn, wait_id, for_update=True)
    if wait.status != "waiting":
        raise FailedPrecondition(f"wait {wait_id} is {wait.status}, not waiting", reason="WAIT_ENDED", subject=wait_id)
    execution = await store.get_execution(conn, wait.execution_id)
    actions, status = cancelled(execution.actions, wait.action_index)
    await store.end_wait(conn, wait_id, "cancelled", actions, execution_status=status, lease_seconds=0)
    return await store.get_wait(conn, wait_id)
