"""Values the wire allows but no proto declares are rejected before a servicer sees them."""

from google.protobuf import struct_pb2
from loom.rules.v1 import rules_pb2
from loom.tracking.v1 import tracking_pb2

from libs.wellformed import violations


def paths(message) -> list[str]:
    return [v.field for v in violations(message)]


def test_undeclared_enum_numbers_are_violations_with_their_path():
    request = rules_pb2.CreateRuleRequest()
    request.rule.type = -1
    assert paths(request) == ["rule.type"]


def test_timestamps_need_nanos_in_range_and_a_year_from_1_to_9999():
    request = tracking_pb2.TrackInteractionsRequest()
    request.interactions.add().occurred_time.nanos = -1
    request.interactions.add().occurred_time.seconds = 253402300800
    request.interactions.add().occurred_time.seconds = 253402300799
    assert paths(request) == ["interactions[0].occurred_time", "interactions[1].occurred_time"]


def test_declared_values_and_unset_fields_pass():
    request = tracking_pb2.TrackInteractionRequest()
    request.interaction.type = tracking_pb2.INTERACTION_TYPE_HOVER
    request.interaction.occurred_time.GetCurrentTime()
    assert paths(request) == [] and paths(rules_pb2.ListNotificationsRequest()) == []


def test_undeclared_values_are_found_inside_mutually_recursive_types():
    deep = struct_pb2.Struct()
    deep.fields["list"].list_value.values.add().struct_value.fields["leaf"].list_value.values.add().null_value = 7
    assert paths(deep) == ["fields.list_value.values[0].struct_value.fields.list_value.values[0].null_value"]
