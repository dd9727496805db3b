"""Scratch databases for tests and benchmarks: fresh, migrated, dropped afterwards.

The server is `TEST_DATABASE_URL` when set (e.g. the PostgreSQL on
127.0.0.1:5432), else an embedded one under .loom/test.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg

from libs import migrations
from libs.db import embedded_server_url, with_database
from libs.settings import SERVICE_NAMES

ROOT = Path(__file__).resolve().parent.parent


def plain_url(url: str) -> str:
    """A libpq URL psycopg understands directly (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL") or embedded_server_url(ROOT / ".loom" / "test")


def create_database(admin_url: str, *, prefix: str = "loom_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    for service in SERVICE_NAMES:
        if migrations.has_migrations(service):
            migrations.upgrade(url, service)
    return url


def drop_database(admin_url: str, url: str) -> None:
    name = url.partition("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(plain_url(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
