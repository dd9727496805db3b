"""Driving a real Docker engine: the base images, the Loom image and a compose project.

Used by tests/deploy/test_containers.py and the `deploy.image` benchmark. Every
build is the air-gapped one (docs/deploy.md): local base images from Debian's
packages (deploy/base-images.sh) and the wheelhouse (`make wheelhouse`), so
nothing comes from a container registry or, inside a build, a package index.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from tests.deploy.compose import ROOT, services
from tests.support import free_port

LOOM_TEST_IMAGE = "loom:test"
# The classic builder: what Debian's engine has without buildx, and the harder case for the Dockerfile.
BUILD_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}
# Host ports compose publishes, each under its variable (docker-compose.yml).
HOST_PORT_VARIABLES = tuple(
    f"LOOM_HOST_PORT_{service.upper()}{suffix}"
    for service in ("batch", "rules", "tracking", "gateway")
    for suffix in ("", "_METRICS")
)


class EngineUnavailable(RuntimeError):
    pass


def run(
    argv: list[str], timeout: float = 600, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def ensure_engine() -> None:
    """A Docker engine that answers: installed and started by deploy/docker-engine.sh when missing."""
    if shutil.which("docker") is None and os.geteuid() != 0:
        raise EngineUnavailable("no docker client, and installing one needs root")
    done = run(["sh", "deploy/docker-engine.sh"], timeout=900, check=False)
    if done.returncode != 0:
        raise EngineUnavailable(done.stderr.strip() or done.stdout.strip())


def compose_command() -> list[str]:
    """`docker compose` (v2) where the plugin is installed, else Debian's docker-compose 1.29."""
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def base_images() -> dict[str, str]:
    """Builds (or finds) the local base images; the compose variables that select them
    (LOOM_PYTHON_IMAGE, LOOM_PYTHON_BUILD_IMAGE, LOOM_POSTGRES_IMAGE)."""
    printed = run(["sh", "deploy/base-images.sh", "--print-env"], timeout=1200).stdout
    return dict(line.split("=", 1) for line in printed.split())


def image_build_args(images: dict[str, str]) -> list[str]:
    """The Dockerfile's base-image arguments from those variables."""
    return [
        *("--build-arg", f"PYTHON_IMAGE={images['LOOM_PYTHON_IMAGE']}"),
        *("--build-arg", f"PYTHON_BUILD_IMAGE={images['LOOM_PYTHON_BUILD_IMAGE']}"),
    ]


def wheelhouse() -> None:
    """`make wheelhouse`: a no-op when it is newer than pyproject.toml."""
    run(["make", "--no-print-directory", "wheelhouse", f"PYTHON={sys.executable}"], timeout=900)


def build_loom_image(images: dict[str, str], tag: str = LOOM_TEST_IMAGE) -> float:
    """Builds the Dockerfile with the classic builder on the base images `base_images` chose; seconds taken."""
    started = time.monotonic()
    run(
        ["docker", "build", "--quiet", *image_build_args(images), "-t", tag, "."],
        timeout=1200,
        env=BUILD_ENV,
    )
    return time.monotonic() - started


def image_size_bytes(tag: str) -> int:
    return int(run(["docker", "image", "inspect", "--format", "{{.Size}}", tag]).stdout)


def inspect(container: str) -> dict:
    return json.loads(run(["docker", "inspect", container]).stdout)[0]


def long_running_services() -> list[str]:
    return [name for name, spec in services().items() if spec.get("restart") != "no"]


# What the engine says when a published host port is already bound.
PORT_TAKEN = ("address already in use", "port is already allocated")


@dataclass
class Project:
    """One compose project of docker-compose.yml, on free loopback ports, torn down with `down -v`."""

    images: dict[str, str]
    image: str = LOOM_TEST_IMAGE
    name: str = field(default_factory=lambda: f"loomtest{uuid.uuid4().hex[:8]}")
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    ports: dict[str, int] = field(default_factory=lambda: {v: free_port() for v in HOST_PORT_VARIABLES})

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.images,
            **{variable: str(port) for variable, port in self.ports.items()},
            "LOOM_IMAGE": self.image,
            "LOOM_JWT_SECRET": self.jwt_secret,
            "LOOM_LOG_LEVEL": "warning",
        }

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['LOOM_HOST_PORT_GATEWAY']}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return run([*compose_command(), "-p", self.name, *args], timeout=timeout, env=self.env, check=check)

    def up(self, attempts: int = 3) -> None:
        """`up -d`; when another process took a chosen host port between choosing and binding
        it (the machine is shared), the project comes down and up again on fresh ports."""
        for attempt in range(1, attempts + 1):
            done = self.compose("up", "-d", "--no-build", timeout=900, check=False)
            if done.returncode == 0:
                return
            taken = any(sign in done.stderr for sign in PORT_TAKEN)
            if not taken or attempt == attempts:
                raise RuntimeError(f"compose up exited {done.returncode}:\n{done.stderr[-3000:]}")
            self.down()
            self.ports = {variable: free_port() for variable in HOST_PORT_VARIABLES}

    def container(self, service: str) -> str:
        """The id of the service's container (every service here has one)."""
        ids = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}",
                   "--filter", f"label=com.docker.compose.service={service}"]).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def health(self, service: str) -> str:
        state = inspect(self.container(service))["State"]
        return state["Health"]["Status"] if "Health" in state else state["Status"]

    def wait_healthy(self, timeout: float = 300) -> float:
        """Seconds until every long-running service's healthcheck passes."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            states = {service: self.health(service) for service in long_running_services()}
            if all(state == "healthy" for state in states.values()):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout}s: {states}\n{self.logs()}")
            time.sleep(1)

    def token(self, role: str = "admin") -> str:
        """A bearer token, minted the documented way: `compose run --rm migrate token`."""
        done = self.compose("run", "--rm", "--no-deps", "migrate", "token", "--role", role, timeout=180)
        return done.stdout.strip().splitlines()[-1]

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "30", check=False).stdout[-12000:]

    def resources(self) -> dict[str, list[str]]:
        """What the engine holds for this project: containers, networks, volumes."""
        label = f"label=com.docker.compose.project={self.name}"
        return {
            "containers": run(["docker", "ps", "-aq", "--filter", label]).stdout.split(),
            "networks": run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split(),
            "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split(),
        }

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300, check=False)
