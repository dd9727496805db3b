"""Canonical proto3 JSON compiled per message type: the gateway's hot path.

protobuf's `json_format` is pure Python that, for every value of every message,
asks the descriptors again what the field is (and parses through a generic
recursive walker). Profiling the gateway (py-spy, bench/gateway_vs_envoy.py)
put it at a fifth of the transcoder's own CPU. Here each message type gets,
once, a table of its fields with the one function that converts each of them.

Exactness: whatever this module does not handle itself is left to
`json_format`, so the answer is always protobuf's own mapping.
- Printing: well-known types other than Timestamp, Duration and FieldMask (whose
  JSON is their `ToJsonString()`, as in json_format), and messages with map
  fields, are printed by `json_format.MessageToDict`.
- Parsing: `parse_into` handles the JSON shapes requests use (strings, booleans,
  integers as numbers or decimal strings, doubles, enums, plain and repeated
  sub-messages, timestamps...) and answers False for anything else (null, bytes,
  oneof members, a field named twice, a value of the wrong type...), after which
  the caller parses with `json_format` from a clean message, which also finds the error.
tests/gateway/test_protojson.py compares both ways with json_format on generated
messages of every Loom message type.
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

# Well-known types whose JSON form is the string their ToJsonString/FromJsonString make.
STRING_MESSAGES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"})
_INT64 = frozenset(
    {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}
)
_DECIMAL = re.compile(r"-?[0-9]+")
_INTEGERS = _INT64 | {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32}


@functools.cache
def _custom_enum_names() -> bool:
    """Whether `pb.enumvalue.json` (custom JSON names of enum values) exists; then enums are json_format's."""
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return True


def is_plain(descriptor: Descriptor) -> bool:
    """A message whose JSON is an object of its fields (not a well-known type with its own form)."""
    return not descriptor.full_name.startswith("google.protobuf.")


def enum_json_ok(enum_type: EnumDescriptor, value: Any) -> bool:
    """A JSON value that names a value of the enum: a defined name, or a defined number.

    Stricter than json_format, which takes `3.5` as 3, any number of an open enum,
    and a name that is digits: each is a 400 naming the field here.
    """
    if type(value) is str:
        return value in enum_type.values_by_name
    if type(value) is float and value.is_integer():
        value = int(value)
    return type(value) is int and value in enum_type.values_by_number


# ---------------------------------------------------------------- printing


def to_dict(message: Message) -> dict:
    """`json_format.MessageToDict(message, always_print_fields_with_no_presence=True)`, faster."""
    return printer_for(message.DESCRIPTOR)(message)


def _json_format_dict(message: Message) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


class _MessagePrinter:
    """Prints one message type; its field table is built on first use (types may be recursive)."""

    def __init__(self, descriptor: Descriptor) -> None:
        self._descriptor = descriptor
        self._fields: list[tuple[str, str, bool, Callable[[Any], Any]]] | None = None

    def __call__(self, message: Message) -> dict:
        fields = self._fields if self._fields is not None else self._build()
        js = {}
        for name, json_name, presence, convert in fields:
            if presence and not message.HasField(name):
                continue
            js[json_name] = convert(getattr(message, name))
        return js

    def _build(self) -> list:
        self._fields = [
            (field.name, field.json_name, field.has_presence, _value_printer(field)) for field in self._descriptor.fields
        ]
        return self._fields


@functools.cache
def printer_for(descriptor: Descriptor) -> Callable[[Message], Any]:
    if descriptor.full_name in STRING_MESSAGES:
        return lambda message: message.ToJsonString()  # type: ignore[attr-defined]  # well-known types in STRING_MESSAGES have it
    if _custom_enum_names() or not is_plain(descriptor) or any(_is_map(f) for f in descriptor.fields):
        return _json_format_dict
    return _MessagePrinter(descriptor)


def _value_printer(field: FieldDescriptor) -> Callable[[Any], Any]:
    single = _single_printer(field)
    if not field.is_repeated:
        return single
    if single is _identity:
        return list
    return lambda values: [single(value) for value in values]


def _identity(value: Any) -> Any:
    return value


def _single_printer(field: FieldDescriptor) -> Callable[[Any], Any]:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        return printer_for(field.message_type)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # an enum field always has its enum type
        if enum.full_name == "google.protobuf.NullValue":
            return lambda value: None
        names = {value.number: value.name for value in enum.values}
        return lambda value: names.get(value, value)
    if kind in _INT64:
        return str
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return _float
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode("utf-8")
    return _identity  # string, bool, 32-bit integers


def _double(value: float) -> float | str:
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return "NaN" if math.isnan(value) else value


def _float(value: float) -> float | str:
    special = _double(value)
    return special if isinstance(special, str) else type_checkers.ToShortestFloat(value)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


# ---------------------------------------------------------------- parsing


