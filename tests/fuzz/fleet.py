"""Calling any Loom RPC by its descriptor, and fingerprinting a service's rows."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import psycopg
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from loom.batch.v1 import batch_pb2
from loom.common.v1 import access_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2

from libs.scratch_db import plain_url
from tests.support import auth

SERVICE_DESCRIPTORS: dict[str, d.ServiceDescriptor] = {
    "batch": batch_pb2.DESCRIPTOR.services_by_name["BatchService"],
    "rules": rules_pb2.DESCRIPTOR.services_by_name["RulesService"],
    "tracking": tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"],
    "scheduler": scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
}
ROLE_NAMES = {access_pb2.ROLE_ADMIN: "admin", access_pb2.ROLE_BUYER: "buyer", access_pb2.ROLE_SUPPLIER: "supplier",
              access_pb2.ROLE_SERVICE: "service"}
# What a service's own background work writes after an *accepted* request (the
# rules evaluation worker, the scheduler's leader and its runs): it may change
# between two fingerprints whatever the request under test did, so it is left out
# of the comparison — whole tables (empty tuple) or the columns named.
BACKGROUND = {
    "rules": {"executions": (), "notifications": (), "events": ("lease_until", "lease_owner", "attempts", "evaluated_time")},
    "scheduler": {"job_runs": (), "apscheduler_jobs": (), "jobs": ("applied_version",)},
}
# Every state-changing call, refused ones included, leaves its audit record: the call's own
# record, not a change the call made (tests/security/test_audit.py proves one per call).
AUDIT_TABLE = "audit_events"
CALL_TIMEOUT_SECONDS = 10.0
STREAM_PEEK_SECONDS = 0.5
CHANNEL_OPTIONS = (("grpc.max_send_message_length", 64 * 1024 * 1024),)


def all_methods() -> list[tuple[str, d.MethodDescriptor]]:
    return [(service, method) for service, desc in SERVICE_DESCRIPTORS.items() for method in desc.methods]


def caller_role(method: d.MethodDescriptor) -> str:
    """The most privileged role the method's access option allows."""
    rule = method.GetOptions().Extensions[access_pb2.access]
    allowed = list(rule.roles)
    return "admin" if access_pb2.ROLE_ADMIN in allowed else ROLE_NAMES[allowed[0]]


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    response: Message | None = None


def invoke(channel: grpc.Channel, method: d.MethodDescriptor, request: Message, role: str | None = None) -> Outcome:
    """Calls the method; a server-streaming one is read for a moment (its first messages)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = GetMessageClass(method.output_type)
    metadata = auth(role or caller_role(method))
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                          response_deserializer=response_class.FromString)
            first = next(iter(stream(request, metadata=metadata, timeout=STREAM_PEEK_SECONDS)), None)
            return Outcome(grpc.StatusCode.OK, "", first)
        call = channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                   response_deserializer=response_class.FromString)
        return Outcome(grpc.StatusCode.OK, "", call(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS))
    except grpc.RpcError as error:
        code = error.code()
        if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Outcome(grpc.StatusCode.OK, "stream open")  # a watch that had nothing to say yet
        return Outcome(code, error.details() or "")


def open_sync_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def fingerprint(database_url: str, schema: str, background: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """An md5 of every table's rows in the schema, by table.

    `background` names what the service's own background work writes: a table with
    an empty tuple is left out, otherwise those columns of it are. The audit trail is
    always left out.
    """
    background = background or {}
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
            )
            if background.get(name) != () and name != AUDIT_TABLE
        ]
        if not tables:
            return {}

        def row_text(table: str) -> str:
            columns = background.get(table)
            if not columns:
                return "r::text"
            return "(to_jsonb(r) - ARRAY[" + ", ".join(f"'{c}'" for c in columns) + "])::text"

        query = " UNION ALL ".join(
            f"SELECT '{t}', md5(coalesce(string_agg({row_text(t)}, '|' ORDER BY {row_text(t)}), '')) "
            f'FROM "{schema}"."{t}" r'
            for t in tables
        )
        return dict(conn.execute(query).fetchall())
