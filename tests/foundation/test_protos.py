"""The protos are the single source of truth: linted, annotated, and generated code current."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pool
from loom.common.v1 import access_pb2

from libs.audit import audited
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


@pytest.mark.parametrize(("service", "method"), _methods(), ids=lambda x: getattr(x, "name", x))
def test_the_declared_effect_agrees_with_the_route_and_the_request(service, method):
    """Reads (GET routes, streams) declare EFFECT_READ so they are not audited; a method
    whose request requires an idempotency key changes state and is audited."""
    rule = access_rule(f"/{service}/{method.name}")
    route = method.GetOptions().Extensions[annotations_pb2.http]
    request_id = method.input_type.fields_by_name.get("request_id")
    if route.get or method.server_streaming:
        assert rule.effect == access_pb2.EFFECT_READ, f"{method.full_name} reads: declare effect EFFECT_READ"
    if request_id is not None and field_behavior_pb2.REQUIRED in request_id.GetOptions().Extensions[
        field_behavior_pb2.field_behavior
    ]:
        assert audited(rule), f"{method.full_name} takes an idempotency key: it changes state and must be audited"


def test_every_proto_file_is_compiled():
    generated = {p.name for p in (PROTO_ROOT.parent / "gen").rglob("*_pb2.py")}
    assert {p.stem + "_pb2.py" for p in loom_protos()} <= generated


def test_codegen_check_command_exits_zero_when_current():
    result = subprocess.run([sys.executable, "-m", "libs.codegen", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _loom_files_with_comments():
    from libs.codegen import descriptor_set

    return [f for f in descriptor_set(include_imports=False, source_info=True).file if f.name.startswith("loom/")]


def _undocumented(file) -> list[str]:
    """Fields, RPCs and enum values of file that have no leading comment (paths per descriptor.proto)."""
    commented = {tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()}
    missing = []

    def fields_of(message, path, name):
        for i, field in enumerate(message.field):
            if (*path, 2, i) not in commented:
                missing.append(f"{name}.{field.name}")
        for i, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:
                fields_of(nested, (*path, 3, i), f"{name}.{nested.name}")

    for i, message in enumerate(file.message_type):
        fields_of(message, (4, i), message.name)
    for s, service in enumerate(file.service):
        missing += [f"{service.name}.{m.name}" for i, m in enumerate(service.method) if (6, s, 2, i) not in commented]
    for e, enum in enumerate(file.enum_type):
        missing += [f"{enum.name}.{v.name}" for i, v in enumerate(enum.value) if (5, e, 2, i) not in commented]
    return missing


def test_every_field_rpc_and_enum_value_is_documented():
    missing = [f"{file.name}: {name}" for file in _loom_files_with_comments() for name in _undocumented(file)]
    assert missing == []


def test_the_comment_check_notices_an_undocumented_field():
    from google.protobuf import descriptor_pb2

    file = next(f for f in _loom_files_with_comments() if f.name.endswith("batch.proto"))
    stripped = descriptor_pb2.FileDescriptorProto()
    stripped.CopyFrom(file)
    del stripped.source_code_info.location[:]
    assert "PlaceOrderRequest.quantity" in _undocumented(stripped)


def test_comments_name_the_setting_rather_than_hard_code_a_configurable_value():
    """The share limit and retention are configuration; the contract names the setting."""
    text = (PROTO_ROOT / "loom/tracking/v1/tracking.proto").read_text()
    assert "10 per hour" not in text and "LOOM_SHARE_LIMIT_PER_HOUR" in text


def test_request_ids_are_documented_as_aip_155_idempotency_keys():
    request_ids = [
        (file.name, location.leading_comments)
        for file in _loom_files_with_comments()
        for message_index, message in enumerate(file.message_type)
        for field_index, field in enumerate(message.field)
        if field.name == "request_id"
        for location in file.source_code_info.location
        if tuple(location.path) == (4, message_index, 2, field_index)
    ]
    assert request_ids
    assert all("AIP-155" in comment and "first answer" in comment for _, comment in request_ids)


def test_one_folder_holds_every_proto_a_client_needs():
    """Every import resolves inside protos/ except protobuf's own well-known types."""
    from libs.codegen import descriptor_set

    names = {f.name for f in descriptor_set().file}
    for needed in ("google/rpc/error_details.proto", "grpc/health/v1/health.proto", "buf/validate/validate.proto"):
        assert (PROTO_ROOT / needed).exists() and needed in names
    outside = {n for n in names if not (PROTO_ROOT / n).exists()}
    assert all(n.startswith("google/protobuf/") for n in outside), outside


def test_a_vendored_proto_that_drifts_from_its_wheel_is_reported(tmp_path, monkeypatch):
    """health.proto and validate.proto ship only compiled in their wheels: descriptors are compared."""
    import shutil

    import libs.codegen as codegen

    copy = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, copy)
    health = copy / codegen.HEALTH_PROTO
    health.write_text(health.read_text().replace("  rpc List(HealthListRequest) returns (HealthListResponse);\n", ""))
    monkeypatch.setattr(codegen, "PROTO_ROOT", copy)
    assert codegen.drifted_vendored_protos() == [codegen.HEALTH_PROTO]
