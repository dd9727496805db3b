"""The route table comes from the protos alone."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2

from services.gateway.openapi import openapi_document
from services.gateway.routes import TemplateError, build_table, loom_services, parse_template


def test_every_annotated_rpc_has_its_routes():
    table = build_table()
    routed = {(b.rpc.path, b.http_method) for b in table.bindings}
    for _, service in loom_services():
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for each in (rule, *rule.additional_bindings):
                kind = each.WhichOneof("pattern")
                assert (f"/{service.full_name}/{method.name}", kind.upper()) in routed


def test_additional_bindings_are_routes_too():
    table = build_table()
    by_order, _ = table.match("POST", "/v1/orders/o1:assignSupplier")
    by_batch, variables = table.match("POST", "/v1/batches/b1:assignSupplier")
    assert by_order.rpc.path == by_batch.rpc.path == "/loom.batch.v1.BatchService/AssignSupplier"
    assert variables == {"batch_id": "b1"}


def test_a_custom_verb_wins_over_a_variable_swallowing_it():
    binding, variables = build_table().match("GET", "/v1/batches/b1:watch")
    assert binding.rpc.descriptor.name == "WatchBatch"
    assert variables == {"batch_id": "b1"}


def test_nested_variables_and_sub_patterns():
    template = parse_template("/v1/{name=shelves/*/books/*}:read")
    assert template.match("/v1/shelves/s1/books/b%2F2:read") == {"name": "shelves/s1/books/b/2"}
    assert template.match("/v1/shelves/s1:read") is None
    assert parse_template("/v1/{post.post_id}").match("/v1/p1") == {"post.post_id": "p1"}


@pytest.mark.parametrize("template", ["v1/no-slash", "/v1/{bad-name}", "/v1/sp ace"])
def test_unroutable_templates_fail_at_start_up(template):
    with pytest.raises(TemplateError):
        parse_template(template)


def test_openapi_has_one_operation_per_binding_and_no_dotted_parameters():
    table = build_table()
    document = openapi_document(table)
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len(operations) == len(table.bindings)
    assert len({op["operationId"] for op in operations}) == len(operations)
    assert not any("." in p["name"] for op in operations for p in op["parameters"] if p["in"] == "path")


def test_openapi_follows_the_canonical_json_mapping():
    schemas = openapi_document(build_table())["components"]["schemas"]
    batch = schemas["loom.batch.v1.Batch"]["properties"]
    assert batch["currentQuantity"]["type"] == "string"  # int64
    assert batch["createTime"] == {"type": "string", "format": "date-time", "readOnly": True}  # OUTPUT_ONLY
    assert "BATCH_STATUS_FILLING" in batch["status"]["enum"]
    assert schemas["loom.batch.v1.Batch"]["additionalProperties"] is False
