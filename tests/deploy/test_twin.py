"""The compose topology, run as processes against this machine's PostgreSQL server.

Each service runs as its own OS process connecting as its own role, provisioned
by the same script compose runs, migrated by the same command, with two
scheduler replicas; health is asked with the compose healthcheck commands.
"""

from __future__ import annotations

import grpc
import httpx
import psycopg
import pytest
from google.protobuf.message_factory import GetMessageClass

from libs.settings import SERVICE_NAMES
from services.scheduler.store import LEADER_LOCK_NAMESPACE
from tests.deploy.compose import loom_services
from tests.deploy.twin import MACHINE_SERVER_URL, Twin, server_reachable
from tests.fuzz.fleet import SERVICE_DESCRIPTORS, invoke, open_sync_channel

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
    started = {process.name for processes in twin.processes.values() for process in processes}
    assert started == {name for name in loom_services() if name not in ("migrate",)}
    for processes in twin.processes.values():
        for process in processes:
            assert process.healthy(), process.log()


def test_two_scheduler_replicas_serve_side_by_side_and_exactly_one_leads(twin):
    schedulers = twin.processes["scheduler"]
    assert len(schedulers) == 2
    assert all(p.popen.poll() is None and p.healthy() for p in schedulers)
    with psycopg.connect(twin.admin_url) as conn:
        leaders = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid::bigint = %s AND l.objid = 0 AND a.usename = %s",
            (LEADER_LOCK_NAMESPACE, twin.role("scheduler")),
        ).fetchone()
    assert leaders == (1,)


def test_the_gateway_reaches_every_backend(twin):
    reply = httpx.get(f"http://{twin.target('gateway')}/healthz", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["backends"] == dict.fromkeys(SERVICE_NAMES, "SERVING")


READS = {"batch": "ListSuppliers", "rules": "ListRules", "tracking": "ListPosts", "scheduler": "ListJobs"}


def test_every_service_connection_is_made_as_that_services_role(twin):
    for service, method in READS.items():  # one read each, so every service has opened a connection
        descriptor = SERVICE_DESCRIPTORS[service].methods_by_name[method]
        with open_sync_channel(twin.target(service)) as channel:
            assert invoke(channel, descriptor, GetMessageClass(descriptor.input_type)()).code == grpc.StatusCode.OK
    with psycopg.connect(twin.admin_url) as conn:
        sessions = set(
            conn.execute(
                "SELECT application_name, usename FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'loom-%'"
            )
        )
    # application names are "loom-<service>" (plus a replica suffix for the scheduler's lock session)
    by_service = {(name.removeprefix("loom-").split()[0], user) for name, user in sessions}
    assert by_service == {(service, twin.role(service)) for service in SERVICE_NAMES}, sessions


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
