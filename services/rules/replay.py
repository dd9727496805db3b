"""The replay use case: a rule over stored events, no action run, compared with the live rule.

Events are read in chunks of REPLAY_CHUNK by sequence (one query per chunk joins
the live rule's executions; the next chunk's query runs while this one is evaluated),
evaluated with the same compiled rule the worker would use, and handed out chunk by
chunk so a long window streams rather than piling up.
With current facts, each distinct fetch (a batch, a supplier recommendation) is
made once per replay, not once per event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import run_in_transaction
from services.rules import store
from services.rules.domain.evaluation import (
    ActiveRule,
    PlannedAction,
    RuleOutcome,
    facts_to_fetch,
    plan_actions,
)
from services.rules.domain.replay import ReplayTally, diff
from services.rules.evaluator import RuleEvaluator, facts_of
from services.rules.records import ReplayEvent

REPLAY_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class ReplayItem:
    replayed: ReplayEvent
    would: list[PlannedAction] | None
    diff: str | None


@dataclass(frozen=True)
class ReplayWindow:
    start: datetime
    end: datetime
    current_facts: bool = False
    only_differences: bool = False


class Replayer:
    def __init__(self, engine: AsyncEngine, evaluator: RuleEvaluator) -> None:
        self._engine, self._evaluator = engine, evaluator

    async def replay(
        self, rule: ActiveRule, live_rule_id: str, window: ReplayWindow
    ) -> AsyncIterator[tuple[list[ReplayItem], ReplayTally, float]]:
        """Chunks of results (events where either side fired), the running tally and the elapsed seconds."""
        started = time.perf_counter()
        tally = ReplayTally()
        cache: dict[Any, Any] = {}
        # The next chunk is read while this one is evaluated: PostgreSQL works on the other core.
        pending = asyncio.ensure_future(self._chunk(live_rule_id, window, after_seq=0))
        try:
            while True:
                chunk = await pending
                if len(chunk) == REPLAY_CHUNK:
                    pending = asyncio.ensure_future(self._chunk(live_rule_id, window, after_seq=chunk[-1].event.seq))
                items = []
                for replayed in chunk:
                    would = await self._would(rule, replayed, window.current_facts, cache)
                    live = replayed.live.actions if replayed.live else None
                    outcome = diff(would, live)
                    tally.count(outcome, would=would is not None, live=live is not None)
                    if outcome is not None and not (window.only_differences and outcome == "same"):
                        items.append(ReplayItem(replayed, would, outcome))
                yield items, tally, time.perf_counter() - started
                if len(chunk) < REPLAY_CHUNK:
                    return
        finally:
            pending.cancel()  # a client that stops listening leaves no read behind

    async def _chunk(self, live_rule_id: str, window: ReplayWindow, *, after_seq: int) -> list[ReplayEvent]:
        return await run_in_transaction(
            self._engine,
            lambda conn: store.replay_events(
                conn, rule_id=live_rule_id, start=window.start, end=window.end, after_seq=after_seq, limit=REPLAY_CHUNK
            ),
        )

    async def _would(
        self, rule: ActiveRule, replayed: ReplayEvent, current_facts: bool, cache: dict[Any, Any]
    ) -> list[PlannedAction] | None:
        event = replayed.event
        if not rule.listens_to(event.type):
            return None
        facts = facts_of(event)
        if current_facts:
            fetched, _ = await self._evaluator.fetch(facts_to_fetch([rule], event.type, facts), facts, cache)
            facts = {**facts, **fetched}
        if not rule.test(facts):
            return None
        return plan_actions(rule.actions, RuleOutcome(rule, True).action_facts(facts))
