"""Reading docker-compose.yml the way `docker compose` does, for the tests that prove it.

The static tests parse the file and resolve its `${VAR:-default}` interpolation;
the twin runs the same topology as local processes, and test_containers.py runs
it on a Docker engine.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LOOM_IMAGE_ENTRYPOINT = ("python", "-m", "libs.cli")

_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def loom_services() -> dict[str, dict[str, Any]]:
    """The services that run the Loom image (built from the Dockerfile)."""
    return {name: spec for name, spec in services().items() if "build" in spec}


def interpolate(value: str, env: dict[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}` and `${VAR:?error}` as compose resolves them; `$$` is a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name is None:
            return "$"
        present = env.get(name)
        if op in (":-", "-"):
            return present if present not in (None, "") or (op == "-" and present is not None) else arg
        if op in (":?", "?") and not present:
            raise KeyError(f"{name}: {arg}")
        return present or ""

    return _INTERPOLATION.sub(replace, value)


def referenced_variables(value: str) -> set[str]:
    return {m["name"] for m in _INTERPOLATION.finditer(value) if m["name"]}


def environment(service: str, env: dict[str, str]) -> dict[str, str]:
    """A service's environment with interpolation resolved against `env` (the shell's)."""
    declared = services()[service].get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared)
    return {key: interpolate(str(value), env) for key, value in declared.items()}


def command(service: str) -> list[str]:
    value = services()[service].get("command") or []
    return value.split() if isinstance(value, str) else list(value)


def healthcheck_command(service: str) -> list[str] | None:
    test = (services()[service].get("healthcheck") or {}).get("test")
    if not test or test[0] == "NONE":
        return None
    return list(test[1:]) if test[0] == "CMD" else ["sh", "-c", test[1]]


def replicas_of(process: str) -> list[str]:
    """The compose services that run `loom serve <process>`: one per replica (docker-compose
    1.29 ignores `deploy.replicas`, so replicas are services of their own)."""
    return [name for name in loom_services() if command(name) == ["serve", process]]


def replicas(process: str) -> int:
    return len(replicas_of(process))


def dockerfile_copies() -> list[str]:
    """Build-context sources of the Dockerfile's COPY instructions (not --from a stage)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            sources += words[1:-1]
    return sources


def dockerfile_env() -> dict[str, str]:
    """ENV settings of the Dockerfile's final stage."""
    stages = DOCKERFILE.read_text().split("\nFROM ")
    text = stages[-1].replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env
