"""The `loom` command: run the suite, one service, migrations, or mint a token."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
import time
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs import tls
from libs.auth import ROLES_BY_NAME, mint_token
from libs.replicas import MAX_REPLICAS, PROCESSES, Instance, instance_env, instances
from libs.settings import SERVICE_NAMES, Settings

OPERATOR_IDENTITY = "loom"
READY_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)


def resolve_database_url(settings: Settings) -> str:
    from libs.db import (
        embedded_server_url,  # imported here: `loom health` (every few seconds in a container) needs no database code
    )

    return settings.database_url or embedded_server_url(settings.data_dir)


def migrate(database_url: str, services: tuple[str, ...] = SERVICE_NAMES) -> None:
    from libs import migrations  # imported here, as libs.db above

    for service in services:
        if migrations.has_migrations(service):
            migrations.upgrade(database_url, service)


async def is_serving(
    name: str, settings: Settings, http: httpx.AsyncClient, timeout: float = 2.0, *, port: int | None = None
) -> bool:
    """Whether the local process `name` (on `port`, else its configured one) answers its health
    check: grpc.health.v1, or the gateway's /healthz."""
    if name == "gateway":
        scheme = "https" if settings.tls_cert_file else "http"
        try:
            reply = await http.get(f"{scheme}://127.0.0.1:{port or settings.gateway_port}/healthz", timeout=timeout)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200
    target = f"127.0.0.1:{port or settings.port_of(name)}"
    credentials = tls.channel_credentials(settings)
    channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


class Suite:
    """Runs every service and the gateway (`replicas` of each, see libs/replicas.py) as child
    processes and keeps them running."""

    def __init__(self, settings: Settings, env: dict[str, str], tls_dir: Path | None = None, replicas: int = 1) -> None:
        self.settings, self.env, self.tls_dir, self.replicas = settings, env, tls_dir, replicas
        self.instances = {instance.name: instance for instance in instances(replicas)}
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.instances, 0)
        self.stopping = asyncio.Event()

    async def spawn(self, name: str) -> None:
        instance = self.instances[name]
        env = {**self.env, **instance_env(instance, self.settings, self.replicas)}
        if self.tls_dir:
            env.update(tls.tls_env(self.tls_dir, instance.process))  # replicas share their process's identity
        self.children[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{instance.process}", env=env
        )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        pending = set(self.instances)
        async with http_client(self.settings) as http:
            while pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {READY_TIMEOUT_SECONDS:.0f}s: {', '.join(sorted(pending))}")
                for name in sorted(pending):
                    if self.children[name].returncode is not None:
                        raise RuntimeError(f"{name} exited with code {self.children[name].returncode} while starting")
                    if await self._is_ready(name, http):
                        pending.discard(name)
                await asyncio.sleep(0.2)

    async def _is_ready(self, name: str, http: httpx.AsyncClient) -> bool:
        instance = self.instances[name]
        return await is_serving(instance.process, self.settings, http, port=instance.port(self.settings))

    async def supervise(self) -> None:
        """Restarts a child that dies on its own, with growing pauses, until asked to stop."""
        while not self.stopping.is_set():
            waits = {asyncio.ensure_future(child.wait()): name for name, child in self.children.items()}
            stop = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
            for future in waits:
                future.cancel()
            stop.cancel()
            if self.stopping.is_set():
                return
            for future in done:
                name = waits.get(future)
                if name is None:
                    continue
                pause = RESTART_BACKOFF_SECONDS[min(self.restarts[name], len(RESTART_BACKOFF_SECONDS) - 1)]
                print(f"loom: {name} exited with code {future.result()}; restarting in {pause}s", file=sys.stderr)
                self.restarts[name] += 1
                await asyncio.sleep(pause)
                await self.spawn(name)

    async def stop(self) -> None:
        for child in self.children.values():
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_grace_seconds + 5
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(c.wait() for c in self.children.values()))
        except TimeoutError:
            for child in self.children.values():
                if child.returncode is None:
                    child.kill()
            await asyncio.gather(*(c.wait() for c in self.children.values()))


def http_client(settings: Settings) -> httpx.AsyncClient:
    """An HTTP client that trusts the suite's CA when TLS is configured."""
    if not settings.tls_ca_file:
        return httpx.AsyncClient()
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(settings.tls_ca_file)))


def make_certs(directory: Path, hosts: tuple[str, ...] = ()) -> None:
    """The development CA (kept when it exists) and a fresh certificate per process."""
    if not (directory / tls.CA_NAMES[0]).exists():
        tls.make_ca(directory)
    for name in (*PROCESSES, OPERATOR_IDENTITY):
        tls.make_certificate(directory, name, hosts=hosts)


async def run_suite(
    settings: Settings,
    database_url: str,
    tls_dir: Path | None = None,
    pool_env: dict[str, str] | None = None,
    replicas: int = 1,
) -> int:
    env = {**os.environ, "DATABASE_URL": database_url, "LOOM_JWT_SECRET": settings.jwt_key, **(pool_env or {})}
    if tls_dir is not None:
        settings = settings.model_copy(update=tls.tls_settings(tls_dir, OPERATOR_IDENTITY))
    suite = Suite(settings, env, tls_dir, replicas)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, suite.stopping.set)
    for name in suite.instances:
        await suite.spawn(name)
    try:
        ready = asyncio.ensure_future(suite.wait_ready())
        stop = asyncio.ensure_future(suite.stopping.wait())
        await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()
            print(ready_banner(settings, list(suite.instances.values())), flush=True)
            await suite.supervise()
        else:
            ready.cancel()
            stop.cancel()
    except RuntimeError as error:
        print(f"loom: {error}", file=sys.stderr)
        return 1
    finally:
        await suite.stop()
    print("loom: stopped", file=sys.stderr)
    return 0


