"""Migration 0007 (engagement data partitioned by month) keeps every row, both ways.

The old schema (revision 0006) is filled with interactions and shares over five months,
then upgraded and downgraded; each table's rows are compared as a whole (count and a
digest of every row in id order).
"""

import uuid

import psycopg
import pytest
from alembic import command

from libs.db import with_database
from libs.migrations import alembic_config, upgrade
from libs.scratch_db import drop_database, plain_url, server_url

FILL = (
    """INSERT INTO tracking.interactions (id, occurred_at, received_at, type, product_id, session_id, user_id,
           client_event_id, page, country, device, ip_hash)
    SELECT gen_random_uuid(), now() - n * interval '37 minutes', now(), 1 + n % 8, 'p' || n % 50, 's' || n % 700,
           CASE WHEN n % 3 = 0 THEN 'u' || n % 40 END, 'c' || n, '/p/' || n % 50, 'US', 'desktop', '\\x01'
    FROM generate_series(0, 5999) n""",  # 6,000 events over about 154 days
    "INSERT INTO tracking.posts (post_id, title, url, published) SELECT 'post' || n, 't', 'u', true FROM generate_series(0, 9) n",
    """INSERT INTO tracking.shares (id, post_id, platform, session_id, ip_hash, created_at)
    SELECT gen_random_uuid(), 'post' || n % 10, 1 + n % 4, 's' || n, '\\x02', now() - n * interval '5 hours'
    FROM generate_series(0, 599) n""",
)


@pytest.fixture
def old_schema():
    """A database whose tracking schema stands at revision 0006, filled."""
    admin_url = server_url()
    name = f"loom_migration_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    upgrade(url, "tracking", "0006")
    with psycopg.connect(plain_url(url)) as conn:
        for statement in FILL:
            conn.execute(statement)
    yield url
    drop_database(admin_url, url)


def contents(url: str) -> dict[str, tuple]:
    with psycopg.connect(plain_url(url)) as conn:
        return {
            table: conn.execute(f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM tracking.{table} t").fetchone()
            for table in ("interactions", "shares")
        }


def shape(url: str) -> dict[str, str]:
    """Each table's kind (p: partitioned, r: plain) and primary key."""
    with psycopg.connect(plain_url(url)) as conn:
        rows = conn.execute(
            """SELECT c.relname, c.relkind::text || ' ' || pg_get_constraintdef(k.oid) FROM pg_class c
            JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
            WHERE c.oid IN ('tracking.interactions'::regclass, 'tracking.shares'::regclass)"""
        ).fetchall()
    return dict(rows)


def test_upgrading_to_monthly_partitions_keeps_every_row(old_schema):
    before = contents(old_schema)
    upgrade(old_schema, "tracking")
    assert shape(old_schema) == {"interactions": "p PRIMARY KEY (occurred_at, id)", "shares": "p PRIMARY KEY (created_at, id)"}
    assert contents(old_schema) == before
    assert before["interactions"][0] == 6000 and before["shares"][0] == 600


def test_upgrading_puts_every_row_in_its_months_partition(old_schema):
    upgrade(old_schema, "tracking")
    with psycopg.connect(plain_url(old_schema)) as conn:
        misplaced = conn.execute(
            """SELECT count(*) FROM tracking.interactions
            WHERE tableoid::regclass::text <> 'tracking.interactions_' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY_MM')"""
        ).fetchone()[0]
        months = conn.execute(
            "SELECT count(DISTINCT tableoid) FROM tracking.interactions"
        ).fetchone()[0]
    assert misplaced == 0 and months >= 5


def test_downgrading_back_to_plain_tables_keeps_every_row(old_schema):
    before = contents(old_schema)
    upgrade(old_schema, "tracking")
    command.downgrade(alembic_config(old_schema, "tracking"), "0006")
    assert shape(old_schema) == {"interactions": "r PRIMARY KEY (id)", "shares": "r PRIMARY KEY (id)"}
    assert contents(old_schema) == before