def parse_into(document: dict, message: Message) -> bool:
    """Sets `message` from a JSON object as `json_format.ParseDict` would, or answers False.

    False means: this document needs json_format (or is wrong); `message` may be
    partly set and must be cleared before parsing it again.
    """
    return _parser_for(message.DESCRIPTOR)(document, message)


Setter = Callable[[Message, str, Any], bool]


class _MessageParser:
    def __init__(self, descriptor: Descriptor) -> None:
        self._descriptor = descriptor
        self._fields: dict[str, tuple[str, int, Setter]] | None = None

    def __call__(self, document: dict, message: Message) -> bool:
        fields = self._fields if self._fields is not None else self._build()
        seen = 0
        for key, value in document.items():
            found = fields.get(key)
            if found is None or value is None:
                return False
            name, bit, setter = found
            if seen & bit:  # the same field under its JSON and its proto name
                return False
            seen |= bit
            if not setter(message, name, value):
                return False
        return True

    def _build(self) -> dict:
        fields: dict[str, tuple[str, int, Setter]] = {}
        for index, field in enumerate(self._descriptor.fields):
            setter = _setter(field)
            if setter is not None:
                fields[field.json_name] = fields[field.name] = (field.name, 1 << index, setter)
        self._fields = fields
        return fields


@functools.cache
def _parser_for(descriptor: Descriptor) -> Callable[[dict, Message], bool]:
    if _custom_enum_names() or not is_plain(descriptor):
        return lambda document, message: False
    return _MessageParser(descriptor)


def _setter(field: FieldDescriptor) -> Setter | None:
    """How to set one field from its JSON value, or None when json_format must do it."""
    if field.containing_oneof is not None or _is_map(field):
        return None  # json_format checks that one oneof member at most is given
    message_type = field.message_type
    if message_type is not None:
        if field.is_repeated:
            return _repeated_message_setter(message_type) if is_plain(message_type) else None
        if message_type.full_name in STRING_MESSAGES:
            return _set_string_message
        return _message_setter(message_type) if is_plain(message_type) else None
    convert = _scalar_converter(field)
    if convert is None:
        return None
    return _repeated_scalar_setter(convert) if field.is_repeated else _scalar_setter(convert)


_MISSING = object()  # a converter's answer for a value the fast path leaves to json_format


def _scalar_converter(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return None
        return lambda value: value if type(value) is str else _MISSING
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return lambda value: value if type(value) is bool else _MISSING
    if kind in _INTEGERS:
        # A decimal string too (canonical JSON writes 64-bit integers so); other spellings
        # Python's int() takes ("1_000", " 7") are json_format's to judge.
        return lambda value: value if type(value) is int else (
            int(value) if type(value) is str and _DECIMAL.fullmatch(value) else _MISSING
        )
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return lambda value: value if type(value) is float else _MISSING
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # an enum field always has its enum type
        if enum.full_name == "google.protobuf.NullValue":
            return None
        by_name = {value.name: value.number for value in enum.values}
        numbers = frozenset(enum.values_by_number)
        return lambda value: by_name.get(value, _MISSING) if type(value) is str else (
            value if type(value) is int and value in numbers else _MISSING
        )
    return None  # float (json_format checks its range), anything else


def _scalar_setter(convert: Callable[[Any], Any]) -> Setter:
    def set_scalar(message: Message, name: str, value: Any) -> bool:
        converted = convert(value)
        if converted is _MISSING:
            return False
        try:
            setattr(message, name, converted)
        except (ValueError, TypeError):  # out of the field's range: json_format words the error
            return False
        return True

    return set_scalar


def _repeated_scalar_setter(convert: Callable[[Any], Any]) -> Setter:
    def set_repeated(message: Message, name: str, values: Any) -> bool:
        if type(values) is not list:
            return False
        converted = [convert(value) for value in values]
        if _MISSING in converted:
            return False
        try:
            getattr(message, name).extend(converted)
        except (ValueError, TypeError):
            return False
        return True

    return set_repeated


def _set_string_message(message: Message, name: str, value: Any) -> bool:
    if type(value) is not str:
        return False
    child = getattr(message, name)
    child.SetInParent()
    try:
        child.FromJsonString(value)
    except ValueError:
        return False
    return True


def _message_setter(message_type: Descriptor) -> Setter:
    parse = _parser_for(message_type)

    def set_message(message: Message, name: str, value: Any) -> bool:
        if type(value) is not dict:
            return False
        child = getattr(message, name)
        child.SetInParent()
        return parse(value, child)

    return set_message


def _repeated_message_setter(message_type: Descriptor) -> Setter:
    parse = _parser_for(message_type)

    def set_messages(message: Message, name: str, values: Any) -> bool:
        if type(values) is not list:
            return False
        container = getattr(message, name)
        return all(type(value) is dict and parse(value, container.add()) for value in values)

    return set_messages
