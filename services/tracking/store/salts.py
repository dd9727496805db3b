"""The daily salts of the IP hashes (raw addresses are never stored)."""

from __future__ import annotations

import asyncio
import os
from datetime import date, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.db import run_in_transaction

SALT_BYTES = 32


class SaltBook:
    """The daily IP-hash salts, shared by every replica through the database.

    A salt lives two days (today's and yesterday's, so an hour-long window spanning
    midnight still matches); older salts are deleted, after which the hashes made
    with them cannot be linked back to an address.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._salts: dict[date, bytes] = {}
        self._fetching = asyncio.Lock()  # the first calls of a day wait for one fetch, not one each

    async def salt(self, day: date) -> bytes:
        cached = self._salts.get(day)
        if cached is not None:
            return cached
        async with self._fetching:
            cached = self._salts.get(day)
            return cached if cached is not None else await self._fetch(day)

    async def _fetch(self, day: date) -> bytes:

        async def fetch(conn: AsyncConnection) -> bytes:
            await conn.execute(
                text("INSERT INTO tracking.ip_salts (day, salt) VALUES (:day, :salt) ON CONFLICT (day) DO NOTHING"),
                {"day": day, "salt": os.urandom(SALT_BYTES)},
            )
            await conn.execute(text("DELETE FROM tracking.ip_salts WHERE day < :oldest"), {"oldest": day - timedelta(days=1)})
            return (await conn.execute(text("SELECT salt FROM tracking.ip_salts WHERE day = :day"), {"day": day})).scalar_one()

        salt = await run_in_transaction(self._engine, fetch)
        self._salts = {d: s for d, s in self._salts.items() if d >= day - timedelta(days=1)}
        self._salts[day] = salt
        return salt

