"""Durable waits: what a `wait` action does to its execution when it ends.

`wait` params: seconds (how long), conditions (optional: the tree to re-check when
due; the rule's own conditions, at the version the execution started on, otherwise).
When due and the conditions still hold, the execution continues with its next action;
when they no longer hold, or the wait is cancelled, the remaining actions are skipped.
"""

from __future__ import annotations

from typing import Any

from services.rules.domain.evaluation import execution_status

MAX_WAIT_SECONDS = 30 * 24 * 3600


def after_wait(actions: list[dict[str, Any]], index: int, *, still_holds: bool) -> tuple[list[dict[str, Any]], str]:
    """The execution's actions and status once the wait at `index` is due."""
    if still_holds:
        return _ended(actions, index, "succeeded", ""), "running" if _pending_after(actions, index) else _final(
            actions, index, "succeeded"
        )
    why = "the conditions no longer hold after the wait"
    updated = _ended(actions, index, "succeeded", "", skip_rest=why)
    return updated, execution_status([a["status"] for a in updated])


def cancelled(actions: list[dict[str, Any]], index: int) -> tuple[list[dict[str, Any]], str]:
    """The execution's actions and status when the wait at `index` is cancelled."""
    updated = _ended(actions, index, "skipped", "wait cancelled", skip_rest="wait cancelled")
    return updated, execution_status([a["status"] for a in updated])


def _ended(actions: list[dict[str, Any]], index: int, status: str, error: str, skip_rest: str = "") -> list[dict[str, Any]]:
    updated = []
    for action in actions:
        action = dict(action)
        if action["index"] == index:
            action.update(status=status, error=error)
        elif skip_rest and action["index"] > index and action["status"] == "pending":
            action.update(status="skipped", error=skip_rest)
        updated.append(action)
    return updated


def _pending_after(actions: list[dict[str, Any]], index: int) -> bool:
    return any(a["index"] > index and a["status"] == "pending" for a in actions)


def _final(actions: list[dict[str, Any]], index: int, status: str) -> str:
    return execution_status([status if a["index"] == index else a["status"] for a in actions])
