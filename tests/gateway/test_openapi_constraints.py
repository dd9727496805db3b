"""The OpenAPI document carries what the protos declare: required fields, read-only
fields, and the buf.validate constraints the services enforce."""

from __future__ import annotations

import re

import pytest

from services.gateway.openapi import openapi_document
from services.gateway.routes import build_table


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi_document(build_table())


def test_required_fields_come_from_field_behavior(document):
    body = document["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"requestId", "category", "quantity", "style"}
    assert "buyerId" not in body["required"]


def test_output_only_fields_are_read_only(document):
    supplier = document["components"]["schemas"]["loom.batch.v1.Supplier"]["properties"]
    assert supplier["createTime"]["readOnly"] is True
    assert "readOnly" not in supplier["name"]


def test_string_lengths_and_patterns_are_carried(document):
    body = document["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request_id = body["properties"]["requestId"]
    assert (request_id["minLength"], request_id["maxLength"]) == (1, 128)
    assert re.fullmatch(body["properties"]["category"]["pattern"], "t_shirts")
    assert not re.search(body["properties"]["category"]["pattern"], "Not A Category")


def test_numeric_ranges_are_carried_and_64_bit_ranges_become_digit_patterns(document):
    schemas = document["components"]["schemas"]
    style = schemas["loom.batch.v1.StyleDetails"]["properties"]
    assert (style["styleCount"]["minimum"], style["styleCount"]["maximum"]) == (1, 1000)
    body = document["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    quantity = body["properties"]["quantity"]["pattern"]
    assert re.fullmatch(quantity, "10") and not re.fullmatch(quantity, "0") and not re.fullmatch(quantity, "-5")


def test_repeated_sizes_and_item_rules_are_carried(document):
    colors = document["components"]["schemas"]["loom.batch.v1.StyleDetails"]["properties"]["colors"]
    assert colors["maxItems"] == 100 and colors["items"]["maxLength"] == 64
    cost = document["paths"]["/v1/costEstimates"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert cost["properties"]["lineItems"]["minItems"] == 1


def test_enums_leave_out_the_values_a_field_refuses(document):
    interaction = document["components"]["schemas"]["loom.tracking.v1.Interaction"]["properties"]
    assert "INTERACTION_TYPE_UNSPECIFIED" not in interaction["type"]["enum"]
    assert "INTERACTION_TYPE_HOVER" in interaction["type"]["enum"]


def test_an_optional_id_admits_empty_but_otherwise_its_pattern(document):
    user_id = document["components"]["schemas"]["loom.tracking.v1.Interaction"]["properties"]["userId"]["pattern"]
    assert re.search(user_id, "") and re.search(user_id, "u-1") and not re.search(user_id, "bad id!")


def test_uuid_path_parameters_say_so(document):
    [parameter] = document["paths"]["/v1/batches/{batch_id}"]["get"]["parameters"]
    assert parameter["schema"]["format"] == "uuid" and parameter["required"] is True


def test_required_query_parameters_are_marked(document):
    parameters = {p["name"]: p for p in document["paths"]["/v1/suppliers:recommend"]["get"]["parameters"]}
    assert parameters["category"]["required"] and parameters["quantity"]["required"]
