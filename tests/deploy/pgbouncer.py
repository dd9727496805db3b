"""Debian's PgBouncer in front of the test PostgreSQL, as docs/deploy.md places it.

One PgBouncer, several databases in front of the same PostgreSQL database, each with its
pool mode: `transaction` for the services without session state (batch, rules, tracking),
`session` for the scheduler (advisory locks held across transactions, LISTEN). `make test`
installs the package (Makefile: $(PGBOUNCER)); the fixture runs that target when it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from libs.db import async_url
from libs.scratch_db import ROOT, plain_url
from tests.support import free_port

PGBOUNCER = Path("/usr/sbin/pgbouncer")
START_TIMEOUT_SECONDS = 15.0


def ensure_installed() -> Path:
    """The pgbouncer binary, installed with the Makefile's recipe (Debian's package) when missing."""
    if not PGBOUNCER.exists() and os.geteuid() == 0:
        subprocess.run(["make", "-s", str(PGBOUNCER)], cwd=ROOT, check=True, timeout=600)
    if not PGBOUNCER.exists():
        raise FileNotFoundError(f"{PGBOUNCER} is missing: apt-get install -y pgbouncer (make test installs it)")
    return PGBOUNCER


class PgBouncer:
    """A PgBouncer on a free loopback port; `databases` maps each of its database names to a
    pool mode and size, all of them in front of `database_url`'s database."""

    def __init__(self, database_url: str, databases: dict[str, tuple[str, int]]) -> None:
        self.port = free_port()
        self.databases = databases
        self._server = conninfo_to_dict(plain_url(async_url(database_url)))
        self._dir = Path(tempfile.mkdtemp(prefix="loom-pgbouncer-"))
        self._process: subprocess.Popen | None = None

    def url(self, database: str) -> str:
        """What a client connects to (auth_type=any: the server-side user is the configured one)."""
        return f"postgresql://loom@127.0.0.1:{self.port}/{database}"

    def _config(self) -> str:
        server = " ".join(
            f"{key}={value}" for key, value in self._server.items() if key in ("host", "port", "user", "password")
        )
        lines = ["[databases]"]
        for name, (mode, size) in self.databases.items():
            lines.append(f"{name} = {server} dbname={self._server['dbname']} pool_mode={mode} pool_size={size}")
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            # Loopback only, and a test: clients log in as anyone; PgBouncer logs in to the server as `user` above.
            "auth_type = any",
            "max_client_conn = 1000",
            # Session pools hand a server connection back with DISCARD ALL: a replica's advisory
            # locks and LISTENs end with its client connection, as they would end with a direct one.
            "server_reset_query = DISCARD ALL",
            "ignore_startup_parameters = extra_float_digits",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
        return "\n".join(lines) + "\n"

    def _run_as(self) -> list[str]:
        """PgBouncer refuses to run as root: run it as the owner of the server's socket
        directory (the embedded server's user), or nobody."""
        if os.geteuid() != 0:
            return []
        host = str(self._server.get("host", ""))
        user = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
        return ["-u", user]

    def start(self) -> PgBouncer:
        config = self._dir / "pgbouncer.ini"
        config.write_text(self._config())
        self._dir.chmod(0o755)
        config.chmod(0o644)
        self._process = subprocess.Popen(
            [str(ensure_installed()), *self._run_as(), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(self._dir / "pgbouncer.log").open("w"),
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        first = next(iter(self.databases))
        while True:
            try:
                with psycopg.connect(self.url(first), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        path = self._dir / "pgbouncer.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
