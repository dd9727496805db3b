"""JSON <-> protobuf for one binding, with protobuf's canonical JSON mapping.

Requests: the body (all of it for `body: "*"`, or one field), then path
variables, then query parameters for whatever the path and body leave
unbound. Any mistake becomes a `FieldError` naming the field as the client
wrote it, which the app turns into 400 with a google.rpc.BadRequest detail.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import cast

import orjson
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.gateway import protojson
from services.gateway.routes import Binding

# Message types the canonical JSON mapping writes as a single JSON value: a path
# variable or query parameter may set them from one string.
SCALAR_LIKE_MESSAGES = {
    "google.protobuf.Timestamp": "an RFC 3339 timestamp such as 2024-05-01T12:00:00Z",
    "google.protobuf.Duration": "a duration in seconds such as 1.5s",
    "google.protobuf.FieldMask": "comma-separated lowerCamelCase field paths",
    **{
        f"google.protobuf.{kind}Value": f"a {kind.lower()} value"
        for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
    },
}
USER_AGENT_FIELD = "user_agent"
FREE_FORM_MESSAGES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}

_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_INTEGER_64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


class FieldError(ValueError):
    """A request that cannot become the RPC's message, and the field to blame."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field, self.description = field, description


def build_request(
    binding: Binding, body: bytes, path_variables: Mapping[str, str], query: Iterable[tuple[str, str]]
) -> Message:
    request = binding.rpc.request_class()
    bound: set[str] = set()
    if binding.body:
        target = request if binding.body == "*" else _submessage(request, binding.body)
        prefix = "" if binding.body == "*" else binding.body
        _parse_body(body, target, prefix)
        bound.add(binding.body)
    for path, value in path_variables.items():
        if not value:
            raise FieldError(path, "must not be empty")
        _assign(request, path, [value], what="path variable", shown_as=path)
        bound.add(path)
    if binding.body == "*":
        if extra := next(iter(query), None):
            raise FieldError(extra[0], "unknown query parameter: this route takes its fields from the body")
        return request
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        proto_path = _proto_path(cast(Descriptor, request.DESCRIPTOR), key)  # pure-Python or upb: the same API
        if proto_path is None:
            raise FieldError(key, "unknown query parameter")
        if any(proto_path == b or proto_path.startswith(b + ".") for b in bound):
            raise FieldError(key, "already bound by the path or the body")
        _assign(request, proto_path, values, what="query parameter", shown_as=key)
    return request


def _parse_body(body: bytes, target: Message, prefix: str) -> None:
    if not body.strip():
        return
    document = _load_json(body)
    if not isinstance(document, dict):
        raise FieldError(prefix, "the body must be a JSON object")
    if protojson.parse_into(document, target):
        return
    # What the compiled parser leaves (or a mistake): protobuf's own parser, from a clean message.
    target.Clear()
    # The stubs type DESCRIPTOR as the pure-Python or the upb class; both are a Descriptor.
    descriptor = cast(Descriptor, target.DESCRIPTOR)
    try:
        json_format.ParseDict(document, target)
    except (json_format.ParseError, ValueError, TypeError):
        raise locate_error(document, descriptor, prefix) from None
    # json_format takes 3.5 for an enum and true for a double: those must be 400s too.
    error = find_error(document, descriptor, prefix, parsed=True)
    if error is not None:
        raise error


def _load_json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses a few documents Python's parser takes (a lone surrogate escape, an integer
    # beyond 64 bits); those then get the field-naming 400 rather than "malformed JSON".
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FieldError("", f"malformed JSON body: {error}") from None


def locate_error(document: dict, descriptor: Descriptor, prefix: str) -> FieldError:
    """The first field of a document json_format refused, or the document as a whole."""
    return find_error(document, descriptor, prefix) or FieldError(prefix, f"not a valid {descriptor.name}")


