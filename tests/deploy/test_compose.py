"""docker-compose.yml and the Dockerfile agree with the code they run.

These tests read the files (commands exist in the CLI, every variable set is one
the settings read, every depends_on/healthcheck/volume refers to something real);
test_twin.py runs the same topology as local processes and test_containers.py
on a Docker engine.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from libs.cli import PROCESSES, build_parser
from libs.settings import SERVICE_NAMES, Settings, env_name, settings_classes
from tests.deploy.compose import (
    DOCKERFILE,
    LOOM_IMAGE_ENTRYPOINT,
    ROOT,
    command,
    compose,
    dockerfile_copies,
    dockerfile_env,
    environment,
    healthcheck_command,
    interpolate,
    loom_services,
    referenced_variables,
    replicas,
    replicas_of,
    services,
)

SETTINGS_BY_READER = dict(settings_classes())
SETTINGS_VARIABLES = {env_name(cls, field) for cls in SETTINGS_BY_READER.values() for field in cls.model_fields}
NO_SHELL_ENV: dict[str, str] = {"LOOM_JWT_SECRET": "a-secret-from-the-operators-shell"}
PROVISION_SCRIPT = ROOT / "deploy" / "db" / "provision.sh"


def parses(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def test_every_process_runs_from_the_loom_image_and_scheduler_has_two_replicas():
    running = {command(name)[-1] for name in loom_services() if command(name)[:1] == ["serve"]}
    assert running == set(PROCESSES)
    assert replicas("scheduler") == 2
    assert all(replicas(process) == 1 for process in PROCESSES if process != "scheduler")


def test_scheduler_replicas_are_alike_and_answer_to_one_name():
    first, second = (services()[name] for name in replicas_of("scheduler"))
    assert first == second
    assert "scheduler" in first["networks"]["default"]["aliases"]
    assert "ports" not in first, "two replicas cannot publish the same host port"


def test_the_file_has_no_top_level_name_as_docker_compose_1_29_rejects_it():
    assert set(compose()) <= {"services", "volumes", "networks"} | {k for k in compose() if k.startswith("x-")}


def test_published_ports_bind_to_loopback_unless_told_otherwise():
    for name, spec in services().items():
        for mapping in spec.get("ports", []):
            address, host_port, container_port = interpolate(mapping, {}).split(":")
            assert address == "127.0.0.1", name
            assert interpolate(mapping, {"LOOM_PUBLISH_ADDRESS": "0.0.0.0"}).startswith("0.0.0.0:")
            variable = re.search(r"\$\{(LOOM_HOST_PORT_[A-Z_]+):-", mapping)[1]
            assert interpolate(mapping, {variable: "1"}).split(":")[1] == "1", f"{name}: {variable} moves the host port"


@pytest.mark.parametrize("service", sorted(loom_services()))
def test_command_is_a_loom_cli_command(service):
    assert parses(command(service)), command(service)


@pytest.mark.parametrize("service", sorted(loom_services()))
def test_healthcheck_asks_grpc_health_of_the_process_it_runs(service):
    probe = healthcheck_command(service)
    if command(service) == ["migrate"]:
        assert probe is None, "a one-shot step has no healthcheck"
        return
    assert probe is not None
    assert tuple(probe[:3]) == LOOM_IMAGE_ENTRYPOINT and parses(probe[3:])
    assert probe[3:] == ["health", command(service)[-1]]


def settings_class_of(service: str) -> type[Settings]:
    """The settings class of the process a compose service runs (the base one for `migrate`)."""
    return SETTINGS_BY_READER.get(command(service)[-1], Settings)


@pytest.mark.parametrize("service", sorted(loom_services()))
def test_every_variable_a_loom_service_sets_is_one_its_settings_read(service):
    settings_class = settings_class_of(service)
    read = {env_name(settings_class, field) for field in settings_class.model_fields}
    unknown = set(environment(service, NO_SHELL_ENV)) - read
    assert not unknown, f"{service} sets variables its settings do not read: {sorted(unknown)}"


def test_dockerfile_env_is_read_by_the_settings_or_python():
    loom_variables = {k for k in dockerfile_env() if k not in ("PATH", "PYTHONPATH") and not k.startswith("PYTHON")}
    assert loom_variables <= SETTINGS_VARIABLES, loom_variables - SETTINGS_VARIABLES


@pytest.mark.parametrize("service", sorted(loom_services()))
def test_variable_values_are_valid_settings(service, monkeypatch):
    """The process reads the values: a JSON list where a list is expected, an int for a port..."""
    env = environment(service, NO_SHELL_ENV)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_class_of(service)()
    assert settings.jwt_key == NO_SHELL_ENV["LOOM_JWT_SECRET"]


def test_depends_on_names_real_services_with_conditions_they_can_meet():
    for name, spec in services().items():
        for dependency, rule in (spec.get("depends_on") or {}).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            target = services()[dependency]
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency} to be healthy; it has no healthcheck"
            elif rule["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is waited on to finish but restarts"
            else:
                assert rule["condition"] == "service_started"


def test_long_running_services_restart_and_one_shot_steps_do_not():
    for name, spec in services().items():
        one_shot = name in ("provision", "migrate")
        assert spec.get("restart") == ("no" if one_shot else "unless-stopped"), name


def test_volumes_are_declared_or_files_of_the_repository():
    for name, spec in services().items():
        for mount in spec.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose()["volumes"], f"{name} uses undeclared volume {source}"


def test_postgres_is_16_unless_chosen_with_a_volume_and_a_healthcheck_for_its_own_user_and_database():
    postgres = services()["postgres"]
    assert interpolate(postgres["image"], {}) == "postgres:16"
    assert interpolate(postgres["image"], {"LOOM_POSTGRES_IMAGE": "loom-local/postgres:15"}) == "loom-local/postgres:15"
    assert services()["provision"]["image"] == postgres["image"]
    env = environment("postgres", NO_SHELL_ENV)
    probe = " ".join(healthcheck_command("postgres"))
    assert f"-U {env['POSTGRES_USER']}" in probe and f"-d {env['POSTGRES_DB']}" in probe
    assert any(m.endswith(":/var/lib/postgresql/data") for m in postgres["volumes"])


def test_provisioning_script_covers_every_service_with_the_passwords_the_services_connect_with():
    provision = services()["provision"]
    script = Path(provision["entrypoint"][-1].replace("/deploy/db", str(PROVISION_SCRIPT.parent)))
    assert script == PROVISION_SCRIPT and script.exists()
    looped = re.search(r"for service in ([a-z ]+); do", script.read_text())[1].split()
    assert tuple(looped) == SERVICE_NAMES
    postgres = environment("postgres", NO_SHELL_ENV)
    provision_env = environment("provision", NO_SHELL_ENV)
    assert (provision_env["PGUSER"], provision_env["PGDATABASE"]) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
    assert provision_env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
    for service in SERVICE_NAMES:
        url = urlsplit(environment(service, NO_SHELL_ENV)["DATABASE_URL"])
        assert url.username == f"loom_{service}", "each service connects as its own role"
        assert url.password == provision_env[f"LOOM_{service.upper()}_DB_PASSWORD"]
        assert (url.hostname, url.path) == ("postgres", f"/{postgres['POSTGRES_DB']}")
        shell = {f"LOOM_{service.upper()}_DB_PASSWORD": "from-the-shell", **NO_SHELL_ENV}
        assert urlsplit(environment(service, shell)["DATABASE_URL"]).password == environment("provision", shell)[
            f"LOOM_{service.upper()}_DB_PASSWORD"
        ]


def test_migration_runs_as_the_database_administrator():
    url = urlsplit(environment("migrate", NO_SHELL_ENV)["DATABASE_URL"])
    assert url.username == environment("postgres", NO_SHELL_ENV)["POSTGRES_USER"]


@pytest.mark.parametrize("service", sorted(loom_services()))
def test_targets_name_compose_services_on_their_configured_ports(service):
    env = environment(service, NO_SHELL_ENV)
    for other in SERVICE_NAMES:
        target = env.get(f"LOOM_{other.upper()}_TARGET")
        if target is None:
            continue
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        assert host == other and host in services()
        assert int(port) == Settings().port_of(other)


def test_published_ports_are_the_documented_defaults():
    defaults = Settings()
    for process in PROCESSES:
        spec = services()[process]
        port = defaults.gateway_port if process == "gateway" else defaults.port_of(process)
        exposed = {int(p.split(":")[-1]) for p in spec.get("ports", [])} | {int(p) for p in spec.get("expose", [])}
        assert {port, defaults.metrics_port_of(process)} <= exposed, process


def test_the_jwt_secret_must_come_from_the_operator():
    with pytest.raises(KeyError, match="LOOM_JWT_SECRET"):
        environment("batch", {})
    assert all("LOOM_JWT_SECRET" in referenced_variables(str(spec.get("environment"))) for spec in loom_services().values())


def test_interpolation_follows_compose_rules():
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("a$${B}", {}) == "a${B}"


def test_dockerfile_is_multi_stage_on_a_chosen_base_generates_code_and_runs_unprivileged():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^ARG PYTHON_BUILD_IMAGE=python:3\.11$", text, re.M)
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    named = {name for _, name in stages if name}
    bases = ("${PYTHON_IMAGE}", "${PYTHON_BUILD_IMAGE}")
    assert len(stages) >= 2 and all(image in bases or image in named for image, _ in stages)
    assert stages[-1][0] == "${PYTHON_IMAGE}", "the runtime stage runs on the slim image"
    assert "python -m libs.codegen" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1]
    assert tuple(shlex.split(entrypoint.strip("[]").replace(",", " "))) == LOOM_IMAGE_ENTRYPOINT


def test_dockerfile_builds_on_the_classic_builder_too():
    text = DOCKERFILE.read_text()
    assert "<<" not in text, "heredocs need BuildKit"
    assert not re.search(r"^#\s*syntax=", text, re.M), "a front end pulled from a registry"
    assert not re.search(r"^RUN --mount", text, re.M), "mounts need BuildKit"
    for copy in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        sources = copy.split()[:-1]
        # the classic builder rejects a COPY whose globs all match nothing
        assert not any("[" in s or "*" in s for s in sources) or any("[" not in s and "*" not in s for s in sources), copy


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_local():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "an allow-list keeps .venv, .loom and gen out"
    allowed = {i[1:].rstrip("/") for i in ignore if i.startswith("!")}
    for source in dockerfile_copies():
        optional = "[" in source  # a glob that may match nothing: the wheelhouse
        path = source.replace("[", "").replace("]", "").rstrip("/")
        assert optional or (ROOT / path).exists(), source
        assert any(path == entry or path.startswith(f"{entry}/") for entry in allowed), source
