"""The protos are the single source of truth: linted, annotated, and generated code current."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool

from libs.auth import access_rule
from libs.codegen import PROTO_ROOT, drifted_vendored_protos, loom_protos, stale_files

LOOM_SERVICES = (
    "loom.batch.v1.BatchService",
    "loom.rules.v1.RulesService",
    "loom.tracking.v1.TrackingService",
    "loom.scheduler.v1.SchedulerService",
)


def _methods():
    import libs.clients  # noqa: F401 - imports every generated service module

    pool = descriptor_pool.Default()
    return [(s, m) for s in LOOM_SERVICES for m in pool.FindServiceByName(s).methods]


def test_buf_lint_is_clean():
    buf = Path(sysconfig.get_paths()["scripts"]) / "buf"
    result = subprocess.run([buf, "lint"], cwd=PROTO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_matches_the_protos():
    assert stale_files() == [], "gen/ is stale or hand-edited: run `make gen`"


def test_vendored_google_protos_match_googleapis_common_protos():
    assert drifted_vendored_protos() == []


def test_codegen_check_fails_on_a_stale_file(tmp_path, monkeypatch):
    import libs.codegen as codegen

    monkeypatch.setattr(codegen, "GEN_ROOT", tmp_path)
    codegen.generate(tmp_path)
    victim = next(tmp_path.rglob("batch_pb2.py"))
    victim.write_text(victim.read_text() + "\n# hand edit\n")
    assert codegen.stale_files() == [str(victim.relative_to(tmp_path))]


@pytest.mark.parametrize(("service", "method"), _methods(), ids=lambda x: getattr(x, "name", x))
def test_every_rpc_declares_its_http_route_and_access(service, method):
    options = method.GetOptions()
    assert options.HasExtension(annotations_pb2.http), f"{method.full_name} lacks google.api.http"
    rule = access_rule(f"/{service}/{method.name}")
    assert rule is not None and (rule.roles or rule.allow_anonymous), f"{method.full_name} lacks an access rule"


def test_every_proto_file_is_compiled():
    generated = {p.name for p in (PROTO_ROOT.parent / "gen").rglob("*_pb2.py")}
    assert {p.stem + "_pb2.py" for p in loom_protos()} <= generated


def test_codegen_check_command_exits_zero_when_current():
    result = subprocess.run([sys.executable, "-m", "libs.codegen", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