def find_error(document: dict, descriptor: Descriptor, prefix: str, *, parsed: bool = False) -> FieldError | None:
    """Walks a JSON object field by field; the first wrong value, named as the client wrote it.

    `parsed`: json_format took the document, so only what it lets through (enums) is checked.
    """
    fields = _fields_by_any_name(descriptor)
    for key, value in document.items():
        path = f"{prefix}.{key}" if prefix else key
        field = fields.get(key)
        if field is None:
            return FieldError(path, f"unknown field of {descriptor.name}")
        if value is None:
            continue  # JSON null is the default value of any field
        if not _canonical(field, value):
            return FieldError(path, f"expected {expected(field)}")
        nested = _nested_error(field, value, path, parsed)
        if nested is not None:
            return nested
        if parsed:
            continue
        try:
            json_format.ParseDict({key: value}, message_factory.GetMessageClass(descriptor)())
        except (json_format.ParseError, ValueError, TypeError):
            return FieldError(path, f"expected {expected(field)}")
    return None


def _canonical(field: FieldDescriptor, value) -> bool:
    """False for what json_format takes but the canonical mapping does not: 3.5, an undefined
    number or a digit string for an enum (json_format reads them as int(value)), and true or
    false for a floating-point field (json_format reads them as 1.0 and 0.0)."""
    if field.is_repeated:
        # Not a list: json_format's own check names the field.
        return not isinstance(value, list) or all(_canonical_single(field, item) for item in value)
    return _canonical_single(field, value)


def _canonical_single(field: FieldDescriptor, value) -> bool:
    if field.enum_type is not None:
        return protojson.enum_json_ok(field.enum_type, value)
    if field.type in _FLOAT_TYPES:
        return not isinstance(value, bool)
    return True


def _nested_error(field: FieldDescriptor, value, path: str, parsed: bool) -> FieldError | None:
    """Descends into plain sub-messages, so the error names the innermost field."""
    message_type = field.message_type
    if message_type is None or _is_map(field):
        return None
    if message_type.full_name in SCALAR_LIKE_MESSAGES or message_type.full_name in FREE_FORM_MESSAGES:
        return None
    if field.is_repeated:
        if not isinstance(value, list):
            return FieldError(path, f"expected {expected(field)}")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return FieldError(f"{path}[{index}]", f"expected an object ({message_type.name})")
            error = find_error(item, message_type, f"{path}[{index}]", parsed=parsed)
            if error is not None:
                return error
        return None
    if not isinstance(value, dict):
        return FieldError(path, f"expected an object ({message_type.name})")
    return find_error(value, message_type, path, parsed=parsed)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _fields_by_any_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """Fields by their JSON name and their proto name (the canonical mapping accepts both)."""
    return {**{f.name: f for f in descriptor.fields}, **{f.json_name: f for f in descriptor.fields}}


def expected(field: FieldDescriptor) -> str:
    """What a field's JSON value must look like, in words for the error message."""
    if _is_map(field):
        return "an object (a map)"
    if field.is_repeated:
        return f"a list, each item {_expected_single(field)}"
    return _expected_single(field)


