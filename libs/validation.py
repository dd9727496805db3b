"""The field constraints the protos declare (`buf.validate`), checked before a servicer runs.

Every request message is validated by protovalidate against the rules in its
descriptor: required fields, string lengths and patterns, numeric ranges, enum
membership, repeated sizes. The violations come back as Loom's FieldViolations,
all of them at once, named as the services name fields: dotted proto field names
with list indexes (`style.colors`, `line_items[0].quantity`, `interaction.type`).

The validator is built once per process: protovalidate compiles a message type's
rules the first time it meets it and caches them, so only the first request of
each type pays for that.
"""

from __future__ import annotations

import protovalidate
from google.protobuf.message import Message

from libs.errors import FieldViolation

_VALIDATOR = protovalidate.Validator()
# Loom has always said "must be a UUID"; protovalidate words it in two ways (empty or malformed).
_DESCRIPTIONS = {"string.uuid": "must be a UUID", "string.uuid_empty": "must be a UUID"}


def violations(message: Message) -> list[FieldViolation]:
    """Every constraint the message breaks, in declaration order."""
    return [_field_violation(v) for v in _VALIDATOR.collect_violations(message)]


def _field_violation(found: protovalidate.Violation) -> FieldViolation:
    violation = found.proto
    path = ""
    field = violation.field  # typed optional by protovalidate; a rule without a field has no path
    for element in field.elements if field is not None else ():
        name = element.field_name
        path = f"{path}.{name}" if path else name
        subscript = element.subscript
        if subscript is not None:
            path += f"[{subscript.value}]"
    if violation.rule_id == "string.not_contains":  # protovalidate quotes the text raw, unreadable for NUL
        description = f"must not contain {found.rule_value!r}"
    else:
        description = _DESCRIPTIONS.get(violation.rule_id) or violation.message.removeprefix("value ")
    return FieldViolation(path, description)