def ready_banner(settings: Settings, running: list[Instance] | None = None) -> str:
    lines = ["", "Loom is up" + (" (mutual TLS on every gRPC hop, HTTPS):" if settings.tls_cert_file else ":")]
    scheme = "https" if settings.tls_cert_file else "http"
    for instance in running or instances(1):
        port, metrics = instance.port(settings), instance.metrics_port(settings)
        if instance.process == "gateway":
            lines.append(f"  {instance.name:<11} {scheme}://127.0.0.1:{port}/  (GET /healthz, /openapi.json)")
        else:
            lines.append(f"  {instance.name:<11} grpc 127.0.0.1:{port:<6} metrics :{metrics}")
    lines.append("  admin token: loom token --role admin        Ctrl-C stops everything.")
    return "\n".join(lines)


def tls_dir_of(settings: Settings) -> Path:
    return settings.data_dir / "tls"


def cmd_up(args: argparse.Namespace) -> int:
    settings = Settings()
    tls_dir = None
    if args.tls:
        tls_dir = tls_dir_of(settings)
        if not all((tls_dir / f"{name}.pem").exists() for name in (*PROCESSES, OPERATOR_IDENTITY)):
            make_certs(tls_dir)
    database_url = resolve_database_url(settings)
    migrate(database_url)
    try:
        pool_env = sized_pools(settings, database_url, args.replicas)
    except ValueError as error:  # connection_budget.BudgetExceeded
        print(f"loom: {error}", file=sys.stderr)
        return 1
    return asyncio.run(run_suite(settings, database_url, tls_dir, pool_env, args.replicas))


def sized_pools(settings: Settings, database_url: str, replicas: int = 1) -> dict[str, str]:
    """Each child's pool, sized so that the whole suite fits the server's max_connections."""
    from libs import connection_budget  # imported here, as libs.db above

    pool_env = connection_budget.suite_pool_env(database_url, replicas)
    if pool_env != {"LOOM_DB_POOL_SIZE": str(settings.db_pool_size), "LOOM_DB_MAX_OVERFLOW": str(settings.db_max_overflow)}:
        print(
            f"loom: pools of {pool_env['LOOM_DB_POOL_SIZE']} + {pool_env['LOOM_DB_MAX_OVERFLOW']} overflow per process "
            "to fit the server's max_connections (docs/deploy.md: the connection budget)",
            file=sys.stderr,
        )
    return pool_env


def cmd_certs(args: argparse.Namespace) -> int:
    directory = args.dir or tls_dir_of(Settings())
    make_certs(directory, tuple(args.host))
    print(f"certificates for {', '.join((*PROCESSES, OPERATOR_IDENTITY))} signed by {directory / tls.CA_NAMES[0]}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    unknown = set(args.services) - set(SERVICE_NAMES)
    if unknown:
        print(f"loom: unknown service(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    settings = Settings()
    migrate(resolve_database_url(settings), tuple(args.services or SERVICE_NAMES))
    print("migrated: " + ", ".join(args.services or SERVICE_NAMES))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = Settings()
    subject = args.subject or args.role
    print(mint_token(settings.jwt_key, subject=subject, role=args.role, ttl_seconds=args.ttl, issuer=settings.jwt_issuer))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    os.execv(sys.executable, [sys.executable, "-m", f"services.{args.service}"])
    return 0  # pragma: no cover - execv does not return


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the service on this host reports SERVING (container healthchecks)."""

    async def check() -> bool:
        settings = Settings()
        async with http_client(settings) as http:
            return await is_serving(args.service, settings, http, timeout=args.timeout)

    serving = asyncio.run(check())
    print(f"{args.service}: {'SERVING' if serving else 'NOT SERVING'}")
    return 0 if serving else 1


def _replica_count(value: str) -> int:
    count = int(value)
    if not 1 <= count <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_REPLICAS}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loom", description="Run and operate the Loom services.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run every service and the gateway (embedded PostgreSQL unless DATABASE_URL)")
    up.add_argument("--tls", action="store_true", help="mutual TLS on every gRPC hop and HTTPS (`loom certs` if needed)")
    up.add_argument(
        "--replicas", type=_replica_count, default=1, metavar="N",
        help=f"N (1-{MAX_REPLICAS}) of batch, rules, tracking and the gateway, two schedulers; replica i listens on "
        "the configured port + 10 x i (default: 1)",
    )
    certs = commands.add_parser("certs", help="make a development CA and a certificate per process")
    certs.add_argument("--dir", type=Path, help="where (default: <data dir>/tls); an existing CA there is kept")
    certs.add_argument("--host", action="append", default=[], help="another DNS name every certificate carries")
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=PROCESSES)
    migrate_cmd = commands.add_parser("migrate", help="apply every service's migrations")
    migrate_cmd.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(SERVICE_NAMES)}")
    token = commands.add_parser("token", help="mint a bearer token for development")
    token.add_argument("--role", required=True, choices=sorted(ROLES_BY_NAME))
    token.add_argument("--subject", help="the token's subject (default: the role name)")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default: a day)")
    health = commands.add_parser("health", help="exit 0 when the local service answers its health check")
    health.add_argument("service", choices=PROCESSES)
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default: 3)")
    return parser


COMMANDS = {
    "up": cmd_up, "certs": cmd_certs, "serve": cmd_serve, "migrate": cmd_migrate, "token": cmd_token, "health": cmd_health,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(COMMANDS[args.command](args))


if __name__ == "__main__":
    main()
