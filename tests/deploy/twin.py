"""The compose topology as local processes against a real PostgreSQL server.

Same provisioning script, same roles (with a unique prefix, since roles are
server-wide), same migration command, same environment as docker-compose.yml
with the host names and ports swapped for loopback ones, and each service
connecting as its own role. Fault tests kill and restart its processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.cli import PROCESSES
from libs.db import with_database
from libs.scratch_db import plain_url
from libs.settings import SERVICE_NAMES
from tests.deploy.compose import ROOT, command, environment, healthcheck_command, replicas_of
from tests.support import TEST_JWT_SECRET, free_port, port_is_free

MACHINE_SERVER_URL = os.environ.get("LOOM_TWIN_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROVISION_SCRIPT = ROOT / "deploy" / "db" / "provision.sh"
SHELL_ENV = {"LOOM_JWT_SECRET": TEST_JWT_SECRET, "LOOM_LOG_LEVEL": "warning"}


def server_reachable(url: str) -> bool:
    try:
        with psycopg.connect(plain_url(url), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def psql_binary_dir() -> str:
    """psql from the PATH, else the one the pgserver wheel ships."""
    found = shutil.which("psql")
    if found:
        return str(Path(found).parent)
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin")


@dataclass
class Process:
    """One replica of one compose service, run as an OS process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None
    # the compose service it runs as, when a replicated twin adds replicas compose does not have
    service: str = ""

    @property
    def compose_service(self) -> str:
        return self.service or self.name

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        """SIGKILL: no draining, no clean-up."""
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 15) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def healthy(self) -> bool:
        """Runs the compose healthcheck command with the process's environment."""
        probe = healthcheck_command(self.compose_service)
        assert probe is not None
        try:
            return subprocess.run(probe, env=self.env, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def ready(self) -> bool:
        """The same question as the healthcheck, asked in-process (cheaper while polling)."""
        process = command(self.compose_service)[-1]
        port = int(self.env[f"LOOM_{process.upper()}_PORT"])
        if process == "gateway":
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Twin:
    """Provisions a scratch database on `server_url`, migrates it, and runs every compose service."""

    server_url: str = MACHINE_SERVER_URL
    prefix: str = field(default_factory=lambda: f"loom_{uuid.uuid4().hex[:8]}_")
    database: str = field(default_factory=lambda: f"loom_twin_{uuid.uuid4().hex[:10]}")
    passwords: dict[str, str] = field(default_factory=lambda: {s: uuid.uuid4().hex for s in SERVICE_NAMES})
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, list[Process]] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="loom-twin-")))
    # per compose service: variables a test adds on top of the compose environment
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # at least this many replicas of every process (0: as many as compose runs); clients of
    # a replicated service then get every replica's address, round-robin, as compose's DNS name gives
    replicas: int = 0

    # -- the database ------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return with_database(self.server_url, self.database)

    def role(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def role_url(self, service: str) -> str:
        """The scratch database, as the service's own role (as DATABASE_URL in compose)."""
        server = urlsplit(plain_url(self.server_url))
        host = f"{server.hostname}:{server.port or 5432}" if server.hostname else ""
        query = f"?{server.query}" if server.query else ""
        return f"postgresql://{self.role(service)}:{self.passwords[service]}@{host}/{self.database}{query}"

    def provision(self) -> None:
        with psycopg.connect(plain_url(self.server_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        server = urlsplit(plain_url(self.server_url))
        env = {
            **os.environ,
            "PATH": f"{psql_binary_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
            "PGHOST": server.hostname or dict(p.split("=", 1) for p in server.query.split("&"))["host"],
            "PGPORT": str(server.port or 5432),
            "PGUSER": server.username or "postgres",
            "PGDATABASE": self.database,
            "LOOM_ROLE_PREFIX": self.prefix,
            **{f"LOOM_{s.upper()}_DB_PASSWORD": p for s, p in self.passwords.items()},
        }
        subprocess.run(["sh", str(PROVISION_SCRIPT)], env=env, check=True, capture_output=True, timeout=60)

    def drop(self) -> None:
        with psycopg.connect(plain_url(self.server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            for service in SERVICE_NAMES:
                conn.execute(f'DROP ROLE IF EXISTS "{self.role(service)}"')

    # -- the processes -----------------------------------------------------

    def env_for(self, service: str, replica: int = 0) -> dict[str, str]:
        """The compose environment with compose's host names and ports replaced by loopback ones."""
        env = environment(service, SHELL_ENV)
        process = command(service)[-1]
        if "DATABASE_URL" in env:
            role = urlsplit(env["DATABASE_URL"]).username
            env["DATABASE_URL"] = self.admin_url if process == "migrate" else self.role_url(role.removeprefix("loom_"))
        env["LOOM_BIND_HOST"] = "127.0.0.1"
        for other in (*SERVICE_NAMES, "gateway"):
            env[f"LOOM_{other.upper()}_METRICS_PORT"] = "0"
            if other in self.ports:
                env[f"LOOM_{other.upper()}_PORT"] = str(self.ports[other])
            if f"LOOM_{other.upper()}_TARGET" in env:
                env[f"LOOM_{other.upper()}_TARGET"] = self.client_target(other)
        if process in self.ports:
            env[f"LOOM_{process.upper()}_PORT"] = str(self.ports[process] + replica)
        env["LOOM_DATA_DIR"] = str(self.workdir / f"{service}-{replica}")
        env.update(self.extra_env.get(service, {}))
        # `python` is this interpreter, as the image's PATH makes it the virtualenv's
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {"PATH": path, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env}

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "libs.cli", *command("migrate")],
            env=self.env_for("migrate"), cwd=ROOT, check=True, capture_output=True, timeout=120,
        )

    def replica_services(self, process: str) -> list[str]:
        """The compose service each replica of `process` runs as: compose's own, then the first again."""
        services = replicas_of(process)
        return services + services[:1] * max(0, self.replicas - len(services))

    def client_target(self, process: str) -> str:
        count = len(self.replica_services(process))
        if not self.replicas or count == 1:
            return f"127.0.0.1:{self.ports[process]}"
        return "ipv4:" + ",".join(self.target(process, replica) for replica in range(count))

    def start(self, timeout: float = 120) -> None:
        """Every `loom serve` process, keyed by process: its replicas are the compose services running it."""
        for process in PROCESSES:
            # replicas get consecutive ports: as two containers would, on one host
            self.ports[process] = _free_ports(len(self.replica_services(process)))
        for process in PROCESSES:
            self.processes[process] = []
            for replica, service in enumerate(self.replica_services(process)):
                name = service if replica < len(replicas_of(process)) else f"{process}-{replica + 1}"
                self.processes[process].append(
                    Process(
                        name,
                        [sys.executable, "-m", "libs.cli", *command(service)],
                        self.env_for(service, replica),
                        self.workdir / f"{name}.log",
                        service=service,
                    )
                )
            for running in self.processes[process]:
                running.start()
        for replicas in self.processes.values():
            for running in replicas:
                self.wait_healthy(running, timeout)

    def wait_healthy(self, process: Process, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not process.ready():
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not healthy after {timeout}s:\n{process.log()}")
            time.sleep(0.3)

    def target(self, service: str, replica: int = 0) -> str:
        return f"127.0.0.1:{self.ports[service] + replica}"

    def stop(self) -> None:
        for replicas_ in self.processes.values():
            for process in replicas_:
                process.stop()

    def __enter__(self) -> Twin:
        self.provision()
        try:
            self.migrate()
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        self.drop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    for _ in range(50):
        first = free_port()
        if all(port_is_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError("no consecutive free ports")


async def eventually(check, timeout: float = 60.0):
    """check()'s answer once it is True, or its last answer when the deadline passes
    (returned, so the assertion shows what was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome is True or time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(0.5)
