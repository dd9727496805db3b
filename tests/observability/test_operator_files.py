"""The alert rules and dashboards name only metrics Loom exports."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from libs.scratch_db import ROOT

OBSERVABILITY = Path(ROOT) / "deploy/observability"
MODULES = (
    "libs.interceptor", "services.gateway.app", "services.batch.metrics", "services.rules.metrics",
    "services.tracking.metrics", "services.scheduler.metrics", "services.scheduler.runner", "services.scheduler.leader",
)
METRIC = re.compile(r"\b(loom_[a-z_]+)\b")


def exported_names() -> set[str]:
    for module in MODULES:
        importlib.import_module(module)
    names = set()
    for collector in list(REGISTRY._collector_to_names):  # every registered metric family
        for metric in collector.describe() if hasattr(collector, "describe") else collector.collect():
            names.add(metric.name)
            names.update(f"{metric.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum", "_created"))
    return names


def expressions() -> list[tuple[str, str]]:
    found = [(f"alerts.yml {rule['alert']}", rule["expr"])
             for group in yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"] for rule in group["rules"]]
    for board in sorted((OBSERVABILITY / "dashboards").glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            found += [(f"{board.name} {panel['title']}", target["expr"]) for target in panel["targets"]]
    return found


@pytest.mark.parametrize(("where", "expression"), expressions(), ids=lambda value: str(value)[:60])
def test_every_metric_an_operator_file_names_is_exported(where, expression):
    missing = set(METRIC.findall(expression)) - exported_names()
    assert not missing, f"{where} names metrics nothing exports: {sorted(missing)}"
