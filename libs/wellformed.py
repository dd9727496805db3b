"""Protobuf well-formedness every request must have before a servicer sees it.

The wire format lets a client send values no proto declares: enum numbers
outside the enum (proto3 enums are open), Timestamps outside year 1..9999 or
with nanos outside 0..999,999,999, malformed Durations. Converting those in a
servicer raises ValueError, which would surface as INTERNAL; the interceptor
rejects them up front as INVALID_ARGUMENT with the offending field's path.
"""

from __future__ import annotations

from google.protobuf import descriptor as d
from google.protobuf.message import Message

from libs.errors import FieldViolation

MIN_TIMESTAMP_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315576000000  # 10,000 years, the Duration limit
MAX_NANOS = 999_999_999


def violations(message: Message, path: str = "") -> list[FieldViolation]:
    found: list[FieldViolation] = []
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        if not MIN_TIMESTAMP_SECONDS <= message.seconds <= MAX_TIMESTAMP_SECONDS:
            found.append(FieldViolation(path, "timestamp outside year 1 to 9999"))
        if not 0 <= message.nanos <= MAX_NANOS:
            found.append(FieldViolation(path, "timestamp nanos must be within 0..999999999"))
        return found
    if name == "google.protobuf.Duration":
        seconds, nanos = message.seconds, message.nanos
        if abs(seconds) > MAX_DURATION_SECONDS or abs(nanos) > MAX_NANOS or (seconds * nanos < 0):
            found.append(FieldViolation(path, "malformed duration"))
        return found
    for field, value in message.ListFields():
        here = f"{path}.{field.name}" if path else field.name
        if field.type == d.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                items = value.values() if value_field.type == d.FieldDescriptor.TYPE_MESSAGE else ()
                for item in items:
                    found.extend(violations(item, here))
            elif field.is_repeated:
                for index, item in enumerate(value):
                    found.extend(violations(item, f"{here}[{index}]"))
            else:
                found.extend(violations(value, here))
        elif field.type == d.FieldDescriptor.TYPE_ENUM:
            declared = field.enum_type.values_by_number
            for index, number in enumerate(value if field.is_repeated else (value,)):
                if number not in declared:
                    where = f"{here}[{index}]" if field.is_repeated else here
                    found.append(FieldViolation(where, f"{number} is not a {field.enum_type.name}"))
    return found
