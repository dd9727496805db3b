"""Restart PostgreSQL under a mixed load: services recover by themselves and lose no acknowledged write.

The server is a scratch one started for this module (pgserver's binaries in a
temporary directory), never the machine's shared server.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import psutil
import pytest

from tests.deploy.twin import Twin
from tests.faults.load import MixedLoad

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

LOAD_SECONDS_EACH_SIDE = 2.0


@pytest.fixture(scope="module")
def scratch_server():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    # its own temporary directory: concurrent pytest sessions prune each other's tmp_path bases
    home = Path(tempfile.mkdtemp(prefix="loom-faults-pg-"))
    # cleanup_mode None: after a restart the postmaster pid pgserver knows is stale, so this
    # fixture stops the server itself
    server = pgserver.get_server(home / "pgdata", cleanup_mode=None)
    try:
        server.psql("ALTER SYSTEM SET max_connections = 300;")
        restart_postgres(server)
        yield server
    finally:
        pg_ctl(server, "-m", "immediate", "stop")
        # and any postmaster of this directory that outlived it (none expected; a leak otherwise)
        for process in psutil.process_iter(["cmdline"]):
            if any(str(home) in part for part in process.info["cmdline"] or ()):
                process.kill()
        shutil.rmtree(home, ignore_errors=True)


def pg_ctl(server, *args: str) -> None:
    """pg_ctl on the scratch server, as its system user through runuser (a plain fork+exec:
    subprocess's own user switching runs Python in the forked child, which crashes in a
    process whose gRPC threads are busy)."""
    from pgserver._commands import POSTGRES_BIN_PATH

    argv = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-l", str(server.log), "-w", "-t", "60", *args]
    if server.system_user:
        argv = ["runuser", "-u", server.system_user, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{server.log.read_text()[-2000:]}"


def restart_postgres(server) -> None:
    """A fast restart: every open connection is cut, the server comes back with its old options."""
    pg_ctl(server, "-m", "fast", "restart")


@pytest.fixture(scope="module")
def twin(scratch_server):
    url = scratch_server.get_uri()
    with Twin(server_url=url) as running:
        yield running


async def test_a_postgres_restart_under_load_heals_without_restarting_services_and_loses_nothing(twin, scratch_server):
    load = MixedLoad(twin)
    await load.prepare()
    pids = {name: [p.popen.pid for p in processes] for name, processes in twin.processes.items()}
    progress: list[int] = []

    async def restart_midway() -> None:
        await asyncio.sleep(LOAD_SECONDS_EACH_SIDE)
        progress.append(sum(len(v) for v in load.acknowledged.values()))
        await asyncio.to_thread(restart_postgres, scratch_server)
        await asyncio.sleep(LOAD_SECONDS_EACH_SIDE)

    await load.around(restart_midway)

    assert not load.failures, load.failures
    assert sum(len(v) for v in load.acknowledged.values()) > progress[0], "no progress after the restart"
    assert {name: [p.popen.pid for p in processes] for name, processes in twin.processes.items()} == pids
    assert all(p.popen.poll() is None for processes in twin.processes.values() for p in processes)
    assert load.stored() == load.acknowledged_ids()
