"""Reading deploy/kubernetes/ for the tests that check it (no cluster runs here), and who
calls whom, read from the code and the protos, for its NetworkPolicies."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from libs.auth import access_rule
from libs.settings import SERVICE_NAMES
from services.scheduler.domain.catalogue import JOBS
from services.scheduler.targets import declared_targets, schedulable_targets
from tests.deploy.compose import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
SECRETS = KUBERNETES / "secrets"
SERVICE_ROLE = 4  # loom.common.v1.Role.ROLE_SERVICE


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


@cache
def documents() -> list[dict[str, Any]]:
    """Every object the kustomization's resources declare, in order."""
    found = []
    for name in kustomization()["resources"]:
        found += [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]
    return found


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def generated_secret_keys() -> dict[str, set[str]]:
    """The keys of each secretGenerator secret, from its *.env.example (the *.env are the operator's)."""
    keys = {}
    for generator in kustomization()["secretGenerator"]:
        names: set[str] = set()
        for env_file in generator["envs"]:
            example = KUBERNETES / f"{env_file}.example"
            for line in example.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    names.add(line.split("=", 1)[0])
        keys[generator["name"]] = names
    return keys


def environment(workload: dict[str, Any]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A workload's literal variables (its ConfigMaps' and its own) and those from secrets (name -> (secret, key))."""
    spec = container(workload)
    configmaps = of_kind("ConfigMap")
    literal: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        literal.update(configmaps[source["configMapRef"]["name"]]["data"])
    secret: dict[str, tuple[str, str]] = {}
    for variable in spec.get("env", []):
        if "value" in variable:
            literal[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            secret[variable["name"]] = (ref["name"], ref["key"])
    return literal, secret


def code_callers() -> dict[str, set[str]]:
    """callee -> the services whose code calls it: `clients.<service>` in a service's code,
    and the scheduler's jobs (its catalogue and every schedulable RPC)."""
    callers: dict[str, set[str]] = {service: set() for service in SERVICE_NAMES}
    pattern = re.compile(r"clients\.(" + "|".join(SERVICE_NAMES) + r")\b")
    for caller in SERVICE_NAMES:
        for path in Path(ROOT / "services" / caller).rglob("*.py"):
            for callee in pattern.findall(path.read_text()):
                callers[callee].add(caller)
    for callee in {t.service for t in schedulable_targets()} | {job.service for job in JOBS.values() if job.service}:
        callers[callee].add("scheduler")
    for callers_of in callers.values():
        callers_of.discard("gateway")
    return callers


def declared_service_callers(callee: str) -> set[str] | None:
    """The services the protos let call some RPC of `callee` with their own identity;
    None: any service (some RPC admits the service role without naming services)."""
    allowed: set[str] = set()
    for target in declared_targets().values():
        if target.service != callee:
            continue
        rule = access_rule(f"/{target.name}")
        if rule is None or SERVICE_ROLE not in rule.roles:
            continue
        if not rule.services:
            return None
        allowed |= set(rule.services)
    return allowed
