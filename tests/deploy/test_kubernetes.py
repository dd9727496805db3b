"""deploy/kubernetes/ agrees with the code it runs, as test_compose.py checks the compose file:
Kubernetes' own schemas (kubernetes-validate, offline), real CLI commands and settings,
ports and probes, headless Services, secrets, disruption budgets, network policies that
admit exactly the gateway and the services whose code calls each service, and a
connection budget that fits PostgreSQL's default max_connections. No cluster runs here.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from libs import connection_budget as cb
from libs.cli import PROCESSES
from libs.settings import SERVICE_NAMES, Settings, env_name
from tests.deploy.kubernetes import (
    KUBERNETES,
    code_callers,
    container,
    declared_service_callers,
    documents,
    environment,
    generated_secret_keys,
    kustomization,
    of_kind,
)
from tests.deploy.test_compose import SETTINGS_BY_READER, parses

# The oldest release these manifests are written for: native gRPC probes are GA from 1.27.
KUBERNETES_VERSION = "1.29.0"
DEFAULTS = Settings()
PLACEHOLDER_SECRETS = {"LOOM_JWT_SECRET": "a-secret-from-the-cluster", "DATABASE_URL": "postgresql://u:p@db:5432/loom"}


def settings_class(process: str) -> type[Settings]:
    return SETTINGS_BY_READER.get(process, Settings)


def workloads() -> dict[str, dict]:
    return {**of_kind("Deployment"), **of_kind("Job")}


@pytest.mark.parametrize("document", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_object_is_valid_against_the_kubernetes_schema(document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_and_sets_the_one_image_every_container_runs():
    listed = set(kustomization()["resources"])
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    (image,) = kustomization()["images"]
    assert {container(w)["image"] for w in workloads().values()} == {image["name"]}


def test_a_deployment_per_process_runs_its_loom_serve_command_and_two_schedulers():
    deployments = of_kind("Deployment")
    assert set(deployments) == set(PROCESSES)
    for name, deployment in deployments.items():
        assert container(deployment)["args"] == ["serve", name] and parses(container(deployment)["args"])
    assert deployments["scheduler"]["spec"]["replicas"] == 2
    assert all(d["spec"]["replicas"] >= 2 for d in deployments.values()), "every process survives losing a pod"


def test_the_migrate_job_runs_the_migrate_command_as_the_administrator():
    job = of_kind("Job")["migrate"]
    assert parses(container(job)["args"]) and container(job)["args"] == ["migrate"]
    assert environment(job)[1]["DATABASE_URL"] == ("loom-database", "admin")


@pytest.mark.parametrize("name", sorted(PROCESSES) + ["migrate"])
def test_every_variable_is_a_setting_its_process_reads_with_a_valid_value(name, monkeypatch):
    literal, secret = environment(workloads()[name])
    cls = settings_class(name)
    read = {env_name(cls, field) for field in cls.model_fields}
    assert not (set(literal) | set(secret)) - read, f"{name} sets variables its settings do not read"
    for variable, value in {**literal, **{v: PLACEHOLDER_SECRETS[v] for v in secret}}.items():
        monkeypatch.setenv(variable, value)
    cls()


@pytest.mark.parametrize("name", sorted(PROCESSES) + ["migrate"])
def test_secrets_come_from_generated_secrets_with_those_keys(name):
    literal, secret = environment(workloads()[name])
    assert not {"LOOM_JWT_SECRET", "DATABASE_URL"} & set(literal), "secrets are never literal values"
    keys = generated_secret_keys()
    for secret_name, key in secret.values():
        assert key in keys[secret_name], f"{name}: {secret_name} has no key {key}"
    if name in SERVICE_NAMES:
        assert secret["DATABASE_URL"] == ("loom-database", name), "each service connects as its own role"
    if name != "migrate":
        assert secret["LOOM_JWT_SECRET"] == ("loom-jwt", "secret")


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_ports_are_the_settings_and_the_probes_ask_the_process_itself(name):
    spec = container(of_kind("Deployment")[name])
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports["metrics"] == DEFAULTS.metrics_port_of(name)
    probes = [spec[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")]
    if name == "gateway":
        assert ports["http"] == DEFAULTS.gateway_port
        assert all(p["httpGet"] == {"path": "/healthz", "port": "http"} for p in probes)
    else:
        assert ports["grpc"] == DEFAULTS.port_of(name)
        assert all(p["grpc"] == {"port": DEFAULTS.port_of(name)} for p in probes), "native gRPC health checks"


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES))
def test_services_are_headless_on_the_grpc_port_and_the_targets_name_them(name):
    service = of_kind("Service")[name]
    assert service["spec"]["clusterIP"] == "None", "clients balance per call over every pod (dns:///)"
    assert service["spec"]["selector"] == of_kind("Deployment")[name]["spec"]["selector"]["matchLabels"]
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["port"] == DEFAULTS.port_of(name) and grpc_port["targetPort"] == "grpc"
    literal, _ = environment(of_kind("Deployment")["gateway"])
    assert literal[f"LOOM_{name.upper()}_TARGET"] == f"dns:///{name}:{DEFAULTS.port_of(name)}"


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_every_deployment_has_a_disruption_budget_and_resource_requests(name):
    deployment = of_kind("Deployment")[name]
    budget = of_kind("PodDisruptionBudget")[name]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a node can be drained"
    requests = container(deployment)["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests) and "memory" in container(deployment)["resources"]["limits"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > DEFAULTS.shutdown_grace_seconds, "SIGTERM drains in-flight calls before the kill"


def ingress_sources(name: str) -> dict[str, set[str]]:
    """port name -> the pods (by name label) or namespaces a NetworkPolicy lets reach `name`;
    '*' for anyone."""
    policy = of_kind("NetworkPolicy")[name]
    assert policy["spec"]["podSelector"] == of_kind("Deployment")[name]["spec"]["selector"]
    sources: dict[str, set[str]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            allowed = sources.setdefault(port["port"], set())
            for peer in rule.get("from", [{"*": None}]):
                if "podSelector" in peer:
                    assert "namespaceSelector" not in peer
                    allowed.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
                elif "namespaceSelector" in peer:
                    allowed.add("namespace:" + peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
                else:
                    allowed.add("*")
    return sources


def test_ingress_is_denied_unless_a_policy_admits_it():
    deny = of_kind("NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES))
def test_only_the_gateway_and_the_services_that_call_it_reach_a_service(name):
    sources = ingress_sources(name)
    assert sources["grpc"] == {"gateway"} | code_callers()[name]
    assert sources["metrics"] == {"namespace:monitoring"}
    declared = declared_service_callers(name)
    assert declared is None or code_callers()[name] <= declared, "every caller is one the protos admit"


def test_the_peers_read_from_the_code_are_the_known_call_graph():
    """A guard on the derivation itself: a service that starts calling another shows up here."""
    assert code_callers() == {
        "batch": {"rules", "scheduler"},
        "rules": {"batch", "scheduler"},
        "tracking": {"rules", "scheduler"},
        "scheduler": {"rules"},
    }


def test_the_gateway_is_open_to_its_clients_and_nothing_else_is():
    assert ingress_sources("gateway") == {"http": {"*"}, "metrics": {"namespace:monitoring"}}


def test_the_replicas_fit_postgres_default_max_connections(monkeypatch):
    topology = {name: d["spec"]["replicas"] for name, d in of_kind("Deployment").items()}
    settings = {}
    for name in topology:
        literal, secret = environment(of_kind("Deployment")[name])
        with pytest.MonkeyPatch.context() as patch:
            for variable, value in {**literal, **{v: PLACEHOLDER_SECRETS[v] for v in secret}}.items():
                patch.setenv(variable, value)
            settings[name] = settings_class(name)()
    budget = cb.budget(topology, settings, max_connections=100, server_reserved=3)
    assert budget.fits, budget.explain()
