"""Protobuf well-formedness every request must have before a servicer sees it.

The wire format lets a client send values no proto declares: enum numbers
outside the enum (proto3 enums are open), Timestamps outside year 1..9999 or
with nanos outside 0..999,999,999, malformed Durations. Converting those in a
servicer raises ValueError, which would surface as INTERNAL; the interceptor
rejects them up front as INVALID_ARGUMENT with the offending field's path.

Every request is checked, so the common case (nothing wrong) is a walk planned once
per message type that visits only the fields able to hold such a value; the paths of
the violations are worked out only when there are some.
"""

from __future__ import annotations

import dataclasses

from google.protobuf import descriptor as d
from google.protobuf.message import Message

from libs.errors import FieldViolation

MIN_TIMESTAMP_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315576000000  # 10,000 years, the Duration limit
MAX_NANOS = 999_999_999
TIMESTAMP, DURATION = "google.protobuf.Timestamp", "google.protobuf.Duration"


@dataclasses.dataclass(eq=False)
class _Plan:
    """The fields of one message type that can hold (or lead to) an undeclared value."""

    kind: str = ""  # TIMESTAMP, DURATION, or "" for any other message
    enums: list[tuple[str, frozenset[int], bool]] = dataclasses.field(default_factory=list)  # name, declared, repeated
    singles: list[tuple[str, _Plan]] = dataclasses.field(default_factory=list)
    repeats: list[tuple[str, _Plan]] = dataclasses.field(default_factory=list)
    maps: list[tuple[str, _Plan]] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.kind or self.enums or self.singles or self.repeats or self.maps)


_PLANS: dict[str, _Plan] = {}
_PLANNING: set[str] = set()  # types whose plans are being filled (recursive types meet their own)


def _plan(descriptor: d.Descriptor) -> _Plan:
    known = _PLANS.get(descriptor.full_name)
    if known is not None:
        return known
    kind = descriptor.full_name if descriptor.full_name in (TIMESTAMP, DURATION) else ""
    plan = _PLANS[descriptor.full_name] = _Plan(kind=kind)
    if plan.kind:
        return plan
    _PLANNING.add(descriptor.full_name)
    for f in descriptor.fields:
        if f.type == d.FieldDescriptor.TYPE_ENUM:
            plan.enums.append((f.name, frozenset(f.enum_type.values_by_number), f.is_repeated))
        elif f.type == d.FieldDescriptor.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                value = f.message_type.fields_by_name["value"]
                if value.type == d.FieldDescriptor.TYPE_MESSAGE:
                    plan.maps.append((f.name, _plan(value.message_type)))
            else:
                child = _plan(f.message_type)
                if f.message_type.full_name in _PLANNING or not child.empty:  # a plan still being filled may yet fill
                    (plan.repeats if f.is_repeated else plan.singles).append((f.name, child))
    _PLANNING.discard(descriptor.full_name)
    return plan


def _wellformed(message: Message, plan: _Plan) -> bool:
    if plan.kind == TIMESTAMP:
        return MIN_TIMESTAMP_SECONDS <= message.seconds <= MAX_TIMESTAMP_SECONDS and 0 <= message.nanos <= MAX_NANOS
    if plan.kind == DURATION:
        seconds, nanos = message.seconds, message.nanos
        return abs(seconds) <= MAX_DURATION_SECONDS and abs(nanos) <= MAX_NANOS and seconds * nanos >= 0
    for name, declared, repeated in plan.enums:
        value = getattr(message, name)
        if not (declared.issuperset(value) if repeated else value in declared):
            return False
    for name, child in plan.singles:
        if message.HasField(name) and not _wellformed(getattr(message, name), child):
            return False
    for name, child in plan.repeats:
        for item in getattr(message, name):
            if not _wellformed(item, child):
                return False
    for name, child in plan.maps:
        for item in getattr(message, name).values():
            if not _wellformed(item, child):
                return False
    return True


def violations(message: Message) -> list[FieldViolation]:
    """Every undeclared enum number and out-of-range Timestamp or Duration in message, with its path."""
    return [] if _wellformed(message, _plan(message.DESCRIPTOR)) else _violations(message, "")


def _violations(message: Message, path: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    name = message.DESCRIPTOR.full_name
    if name == TIMESTAMP:
        if not MIN_TIMESTAMP_SECONDS <= message.seconds <= MAX_TIMESTAMP_SECONDS:
            found.append(FieldViolation(path, "timestamp outside year 1 to 9999"))
        if not 0 <= message.nanos <= MAX_NANOS:
            found.append(FieldViolation(path, "timestamp nanos must be within 0..999999999"))
        return found
    if name == DURATION:
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
                    found.extend(_violations(item, here))
            elif field.is_repeated:
                for index, item in enumerate(value):
                    found.extend(_violations(item, f"{here}[{index}]"))
            else:
                found.extend(_violations(value, here))
        elif field.type == d.FieldDescriptor.TYPE_ENUM:
            declared = field.enum_type.values_by_number
            for index, number in enumerate(value if field.is_repeated else (value,)):
                if number not in declared:
                    where = f"{here}[{index}]" if field.is_repeated else here
                    found.append(FieldViolation(where, f"{number} is not a {field.enum_type.name}"))
    return found
