"""The OpenAPI 3 document of the gateway, generated from the same route table it serves.

Schemas follow protobuf's canonical JSON mapping exactly as the transcoder
reads and writes it: lowerCamelCase names, enums as names, 64-bit integers as
decimal strings, Timestamps as RFC 3339 strings. Unknown fields are refused,
so every message schema says `additionalProperties: false`.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from libs.auth import ROLE_NAMES
from services.gateway import openapi_constraints as declared
from services.gateway.routes import Binding, RouteTable, resolve_field_path
from services.gateway.transcode import SCALAR_LIKE_MESSAGES

ERROR_SCHEMA = "google.rpc.Status"
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_UINT32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64}
_UINT64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
_WRAPPED: dict[str, dict[str, object]] = {
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int32", "minimum": 0},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, object]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"nullable": True},
    "google.protobuf.ListValue": {"type": "array", "items": {"nullable": True}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    **{name: {**schema, "nullable": True} for name, schema in _WRAPPED.items()},
}
INFO_DESCRIPTION = """\
HTTP/JSON access to the Loom services, generated from their protos.

* JSON follows protobuf's canonical mapping: lowerCamelCase fields, enums by name,
  64-bit integers as decimal strings, timestamps in RFC 3339.
* Authenticate with `Authorization: Bearer <JWT>`; each operation lists the roles it admits.
* `X-Request-Id` is passed through (or generated) and echoed on every response.
* `Grpc-Timeout` (e.g. `5S`, `250m`) sets the call's deadline; otherwise a default applies.
* Errors are `{code, message, details}` (a google.rpc.Status): `code` is the gRPC code,
  `details` carry field violations (google.rpc.BadRequest), retry delays (google.rpc.RetryInfo)
  and more. 429 responses carry `Retry-After`.
* The gateway limits requests per client address and per token subject (429), the request
  headers (431) and the body (413).
* Server-streaming operations answer with Server-Sent Events: one `data:` line of JSON per
  message, `event: error` with an error body if the stream fails, `event: end` when it ends.
"""


def openapi_document(table: RouteTable, *, title: str = "Loom API", version: str = "v1") -> dict:
    schemas: dict[str, dict] = {ERROR_SCHEMA: _error_schema()}
    paths: dict[str, dict] = {}
    seen_operations: dict[str, int] = {}
    for binding in sorted(table.bindings, key=lambda b: (b.template.template, b.http_method)):
        name = f"{binding.rpc.descriptor.containing_service.name}_{binding.rpc.descriptor.name}"
        seen_operations[name] = seen_operations.get(name, 0) + 1
        operation_id = name if seen_operations[name] == 1 else f"{name}_{seen_operations[name]}"
        operation = _operation(binding, operation_id, schemas)
        paths.setdefault(openapi_path(binding), {})[binding.http_method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": INFO_DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def parameter_name(binding: Binding, variable: str) -> str:
    """A path variable's parameter name: `{post.post_id}` becomes `post_id` (tools choke on dots)."""
    leaf = variable.rsplit(".", 1)[-1]
    if leaf == variable or leaf not in binding.rpc.descriptor.input_type.fields_by_name:
        return leaf
    return variable.replace(".", "_")


def openapi_path(binding: Binding) -> str:
    """The template in OpenAPI syntax: each variable `{name}`, sub-patterns dropped."""
    return re.sub(
        r"\{([^}=]+)(=[^}]*)?\}", lambda found: "{" + parameter_name(binding, found.group(1)) + "}", binding.template.template
    )


def _operation(binding: Binding, operation_id: str, schemas: dict[str, dict]) -> dict:
    rpc = binding.rpc
    request_type = rpc.descriptor.input_type
    roles = [ROLE_NAMES[r] for r in rpc.access.roles if r in ROLE_NAMES]
    who = ", ".join(roles) + (" (or anonymous)" if rpc.access.allow_anonymous else "")
    operation: dict = {
        "operationId": operation_id,
        "summary": f"{rpc.descriptor.containing_service.name}.{rpc.descriptor.name}",
        "description": f"gRPC `{rpc.path}`. Roles: {who or 'none'}.",
        "tags": [rpc.descriptor.containing_service.name],
        "parameters": _path_parameters(binding, schemas) + _query_parameters(binding, schemas),
        "responses": {
            "200": _success(binding, schemas),
            "default": {
                "description": "An error: the gRPC status as JSON.",
                "content": {"application/json": {"schema": _ref(ERROR_SCHEMA)}},
            },
        },
        "security": [{"bearer": []}] + ([{}] if rpc.access.allow_anonymous else []),
    }
    if binding.body == "*":
        bound = {v.split(".", 1)[0] for v in binding.template.variables}
        body_schema = _message_schema(request_type, schemas, exclude=bound)
        operation["requestBody"] = {"content": {"application/json": {"schema": body_schema}}}
    elif binding.body:
        body_field = resolve_field_path(request_type, binding.body)[-1]
        operation["requestBody"] = {"content": {"application/json": {"schema": _field_schema(body_field, schemas, single=True)}}}
    return operation


