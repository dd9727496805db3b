"""What the protos declare about a field, as OpenAPI 3.0 schema keywords.

`google.api.field_behavior` gives `required` (REQUIRED) and `readOnly`
(OUTPUT_ONLY); `buf.validate` rules give minLength/maxLength, pattern,
minimum/maximum, enum membership and minItems/maxItems. The services enforce
exactly these rules (the shared interceptor runs protovalidate), so a generated
client or a fuzzer that follows the document sends what the services accept.

64-bit integers travel as decimal strings, where minimum/maximum cannot apply:
their bounds become a digit pattern, as tight as a pattern can say simply (it
may admit a little more than the bound, never less).
"""

from __future__ import annotations

from buf.validate import validate_pb2
from google.api import field_behavior_pb2
from google.protobuf.descriptor import FieldDescriptor

_NUMBER_RULES = ("int32", "sint32", "sfixed32", "uint32", "fixed32", "double", "float")
_INT64_RULES = ("int64", "sint64", "sfixed64", "uint64", "fixed64")
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def behaviors(field: FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def is_required(field: FieldDescriptor) -> bool:
    rules = field.GetOptions().Extensions[validate_pb2.field]
    return field_behavior_pb2.REQUIRED in behaviors(field) or rules.required


def is_output_only(field: FieldDescriptor) -> bool:
    return field_behavior_pb2.OUTPUT_ONLY in behaviors(field)


def field_rules(field: FieldDescriptor) -> validate_pb2.FieldRules | None:
    options = field.GetOptions()
    return options.Extensions[validate_pb2.field] if options.HasExtension(validate_pb2.field) else None


def value_keywords(rules: validate_pb2.FieldRules, field: FieldDescriptor, base: dict) -> dict:
    """The keywords that narrow one value's schema (an element's, for repeated fields)."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return {}
    typed = getattr(rules, kind)
    may_be_zero = rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
    if kind == "string":
        return _string_keywords(typed, may_be_zero)
    if kind in _NUMBER_RULES:
        return _number_keywords(typed)
    if kind in _INT64_RULES:
        return _int64_keywords(typed, may_be_zero)
    if kind == "enum" and "enum" in base:
        return _enum_keywords(typed, field, base["enum"])
    return {}


def array_keywords(rules: validate_pb2.FieldRules) -> dict:
    keywords = {}
    if rules.HasField("repeated"):
        if rules.repeated.HasField("min_items"):
            keywords["minItems"] = rules.repeated.min_items
        if rules.repeated.HasField("max_items"):
            keywords["maxItems"] = rules.repeated.max_items
    return keywords


def item_rules(rules: validate_pb2.FieldRules) -> validate_pb2.FieldRules | None:
    if rules.HasField("repeated") and rules.repeated.HasField("items"):
        return rules.repeated.items
    return None


def _string_keywords(rules: validate_pb2.StringRules, may_be_zero: bool) -> dict:
    keywords: dict = {}
    if rules.HasField("min_len") and not may_be_zero:
        keywords["minLength"] = rules.min_len
    if rules.HasField("max_len"):
        keywords["maxLength"] = rules.max_len
    if rules.HasField("len"):
        keywords["minLength"] = keywords["maxLength"] = rules.len
    pattern = rules.pattern if rules.HasField("pattern") else (UUID_PATTERN if rules.uuid else None)
    if rules.uuid:
        keywords["format"] = "uuid"
    if pattern:
        keywords["pattern"] = f"^$|{pattern}" if may_be_zero else pattern
    return keywords


def _number_keywords(rules) -> dict:
    keywords: dict = {}
    if rules.HasField("gte"):
        keywords["minimum"] = rules.gte
    elif rules.HasField("gt"):
        keywords |= {"minimum": rules.gt, "exclusiveMinimum": True}
    if rules.HasField("lte"):
        keywords["maximum"] = rules.lte
    elif rules.HasField("lt"):
        keywords |= {"maximum": rules.lt, "exclusiveMaximum": True}
    return keywords


def _int64_keywords(rules, may_be_zero: bool) -> dict:
    low = rules.gte if rules.HasField("gte") else (rules.gt + 1 if rules.HasField("gt") else None)
    high = rules.lte if rules.HasField("lte") else (rules.lt - 1 if rules.HasField("lt") else None)
    if low is None or low < 0:
        return {}
    digits = len(str(high)) if high is not None else 18
    positive = f"[1-9][0-9]{{0,{digits - 1}}}"
    pattern = f"^{positive}$" if low >= 1 and not may_be_zero else f"^(0|{positive})$"
    return {"pattern": pattern}


def _enum_keywords(rules: validate_pb2.EnumRules, field: FieldDescriptor, names: list[str]) -> dict:
    assert field.enum_type is not None  # only called for enum fields
    numbers = {value.name: value.number for value in field.enum_type.values}
    only = set(getattr(rules, "in"))  # `in` is a Python keyword
    allowed = [n for n in names if numbers[n] not in rules.not_in and (not only or numbers[n] in only)]
    return {"enum": allowed} if allowed != names else {}
