"""The compose topology, run as processes against this machine's PostgreSQL server.

Each service runs as its own OS process connecting as its own role, provisioned
by the same script compose runs, migrated by the same command, with two
scheduler replicas; health is asked with the compose healthcheck commands.
"""

from __future__ import annotations

import httpx
import psycopg
import pytest

from libs.settings import SERVICE_NAMES
from tests.deploy.compose import loom_services
from tests.deploy.twin import MACHINE_SERVER_URL, Twin, server_reachable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not server_reachable(MACHINE_SERVER_URL), reason=f"no PostgreSQL server at {MACHINE_SERVER_URL}"),
]


@pytest.fixture(scope="module")
def twin():
    with Twin() as running:
        yield running


def connect_as(twin: Twin, service: str) -> psycopg.Connection:
    return psycopg.connect(twin.role_url(service), autocommit=True)


def test_every_long_running_compose_service_is_healthy_by_its_own_healthcheck(twin):
    started = {name for name, processes in twin.processes.items() if processes}
    assert started == {name for name in loom_services() if name not in ("migrate",)}
    for processes in twin.processes.values():
        for process in processes:
            assert process.healthy(), process.log()


def test_two_scheduler_replicas_serve_side_by_side(twin):
    schedulers = twin.processes["scheduler"]
    assert len(schedulers) == 2
    assert all(p.popen.poll() is None and p.healthy() for p in schedulers)


def test_the_gateway_reaches_every_backend(twin):
    reply = httpx.get(f"http://{twin.target('gateway')}/healthz", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["backends"] == dict.fromkeys(SERVICE_NAMES, "SERVING")


def test_every_service_connection_is_made_as_that_services_role(twin):
    with psycopg.connect(twin.admin_url) as conn:
        sessions = set(
            conn.execute(
                "SELECT application_name, usename FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'loom-%'"
            )
        )
    assert sessions, "no service has connected yet"
    assert all(user == twin.role(name.removeprefix("loom-")) for name, user in sessions), sessions


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_role_reaching_into_another_services_schema_is_denied(twin, service):
    with connect_as(twin, service) as conn:
        for other in SERVICE_NAMES:
            if other == service:
                continue
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"permission denied for schema {other}"):
                conn.execute(f"SELECT version_num FROM {other}.alembic_version")


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_role_uses_its_own_schema_and_nothing_else(twin, service):
    with connect_as(twin, service) as conn:
        assert conn.execute(f"SELECT count(*) FROM {service}.alembic_version").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.stray (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA stray")


def test_every_table_belongs_to_its_schemas_service_role(twin):
    with psycopg.connect(twin.admin_url) as conn:
        owners = set(
            conn.execute(
                "SELECT schemaname, tableowner FROM pg_tables WHERE schemaname = ANY(%s)", (list(SERVICE_NAMES),)
            )
        )
    assert owners == {(service, twin.role(service)) for service in SERVICE_NAMES}


def test_a_role_without_a_grant_cannot_even_connect_to_the_database(twin):
    stranger = f"{twin.prefix}stranger"
    with psycopg.connect(twin.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{stranger}" LOGIN')
    try:
        url = twin.role_url("batch").replace(f"{twin.role('batch')}:{twin.passwords['batch']}", stranger)
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(url).close()
    finally:
        with psycopg.connect(twin.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{stranger}"')
