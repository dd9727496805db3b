"""Hypothesis strategies for any protobuf request message, built from its descriptor.

Strings mix arbitrary text with SQL-, script- and template-shaped ones; numbers
hit their type's boundaries; enums include values the proto does not name;
well-known types get valid and out-of-range values. Nesting is bounded.
"""

from __future__ import annotations

from functools import cache

from google.protobuf import descriptor as d
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

HOSTILE_STRINGS = (
    "Robert'); DROP TABLE batch.orders;--",
    "' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "$$; DELETE FROM rules.rules; $$",
    '"; TRUNCATE tracking.interactions; --',
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "{{order.id}}{{7*7}}${7*7}",
    "../../etc/passwd",
    "%s%s%n",
    "\\x00\\u0000",
    "\u4e2d\u6587 \U0001f9f5 \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9",
    "a" * 300,
)
MAX_DEPTH = 3
INT_BOUNDS = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(HOSTILE_STRINGS),
        st.uuids().map(str),
        st.sampled_from(("", " ", "0", "-1", "1.5", "1e309", "NaN", "99999999999999999999.999", "2026-01-01T00:00:00Z")),
    )


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(max(low, -3), min(high, 1000)),
        st.sampled_from(sorted({low, high, 0, max(low, -1), min(high, 2**31 - 1)})),
        st.integers(low, high),
    )


def json_values() -> st.SearchStrategy:
    leaves = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), strings())
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings(), inner, max_size=3), max_leaves=8
    )


def _well_known(message: d.Descriptor, depth: int) -> st.SearchStrategy[Message] | None:
    cls = GetMessageClass(message)
    name = message.full_name
    if name == "google.protobuf.Timestamp":
        valid = st.integers(-62135596800, 253402300799)
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), valid | st.integers(-(2**62), 2**62), integers(-1, 10**9))
    if name == "google.protobuf.Duration":
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), integers(-(2**40), 2**40), integers(-(10**9), 10**9))
    if name == "google.protobuf.Struct":
        return st.dictionaries(strings(), json_values(), max_size=4).map(lambda v: json_format.ParseDict(v, cls()))
    if name == "google.protobuf.Value":
        return json_values().map(lambda v: json_format.ParseDict(v, cls()))
    if name == "google.protobuf.FieldMask":
        return st.lists(strings(), max_size=3).map(lambda paths: cls(paths=paths))
    if name.startswith("google.protobuf.") and name.endswith("Value"):
        return _message(message, depth)
    return None


def _scalar(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy:
    kind = field.type
    if kind == d.FieldDescriptor.TYPE_STRING:
        return strings()
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == d.FieldDescriptor.TYPE_FLOAT else 64)
    if kind == d.FieldDescriptor.TYPE_ENUM:
        named = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(named), st.integers(-(2**31), 2**31 - 1))
    if kind in INT_BOUNDS:
        return integers(*INT_BOUNDS[kind])
    if kind == d.FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


def _is_map(field: d.FieldDescriptor) -> bool:
    return field.type == d.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _field(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy:
    if _is_map(field):
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(_scalar(key, depth), _scalar(value, depth), max_size=3)
    if field.is_repeated:
        return st.lists(_scalar(field, depth), max_size=3)
    return _scalar(field, depth)


def _assign(message: Message, field: d.FieldDescriptor, value) -> None:
    if _is_map(field):
        target = getattr(message, field.name)
        for k, v in value.items():
            if field.message_type.fields_by_name["value"].type == d.FieldDescriptor.TYPE_MESSAGE:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        getattr(message, field.name).extend(value)
    elif field.type == d.FieldDescriptor.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _message(descriptor: d.Descriptor, depth: int) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.just(cls())
    fields = list(descriptor.fields)
    # Each field is left unset or given a value; fields are set in a drawn order (oneofs: last wins).
    per_field = [st.none() | _field(f, depth) for f in fields]

    def build(values, order) -> Message:
        message = cls()
        for index in order:
            if values[index] is not None:
                _assign(message, fields[index], values[index])
        return message

    return st.builds(build, st.tuples(*per_field), st.permutations(range(len(fields))))


@cache
def _cached(full_name: str, depth: int, descriptor: d.Descriptor) -> st.SearchStrategy[Message]:
    known = _well_known(descriptor, depth)
    return known if known is not None else _message(descriptor, depth)


def message_strategy(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    return st.deferred(lambda: _cached(descriptor.full_name, depth, descriptor))