def _success(binding: Binding, schemas: dict[str, dict]) -> dict:
    response_type = binding.rpc.descriptor.output_type
    if binding.response_body:
        schema = _field_schema(resolve_field_path(response_type, binding.response_body)[-1], schemas)
    else:
        schema = _message_ref(response_type, schemas)
    if binding.rpc.server_streaming:
        return {
            "description": f"Server-Sent Events; each `data:` line is one {response_type.name} as JSON.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    return {"description": response_type.name, "content": {"application/json": {"schema": schema}}}


def _path_parameters(binding: Binding, schemas: dict[str, dict]) -> list[dict]:
    parameters = []
    for variable in binding.template.variables:
        field = resolve_field_path(binding.rpc.descriptor.input_type, variable)[-1]
        schema = _field_schema(field, schemas)
        if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
            schema = {**schema, "minLength": 1}
        parameters.append({"name": parameter_name(binding, variable), "in": "path", "required": True, "schema": schema})
    return parameters


def _query_parameters(binding: Binding, schemas: dict[str, dict]) -> list[dict]:
    if binding.body == "*":
        return []
    bound = {*binding.template.variables, *([binding.body] if binding.body else [])}
    parameters = []
    for proto_path, json_path, field in _leaf_fields(binding.rpc.descriptor.input_type, "", "", 0):
        if any(proto_path == b or proto_path.startswith(b + ".") for b in bound):
            continue
        schema = _field_schema(field, schemas)
        parameter = {"name": json_path, "in": "query", "required": "." not in proto_path and declared.is_required(field),
                     "schema": schema}
        if field.is_repeated:
            parameter |= {"style": "form", "explode": True}
        parameters.append(parameter)
    return parameters


def _leaf_fields(descriptor: Descriptor, proto_prefix: str, json_prefix: str, depth: int):
    """Fields a query parameter can set: scalars, enums and one-string messages, nested by dots."""
    for field in descriptor.fields:
        proto_path, json_path = proto_prefix + field.name, json_prefix + field.json_name
        message = field.message_type
        if message is None or message.full_name in SCALAR_LIKE_MESSAGES:
            yield proto_path, json_path, field
        elif not (field.is_repeated or message.full_name.startswith("google.protobuf.")) and depth < 2:
            yield from _leaf_fields(message, proto_path + ".", json_path + ".", depth + 1)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _message_ref(descriptor: Descriptor, schemas: dict[str, dict]) -> dict:
    name = descriptor.full_name
    if name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[name])
    if name not in schemas:
        schemas[name] = {}  # reserve first: messages may refer to themselves
        schemas[name] = _message_schema(descriptor, schemas)
    return _ref(name)


def _message_schema(descriptor: Descriptor, schemas: dict[str, dict], exclude: frozenset[str] | set[str] = frozenset()) -> dict:
    fields = [field for field in descriptor.fields if field.name not in exclude]
    properties = {field.json_name: _field_schema(field, schemas) for field in fields}
    schema = {"type": "object", "title": descriptor.name, "properties": properties, "additionalProperties": False}
    required = [field.json_name for field in fields if declared.is_required(field)]
    return schema | ({"required": required} if required else {})


def _field_schema(field: FieldDescriptor, schemas: dict[str, dict], *, single: bool = False) -> dict:
    """The field's schema with the constraints its proto declares (see openapi_constraints)."""
    rules = declared.field_rules(field)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        schema = {"type": "object", "additionalProperties": _single_schema(value_field, schemas)}
    elif field.is_repeated and not single:
        items = _single_schema(field, schemas)
        item_rules = declared.item_rules(rules) if rules else None
        items = _narrowed(items, declared.value_keywords(item_rules, field, items) if item_rules else {})
        schema = {"type": "array", "items": items, **(declared.array_keywords(rules) if rules else {})}
    else:
        schema = _single_schema(field, schemas)
        schema = _narrowed(schema, declared.value_keywords(rules, field, schema) if rules else {})
    return _narrowed(schema, {"readOnly": True} if declared.is_output_only(field) else {})


def _narrowed(schema: dict, keywords: dict) -> dict:
    """schema with more keywords; OpenAPI 3.0 ignores siblings of $ref, so a reference is wrapped."""
    if not keywords:
        return schema
    return {"allOf": [schema], **keywords} if "$ref" in schema else {**schema, **keywords}


def _single_schema(field: FieldDescriptor, schemas: dict[str, dict]) -> dict:
    if field.message_type is not None:
        return _message_ref(field.message_type, schemas)
    if field.enum_type is not None:
        return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
    kind = field.type
    if kind in _INT32:
        return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
    if kind in _UINT32:
        return {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
    if kind in _INT64:
        return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,18}$"}
    if kind in _UINT64:
        return {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,19}$"}
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return {"type": "number"}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    return {"type": "string"}


def _error_schema() -> dict:
    return {
        "type": "object",
        "title": "Status",
        "description": "A google.rpc.Status: the gRPC code, a message, and typed details.",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The gRPC status code."},
            "message": {"type": "string"},
            "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
        },
        "required": ["code", "message", "details"],
        "additionalProperties": False,
    }
