"""The audit trail: one record per call of a state-changing RPC, accepted or refused.

Which methods are audited is declared in the protos: every Loom RPC whose access rule
does not say `effect: EFFECT_READ` (reads) or `EFFECT_INGEST` (the public's engagement
events, each stored event being its own record). The record goes to the owning
service's own `<schema>.audit_events`:

- **accepted**: in the same transaction as the change. The interceptor leaves the call's
  pending record in a context variable; the transaction that claims the call's
  idempotency key (`libs.idempotency.claim`, inside the change's transaction by
  construction, AIP-155) or that otherwise makes the change calls `write_pending(conn)`.
  A transaction that rolls back takes its record with it; the group commit of PlaceOrder
  writes its units' records in the group's transaction (`rows_of`).
- **refused** (no token, wrong role, bad input, a domain error, a rolled-back change): the
  interceptor queues the record with the final status code as it answers, and the
  auditor writes it just after, on a short transaction of its own shared with the other
  refusals queued meanwhile (`Auditor`): a burst of refusals never waits on the database.

Exactly one record per call: the record's id is made once per call and inserted with
ON CONFLICT DO NOTHING, and the after-call write is skipped once a transaction holding
the record committed. The caller's IP is kept only as a keyed hash (`libs.logs.Redactor`,
the same hash the log lines carry); the token and its claims other than subject and role
never reach a record.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TypeVar, cast

import psycopg
import structlog
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from loom.common.v1 import access_pb2, audit_pb2
from sqlalchemy import Column, DateTime, Index, MetaData, Table, Text, and_, delete, select, tuple_
from sqlalchemy.dialects.postgresql import UUID, Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert

from libs import pagination
from libs.auth import Caller
from libs.db import after_commit, run_in_transaction

T = TypeVar("T")
E = TypeVar("E", bound=Insert | ReturningInsert)
_log = structlog.get_logger("loom.audit")
UNAUDITED = (access_pb2.EFFECT_READ, access_pb2.EFFECT_INGEST)
MAX_FIELD_LENGTH = 256  # subject, resource and request ids are cut to this (a record is not a dump)
COLUMNS = ("audit_event_id", "event_time", "subject", "role", "method", "resource_id", "request_id", "code",
           "client_ip_hash")


def audit_table(metadata: MetaData) -> Table:
    """`<schema>.audit_events`, newest first by (event_time, audit_event_id)."""
    return Table(
        "audit_events",
        metadata,
        Column("audit_event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_time", DateTime(timezone=True), nullable=False),
        Column("subject", Text, nullable=False),
        Column("role", Text, nullable=False),
        Column("method", Text, nullable=False),
        # Identifiers compare as bytes, whatever the database's locale (as every id column does).
        Column("resource_id", Text(collation="C"), nullable=False),
        Column("request_id", Text(collation="C"), nullable=False),
        Column("code", Text, nullable=False),
        Column("client_ip_hash", Text, nullable=False),
        Index("audit_events_event_time", "event_time", "audit_event_id"),
        Index("audit_events_subject_time", "subject", "event_time"),
    )


def audited(rule: access_pb2.AccessRule | None) -> bool:
    """Whether calls of a method with this access rule are audited (Loom's own non-reads)."""
    return rule is not None and rule.effect not in UNAUDITED


@cache
def _resource_paths(descriptor: Descriptor) -> tuple[tuple[str, ...], ...]:
    """Where a request names its resource, best first: its own `*_id` fields (not
    request_id), those of its message fields (`supplier.supplier_id`), then `*_name`."""
    def named(d: Descriptor, suffix: str) -> list[str]:
        return [f.name for f in d.fields if f.type == FieldDescriptor.TYPE_STRING and f.name.endswith(suffix)
                and f.name != "request_id" and not f.is_repeated]

    paths: list[tuple[str, ...]] = [(name,) for name in named(descriptor, "_id")]
    for f in descriptor.fields:
        if f.message_type is not None and not f.is_repeated:
            paths += [(f.name, name) for name in named(f.message_type, "_id")]
    paths += [(name,) for name in named(descriptor, "_name")]
    return tuple(paths)


def resource_id(request: object) -> str:
    """The id of the resource a request names; '' when it names none (a creation)."""
    if not isinstance(request, Message):
        return ""
    for path in _resource_paths(request.DESCRIPTOR):
        value: object = request
        for part in path:
            value = getattr(value, part)
        if value:
            return str(value)[:MAX_FIELD_LENGTH]
    return ""


@dataclass
class Pending:
    """The record of the call being served, until a transaction or the interceptor writes it."""

    table: Table
    method: str
    request_id: str
    resource_id: str
    event_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    audit_event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    subject: str = ""
    role: str = "anonymous"
    client_ip_hash: str = ""
    written: bool = False  # a transaction holding the record committed
    queued: bool = False  # handed to the auditor's group insert

    def identify(self, call_request_id: str, caller: Caller, client_ip_hash: str) -> None:
        """Who calls, from where; the call's x-request-id when the request has no request_id."""
        self.request_id = self.request_id or call_request_id[:MAX_FIELD_LENGTH]
        self.subject, self.role, self.client_ip_hash = caller.subject[:MAX_FIELD_LENGTH], caller.role_name, client_ip_hash

    def row(self, code: str) -> dict:
        return {
            "audit_event_id": self.audit_event_id,
            "event_time": self.event_time,
            "subject": self.subject,
            "role": self.role,
            "method": self.method,
            "resource_id": self.resource_id,
            "request_id": self.request_id,
            "code": code,
            "client_ip_hash": self.client_ip_hash,
        }

    def mark_written(self) -> None:
        self.written = True


_pending: contextvars.ContextVar[Pending | None] = contextvars.ContextVar("loom_audit_pending", default=None)


def pending() -> Pending | None:
    """The record of the call the running task serves, while not yet written."""
    found = _pending.get()
    return None if found is None or found.written else found


async def write_pending(conn: AsyncConnection) -> None:
    """Writes the running call's record as accepted in conn's transaction (run_in_transaction's):
    the record commits with the change or rolls back with it. Nothing outside an audited call."""
    record = pending()
    if record is None:
        return
    await conn.execute(insert(record.table).values(**record.row("OK")).on_conflict_do_nothing())
    after_commit(record.mark_written)


def with_pending(statement: E) -> E:
    """statement (an INSERT of the change) carrying the running call's record as a
    data-modifying CTE: written by the same round trip, in the same transaction. The
    idempotency claim uses it, so auditing an accepted change costs no extra round trip."""
    record = pending()
    if record is None:
        return statement
    after_commit(record.mark_written)
    audit_insert = insert(record.table).values(**record.row("OK")).on_conflict_do_nothing().cte("audit_record")
    return cast(E, statement.add_cte(audit_insert))  # add_cte returns the statement itself


def with_record(work: Callable[[AsyncConnection], Awaitable[T]]) -> Callable[[AsyncConnection], Awaitable[T]]:
    """work, writing the running call's record first: for a change made without an
    idempotency key (event deliveries), run as `run_in_transaction(engine, with_record(work))`."""
    async def recorded(conn: AsyncConnection) -> T:
        await write_pending(conn)
        return await work(conn)

    return recorded


async def write_accepted(driver: psycopg.AsyncConnection, records: list[Pending]) -> None:
    """Writes accepted records in the open transaction of a driver connection, one statement
    for all (the group commit's hot path: PlaceOrder's units share one transaction).
    The caller marks them written once that transaction committed."""
    if records:
        await _insert_rows(driver, records[0].table, [record.row("OK") for record in records])


async def _insert_rows(driver: psycopg.AsyncConnection, table: Table, rows: list[dict]) -> None:
    """One statement for any number of records: arrays in binary, unnested (SQLAlchemy's
    executemany costs more CPU per row than the insert itself)."""
    await driver.execute(
        f"""
        INSERT INTO {table.fullname} ({", ".join(COLUMNS)})
        SELECT * FROM unnest(%(audit_event_id)b::uuid[], %(event_time)b::timestamptz[], %(subject)b::text[],
                             %(role)b::text[], %(method)b::text[], %(resource_id)b::text[], %(request_id)b::text[],
                             %(code)b::text[], %(client_ip_hash)b::text[])
        ON CONFLICT DO NOTHING
        """,
        {column: [row[column] for row in rows] for column in COLUMNS},
    )


async def _insert_driver(conn: AsyncConnection, *, table: Table, rows: list[dict]) -> None:
    raw = await conn.get_raw_connection()
    assert isinstance(raw.driver_connection, psycopg.AsyncConnection)
    await _insert_rows(raw.driver_connection, table, rows)


class Auditor:
    """A service's audit trail: its table, and the engine it writes refusals with.

    Refusals come in bursts (a client without a token retrying, a scan of every method):
    one transaction each would queue the burst on the connection pool for seconds, and the
    callers with it. So a refusal's record is queued and the caller answered at once; the
    queue is group-inserted: what arrives while an insert is in flight goes in the next
    one, so a burst of hundreds costs a handful of short transactions."""

    MAX_GROUP = 1000

    def __init__(self, schema: str | None) -> None:
        self.table = audit_table(MetaData(schema=schema)) if schema else None
        self.engine: AsyncEngine | None = None
        self._waiting: list[tuple[Pending, dict, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    @property
    def active(self) -> bool:
        return self.table is not None and self.engine is not None

    def begin(self, method_path: str, request: object) -> Pending:
        """Opens the call's pending record (set for the rest of the call's task)."""
        assert self.table is not None
        own = getattr(request, "request_id", "") if isinstance(request, Message) else ""
        record = Pending(self.table, method_path.rpartition("/")[2], str(own)[:MAX_FIELD_LENGTH], resource_id(request))
        _pending.set(record)
        return record

    def record_refusal(self, record: Pending, code: str) -> None:
        """Queues a refused call's record for the next group insert, without making the
        caller wait for it (nothing changed; a burst of refusals costs the callers nothing)."""
        self._enqueue(record, code)

    async def finish(self, record: Pending, code: str) -> None:
        """After the call: writes its record with the final code unless a transaction already
        did or it is queued already; waits until it is in. A cancelled wait still writes it."""
        if record.written or record.queued or self.engine is None:
            return
        await self._enqueue(record, code)

    def _enqueue(self, record: Pending, code: str) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        if record.written or record.queued or self.engine is None:
            done.set_result(None)
            return done
        record.queued = True
        self._waiting.append((record, record.row(code), done))
        if self._flusher is None:
            # A context of its own: the flusher serves many calls, not the one that started it.
            self._flusher = asyncio.create_task(self._flush(), name="audit-records", context=contextvars.Context())
        return done

    async def drain(self) -> None:
        """Lets the records queued so far be written (a server stopping)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        assert self.engine is not None and self.table is not None
        table = self.table
        group: list[tuple[Pending, dict, asyncio.Future]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[: self.MAX_GROUP], self._waiting[self.MAX_GROUP:]
                rows = [row for _, row, _ in group]
                try:
                    await run_in_transaction(self.engine, functools.partial(_insert_driver, table=table, rows=rows),
                                             attempts=2)
                    for record, _, _ in group:
                        record.written = True
                except Exception as error:  # noqa: BLE001 - the calls' own answers stand; the loss is logged
                    _log.warning("audit records not written", records=len(group), error=type(error).__name__)
                for _, _, done in group:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flusher = None
            for _, _, done in group + self._waiting:  # only when the flusher itself was cancelled
                if not done.done():
                    done.set_result(None)


class AuditTrail:
    """Servicer mixin (listed before the generated base): ListAuditEvents over the service's
    own records. The wiring hands it the service's auditor (`serve_audit`)."""

    _auditor: Auditor | None = None

    def serve_audit(self, auditor: Auditor) -> None:
        self._auditor = auditor

    @property
    def audit_table(self) -> Table:
        assert self._auditor is not None and self._auditor.table is not None, "serve_audit was not called"
        return self._auditor.table

    async def ListAuditEvents(self, request: audit_pb2.ListAuditEventsRequest, context) -> audit_pb2.ListAuditEventsResponse:
        assert self._auditor is not None and self._auditor.engine is not None, "serve_audit was not called"
        table = self.audit_table
        return await list_events(self._auditor.engine, table, str(table.schema), request)


def _conditions(table: Table, request: audit_pb2.ListAuditEventsRequest) -> list:
    c = table.c
    found = []
    if request.subject:
        found.append(c.subject == request.subject)
    if request.method:
        found.append(c.method == request.method)
    if request.code:
        found.append(c.code == request.code)
    if request.HasField("start_time"):
        found.append(c.event_time >= request.start_time.ToDatetime(UTC))
    if request.HasField("end_time"):
        found.append(c.event_time < request.end_time.ToDatetime(UTC))
    return found


def _message(service: str, row) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        audit_event_id=str(row.audit_event_id), service=service, subject=row.subject, role=row.role,
        method=row.method, resource_id=row.resource_id, request_id=row.request_id, code=row.code,
        client_ip_hash=row.client_ip_hash,
    )
    event.event_time.FromDatetime(row.event_time)
    return event


async def list_events(
    engine: AsyncEngine, table: Table, service: str, request: audit_pb2.ListAuditEventsRequest
) -> audit_pb2.ListAuditEventsResponse:
    """ListAuditEvents for one service: newest first, keyset-paged on (event_time, id)."""
    limit = pagination.page_size(request.page_size)
    filters = audit_pb2.ListAuditEventsRequest(
        subject=request.subject, method=request.method, code=request.code,
        start_time=request.start_time if request.HasField("start_time") else None,
        end_time=request.end_time if request.HasField("end_time") else None,
    )
    scope = f"audit:{service}:{filters.SerializeToString(deterministic=True).hex()}"
    cursor = pagination.decode_token(request.page_token, scope=scope)
    conditions = _conditions(table, request)
    if cursor is not None:
        after = (datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1]))
        conditions.append(tuple_(table.c.event_time, table.c.audit_event_id) < tuple_(*after))
    query = (select(table).where(and_(True, *conditions))
             .order_by(table.c.event_time.desc(), table.c.audit_event_id.desc()).limit(limit + 1))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    token = ""
    if len(rows) > limit:
        rows = rows[:limit]
        token = pagination.encode_token([rows[-1].event_time.isoformat(), str(rows[-1].audit_event_id)], scope=scope)
    return audit_pb2.ListAuditEventsResponse(audit_events=[_message(service, r) for r in rows], next_page_token=token)


async def purge(conn: AsyncConnection, table: Table, retention_days: int) -> int:
    """Deletes records older than the retention; how many went."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    result = await conn.execute(delete(table).where(table.c.event_time < cutoff))
    return result.rowcount or 0
