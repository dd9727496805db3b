"""This process's leases on events, executions and waits, and the heartbeat that renews them.

Each kind keeps its own lease length (`event_lease_seconds`, `execution_lease_seconds`,
the latter also for due waits being resumed); one heartbeat renews them all every third
of the shortest, over a connection of its own so that a busy pool cannot starve it.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import run_in_transaction
from libs.leases import LeaseKeeper
from services.rules import store
from services.rules.settings import RulesSettings


def lease_seconds(settings: RulesSettings) -> dict[str, float]:
    return {
        "events": settings.event_lease_seconds,
        "executions": settings.execution_lease_seconds,
        "waits": settings.execution_lease_seconds,
    }


def lease_keeper(engine: AsyncEngine, settings: RulesSettings) -> LeaseKeeper:
    """A keeper renewing through `engine` (a one-connection engine of the heartbeat's own)."""
    seconds = lease_seconds(settings)

    async def renew(kind: str, ids: list[str], owner: str) -> Collection[str]:
        return await run_in_transaction(
            engine,
            lambda conn: store.renew_leases(conn, kind, ids, owner=owner, lease_seconds=seconds[kind]),
            attempts=2,
        )

    return LeaseKeeper(renew, every=min(seconds.values()) / 3)
