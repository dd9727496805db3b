"""Alembic migrations, one history per service, each in its own schema.

A service keeps its revisions in services/<name>/migrations/versions/ and an
env.py that only calls `run_env("<name>")`. The version table lives in the
service's schema, so the histories never meet.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, create_engine, pool, text

from libs.db import async_url

ROOT = Path(__file__).resolve().parent.parent
# Serialises concurrent migrators (two scheduler replicas, a migrate job racing `loom up`).
MIGRATION_LOCK_KEY = 0x4C4F4F4D  # "LOOM"


def migrations_path(service: str) -> Path:
    return ROOT / "services" / service / "migrations"


def has_migrations(service: str) -> bool:
    return (migrations_path(service) / "env.py").exists()


def alembic_config(database_url: str, service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_path(service)))
    config.attributes["database_url"] = async_url(database_url)
    config.attributes["schema"] = service
    return config


def upgrade(database_url: str, service: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url, service), revision)


def run_env(schema: str) -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    engine = create_engine(context.config.attributes["database_url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            _enter_schema(connection, schema)
            connection.commit()
            context.configure(
                connection=connection,
                version_table_schema=schema,
                include_schemas=True,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.rollback()
            connection.execute(text("RESET ROLE"))
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


def _enter_schema(connection: Connection, schema: str) -> None:
    """Creates the schema if missing, else migrates as its owner.

    In a deployment the schema is made beforehand, owned by the service's own
    role (deploy/db/provision.sql), and migrated by an administrator: acting as
    the owner keeps every table owned by the role the service connects as. A
    service role migrating its own schema needs no CREATE right on the database.
    """
    owner = connection.execute(
        text(
            "SELECT quote_ident(r.rolname) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
            "WHERE n.nspname = :schema AND r.rolname <> current_user AND pg_has_role(current_user, r.oid, 'MEMBER')"
        ),
        {"schema": schema},
    ).scalar()
    if owner is not None:
        connection.execute(text(f"SET ROLE {owner}"))
        return
    exists = connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"), {"schema": schema}).scalar()
    if not exists:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
