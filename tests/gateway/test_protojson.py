"""The compiled JSON mapping equals protobuf's json_format on every Loom message type.

Messages are generated from the descriptors (every field kind Loom uses: scalars at
their edges, enums including numbers no name has, well-known types, repeated and
nested messages), printed both ways and parsed back both ways.
"""

from __future__ import annotations

import random

import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from loom.tracking.v1 import tracking_pb2

from services.gateway import protojson
from services.gateway.routes import loom_services

SAMPLES = 25
STRINGS = ["", "plain", "ünïcödé ✓", "line\nbreak", 'quote " and \\', "a" * 300]
DOUBLES = [0.0, -0.0, 0.1, 1e300, -2.5, float("nan"), float("inf"), float("-inf"), 12345678.125]


def loom_message_types() -> list[Descriptor]:
    """Every message type a Loom RPC takes or answers, and every type inside them."""
    found: dict[str, Descriptor] = {}

    def visit(descriptor: Descriptor) -> None:
        if descriptor.full_name in found:
            return
        found[descriptor.full_name] = descriptor
        for field in descriptor.fields:
            if field.message_type is not None:
                visit(field.message_type)

    for _, service in loom_services():
        for method in service.methods:
            visit(method.input_type)
            visit(method.output_type)
    return sorted((d for d in found.values() if protojson.is_plain(d) and not d.GetOptions().map_entry),
                  key=lambda d: d.full_name)


def populate(message: Message, rng: random.Random, depth: int = 0) -> Message:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue  # left unset: defaults and presence are part of the mapping
        if field.is_repeated:
            container = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                if field.message_type is not None:
                    if depth < 3:
                        fill_message(container.add(), rng, depth + 1)
                else:
                    container.append(scalar(field, rng))
        elif field.message_type is not None:
            if depth < 3:
                fill_message(getattr(message, field.name), rng, depth + 1)
        else:
            setattr(message, field.name, scalar(field, rng))
    return message


def fill_message(message: Message, rng: random.Random, depth: int) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.FromSeconds(rng.randint(0, 4_000_000_000))
        message.nanos = rng.choice([0, 1_000_000, 123_456_789])
    elif name == "google.protobuf.Duration":
        message.seconds, message.nanos = rng.randint(0, 10**6), rng.choice([0, 500_000_000])
    elif name == "google.protobuf.FieldMask":
        message.paths.extend(rng.sample(["name", "moq", "price_tiers", "lead_time_days"], rng.randint(0, 3)))
    elif name == "google.protobuf.Struct":
        message.update({"text": rng.choice(STRINGS), "n": rng.choice([1, 2.5]), "flag": True, "none": None,
                        "nested": {"list": [1, "two"]}})
    elif name == "google.protobuf.Value":
        message.string_value = rng.choice(STRINGS)
    elif name == "google.protobuf.ListValue":
        message.extend([1, "x", False])
    elif name == "google.protobuf.Any":
        message.Pack(error_details_pb2.ErrorInfo(reason=rng.choice(STRINGS), domain="loom", metadata={"k": "v"}))
    else:
        message.SetInParent()
        populate(message, rng, depth)


def scalar(field: FieldDescriptor, rng: random.Random):
    kind = field.type
    if field.enum_type is not None:
        numbers = [v.number for v in field.enum_type.values]
        return rng.choice(numbers + [max(numbers) + 7])  # open enums keep numbers no name has
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"\x00\xffbytes", bytes(range(40))])
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.choice([True, False])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(DOUBLES) if kind == FieldDescriptor.TYPE_DOUBLE else rng.choice([0.0, 0.1, 3.4e38, 1.5])
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1])
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice([0, 1, 2**64 - 1])
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1])
    return rng.choice([0, 1, -1, 2**31 - 1, -(2**31)])


def samples(descriptor: Descriptor) -> list[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    return [populate(cls(), random.Random(f"{descriptor.full_name}/{seed}")) for seed in range(SAMPLES)]


MESSAGE_TYPES = loom_message_types()


def test_the_generated_messages_cover_every_field_kind_loom_uses():
    kinds = {f.type for d in MESSAGE_TYPES for f in d.fields}
    assert {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BOOL} <= kinds
    nested = {f.message_type.full_name for d in MESSAGE_TYPES for f in d.fields if f.message_type is not None}
    assert {"google.protobuf.Timestamp", "google.protobuf.Struct", "google.protobuf.Any"} <= nested


@pytest.mark.parametrize("descriptor", MESSAGE_TYPES, ids=lambda d: d.full_name)
def test_printing_equals_json_format(descriptor):
    for message in samples(descriptor):
        assert protojson.to_dict(message) == json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True
        ), message


@pytest.mark.parametrize("descriptor", MESSAGE_TYPES, ids=lambda d: d.full_name)
def test_parsing_equals_json_format_or_leaves_the_document_to_it(descriptor):
    cls = message_factory.GetMessageClass(descriptor)
    for message in samples(descriptor):
        for document in (
            json_format.MessageToDict(message),
            json_format.MessageToDict(message, always_print_fields_with_no_presence=True),
            json_format.MessageToDict(message, preserving_proto_field_name=True),
        ):
            parsed = cls()
            if protojson.parse_into(document, parsed):
                assert parsed == json_format.ParseDict(document, cls()), document


def test_the_compiled_path_parses_most_generated_documents():
    taken = total = 0
    for descriptor in MESSAGE_TYPES:
        cls = message_factory.GetMessageClass(descriptor)
        for message in samples(descriptor):
            total += 1
            taken += protojson.parse_into(json_format.MessageToDict(message), cls())
    assert taken > total / 2, (taken, total)


def test_a_typical_interaction_takes_the_compiled_path():
    document = {"interaction": {"clientEventId": "e1", "type": "INTERACTION_TYPE_HOVER", "productId": "p1",
                                "session_id": "s1", "occurredTime": "2024-05-01T12:00:00.250Z"}}
    parsed = tracking_pb2.TrackInteractionRequest()
    assert protojson.parse_into(document, parsed)
    assert parsed == json_format.ParseDict(document, tracking_pb2.TrackInteractionRequest())


@pytest.mark.parametrize(
    "document",
    [
        {"interaction": {"type": 3.5}},
        {"interaction": {"type": 99}},
        {"interaction": {"type": "INTERACTION_TYPE_NOPE"}},
        {"interaction": {"type": "3"}},
        {"interaction": {"type": True}},
        {"interaction": {"productId": "a", "product_id": "b"}},
        {"interaction": {"productId": None}},
        {"interaction": {"productId": 5}},
        {"interaction": []},
        {"unknown": 1},
    ],
)
def test_documents_json_format_must_judge_are_declined(document):
    assert not protojson.parse_into(document, tracking_pb2.TrackInteractionRequest())


@pytest.mark.parametrize(("value", "ok"), [(3, True), (3.0, True), (3.5, False), (99, False), (-1, False),
                                           ("INTERACTION_TYPE_HOVER", True), ("HOVER", False), ("1", False),
                                           (True, False), (None, False)])
def test_an_enum_json_value_must_name_a_defined_value(value, ok):
    assert protojson.enum_json_ok(tracking_pb2.InteractionType.DESCRIPTOR, value) is ok
