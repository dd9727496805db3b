"""The one table that turns domain errors into gRPC statuses (libs.errors), and the
domain modules that must stay free of transport."""

import ast
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from libs.domain_errors import DomainError, FailedPrecondition, NotFound
from libs.errors import register_status, status_code_of, status_of

ROOT = Path(__file__).resolve().parents[2]


def unpacked(status, message_type):
    found = []
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            found.append(message)
    return found


class RuleMissing(NotFound):
    pass


class QuotaFrozen(DomainError):
    pass


def test_a_subclass_maps_as_its_kind_does():
    status = status_of(RuleMissing("rule", "r-1"))
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert status.message == "rule 'r-1' not found"
    [info] = unpacked(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("rule", "r-1")


def test_a_registered_kind_gets_its_status_and_details_and_its_reason_as_error_info():
    register_status(
        QuotaFrozen,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda error: [error_details_pb2.QuotaFailure(violations=[{"subject": "tenant/t", "description": error.message}])],
    )
    status = status_of(QuotaFrozen("the quota is frozen", reason="QUOTA_FROZEN"))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    [quota] = unpacked(status, error_details_pb2.QuotaFailure)
    assert quota.violations[0].description == "the quota is frozen"
    [info] = unpacked(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("QUOTA_FROZEN", "loom")


def test_an_unregistered_kind_is_unknown_with_its_message():
    class Odd(DomainError):
        pass

    assert status_code_of(Odd("odd")) == grpc.StatusCode.UNKNOWN
    assert status_of(Odd("odd")).message == "odd"


def test_a_failed_precondition_names_its_subject_and_reason():
    status = status_of(FailedPrecondition("batch is filling", reason="BAD_STATE", subject="batches/b"))
    [failure] = unpacked(status, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        ("BAD_STATE", "batches/b", "batch is filling")
    ]


@pytest.mark.parametrize("module", ["services/batch/domain.py", "services/tracking/domain.py", "libs/domain_errors.py"])
def test_domain_modules_import_nothing_of_the_transport(module):
    tree = ast.parse((ROOT / module).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        )
    }
    transport = {name for name in imported if name.split(".")[0] in ("grpc", "google", "loom") or name == "libs.errors"}
    assert not transport, f"{module} imports {transport}"