def _expected_single(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        names = [v.name for v in field.enum_type.values if v.number != 0] or [v.name for v in field.enum_type.values]
        return f"one of {', '.join(names)}"
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in SCALAR_LIKE_MESSAGES:
            return SCALAR_LIKE_MESSAGES[name]
        return "any JSON value" if name == "google.protobuf.Value" else f"an object ({field.message_type.name})"
    if field.type in _INTEGER_TYPES:
        bits = 64 if field.type in _INTEGER_64_TYPES else 32
        return f"a {bits}-bit integer" + (" (number or decimal string)" if bits == 64 else "")
    if field.type in _FLOAT_TYPES:
        return "a number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true or false"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "base64-encoded bytes"
    return "a string"


def _proto_path(descriptor: Descriptor | None, key: str) -> str | None:
    """The proto-name path a (JSON or proto named) dotted query key refers to."""
    names = []
    for part in key.split("."):
        if descriptor is None:
            return None
        field = _fields_by_any_name(descriptor).get(part)
        if field is None:
            return None
        names.append(field.name)
        descriptor = field.message_type
    return ".".join(names)


def _submessage(message: Message, path: str) -> Message:
    for name in path.split("."):
        message = getattr(message, name)
    return message


def _assign(request: Message, path: str, values: list[str], *, what: str, shown_as: str) -> None:
    """Sets the field at a proto-name path from path/query strings; errors name it `shown_as`."""
    parent_path, _, name = path.rpartition(".")
    parent = _submessage(request, parent_path) if parent_path else request
    field = cast(FieldDescriptor, parent.DESCRIPTOR.fields_by_name[name])  # pure-Python or upb: the same API
    message_type = field.message_type
    if message_type is not None and message_type.full_name not in SCALAR_LIKE_MESSAGES:
        raise FieldError(shown_as, f"a {what} cannot set the object {message_type.name}; send it in the body")
    repeated = field.is_repeated
    if len(values) > 1 and not repeated:
        raise FieldError(shown_as, f"given {len(values)} times but holds one value")
    converted = [_from_string(field, value, shown_as) for value in values]
    if field.enum_type is not None and not all(protojson.enum_json_ok(field.enum_type, v) for v in converted):
        raise FieldError(shown_as, f"expected {_expected_single(field)}")
    try:
        json_format.ParseDict({field.json_name: converted if repeated else converted[0]}, parent)
    except (json_format.ParseError, ValueError, TypeError):
        raise FieldError(shown_as, f"expected {_expected_single(field)}") from None


def _from_string(field: FieldDescriptor, value: str, path: str):
    """A query/path string as the JSON value the canonical mapping expects for the field."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise FieldError(path, "expected true or false")
        return value == "true"
    if field.type in _FLOAT_TYPES:
        try:
            return float(value) if value not in ("NaN", "Infinity", "-Infinity") else value
        except ValueError:
            raise FieldError(path, "expected a number") from None
    if field.enum_type is not None and value.lstrip("-").isdigit():
        return int(value)
    if field.message_type is not None and field.message_type.full_name in (
        "google.protobuf.BoolValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
    ):
        return _from_string(field.message_type.fields_by_name["value"], value, path)
    return value


def to_json(message: Message) -> dict:
    """Canonical protobuf JSON: lowerCamelCase names, enum names, RFC 3339, int64 as strings.

    Fields at their default value are written too, so every response has one shape.
    """
    return protojson.to_dict(message)


def response_payload(binding: Binding, response: Message) -> dict:
    if binding.response_body:
        sub = _submessage(response, binding.response_body)
        return to_json(sub)
    return to_json(response)


def fill_user_agent(message: Message, user_agent: str) -> None:
    """Fills empty `user_agent` fields (tracking's enrichment input) from the User-Agent header."""
    if user_agent:
        for path in _user_agent_paths(message.DESCRIPTOR):
            _fill(message, path, user_agent)


@functools.cache
def _user_agent_paths(descriptor: Descriptor, depth: int = 0) -> tuple[tuple[FieldDescriptor, ...], ...]:
    """Paths to every string field named user_agent in plain sub-messages (a few levels deep)."""
    found: list[tuple[FieldDescriptor, ...]] = []
    for field in descriptor.fields:
        if field.name == USER_AGENT_FIELD and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            found.append((field,))
        elif field.message_type is not None and not _is_map(field) and depth < 3:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            found.extend((field, *rest) for rest in _user_agent_paths(field.message_type, depth + 1))
    return tuple(found)


def _fill(message: Message, path: tuple[FieldDescriptor, ...], value: str) -> None:
    field, rest = path[0], path[1:]
    if not rest:
        if not getattr(message, field.name):
            setattr(message, field.name, value)
        return
    if field.is_repeated:
        for item in getattr(message, field.name):
            _fill(item, rest, value)
    elif message.HasField(field.name):
        _fill(getattr(message, field.name), rest, value)
