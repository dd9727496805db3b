"""Properties of the tracking schema itself."""

import psycopg

from libs.scratch_db import plain_url


async def test_every_identifier_column_compares_as_bytes_whatever_the_database_locale(tracking_db):
    async with await psycopg.AsyncConnection.connect(plain_url(tracking_db)) as conn:
        cursor = await conn.execute(
            """SELECT table_name || '.' || column_name, collation_name FROM information_schema.columns
            WHERE table_schema = 'tracking' AND table_name <> 'idempotency_keys' AND data_type = 'text'
              AND (column_name LIKE '%\\_id' OR column_name = 'actor')"""
        )
        collations = dict(await cursor.fetchall())
    assert "interactions.session_id" in collations
    assert {column: c for column, c in collations.items() if c != "C"} == {}
