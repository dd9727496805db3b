"""The audit trail (libs/audit.py) through real servers and the shared test database:
one record per state-changing call, accepted in the change's own transaction, refused
after the call; reads not audited; nothing secret in records or logs; ListAuditEvents."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf import symbol_database
from loom.batch.v1 import batch_pb2 as pb
from loom.common.v1 import audit_pb2
from loom.scheduler.v1 import scheduler_pb2 as scheduler_pb

from libs import logs
from libs.scratch_db import plain_url
from tests.batch.conftest import create_supplier, place, request_id, unique_category
from tests.support import TEST_JWT_SECRET, auth, from_gateway, serve, stub_for, token

SERVICES = ("batch", "rules", "tracking", "scheduler")
# An admin-only state-changing method of each service, refused to a buyer.
ADMIN_WRITES = {
    "batch": "/loom.batch.v1.BatchService/ResolveReview",
    "rules": "/loom.rules.v1.RulesService/CreateRule",
    "tracking": "/loom.tracking.v1.TrackingService/CreatePost",
    "scheduler": "/loom.scheduler.v1.SchedulerService/CreateJob",
}
ADMIN = auth("admin")


@pytest.fixture(scope="module")
async def services(database_url):
    async with (
        serve("batch", database_url, outbox_dispatch=False) as batch,
        serve("rules", database_url) as rules,
        serve("tracking", database_url) as tracking,
        serve("scheduler", database_url) as scheduler,
    ):
        yield {"batch": batch, "rules": rules, "tracking": tracking, "scheduler": scheduler}


@pytest.fixture(scope="module")
async def stub(services):
    async with stub_for("batch", services["batch"].target) as client:
        yield client


@pytest.fixture
def sql(database_url):
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        yield conn


def records(sql, schema: str, **where) -> list[dict]:
    conditions = " AND ".join(f"{column} = %({column})s" for column in where) or "true"
    cursor = sql.execute(
        f"SELECT *, xmin::text AS tx FROM {schema}.audit_events WHERE {conditions} ORDER BY event_time", where
    )
    columns = [c.name for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


async def settled(sql, schema: str, count: int, **where) -> list[dict]:
    """The records matching where once there are at least count: refusals are written
    just after the caller hears them, by the auditor's group insert."""
    for _ in range(100):
        found = records(sql, schema, **where)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return records(sql, schema, **where)


def someone() -> str:
    return f"person-{uuid.uuid4().hex[:8]}"


async def call(target: str, path: str, metadata) -> grpc.StatusCode:
    """An empty request to any method, by path; its final status code."""
    service_name, _, method_name = path.lstrip("/").partition("/")
    descriptor = symbol_database.Default().pool.FindServiceByName(service_name).methods_by_name[method_name]
    request_class = symbol_database.Default().GetSymbol(descriptor.input_type.full_name)
    response_class = symbol_database.Default().GetSymbol(descriptor.output_type.full_name)
    async with grpc.aio.insecure_channel(target) as channel:
        unary = channel.unary_unary(
            path, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString
        )
        try:
            await unary(request_class(), metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_an_accepted_change_writes_one_ok_record_in_the_changes_own_transaction(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    order = (await place(stub, category, 5)).order
    rid, admin = request_id(), someone()
    await stub.UpdateOrderStatus(
        pb.UpdateOrderStatusRequest(request_id=rid, order_id=order.order_id, status=pb.ORDER_STATUS_AWAITING_SUPPLIER),
        metadata=auth("admin", admin),
    )
    (record,) = records(sql, "batch", request_id=rid)
    assert (record["code"], record["subject"], record["role"]) == ("OK", admin, "admin")
    assert (record["method"], record["resource_id"]) == ("UpdateOrderStatus", order.order_id)
    (key_tx,) = sql.execute("SELECT xmin::text FROM batch.idempotency_keys WHERE request_id = %s", (rid,)).fetchone()
    assert record["tx"] == key_tx


async def test_an_order_placed_through_the_group_commit_is_recorded_in_the_groups_transaction(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    rid = request_id()
    reply = await place(stub, category, 5, rid=rid)
    (record,) = records(sql, "batch", request_id=rid)
    assert (record["method"], record["code"], record["role"]) == ("PlaceOrder", "OK", "buyer")
    (order_tx,) = sql.execute("SELECT xmin::text FROM batch.orders WHERE id = %s", (reply.order.order_id,)).fetchone()
    assert record["tx"] == order_tx


async def test_a_rolled_back_change_leaves_only_its_refusal(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    order = (await place(stub, category, 5)).order
    rid = request_id()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateOrderStatus(  # delivered straight from placed: refused inside the change's transaction
            pb.UpdateOrderStatusRequest(request_id=rid, order_id=order.order_id, status=pb.ORDER_STATUS_DELIVERED),
            metadata=ADMIN,
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [r["code"] for r in await settled(sql, "batch", 1, request_id=rid)] == ["FAILED_PRECONDITION"]


async def test_a_role_the_method_refuses_is_recorded_as_permission_denied(stub, sql):
    buyer = someone()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateSupplier(
            pb.CreateSupplierRequest(request_id=request_id(), supplier=pb.Supplier(name="x")), metadata=auth("buyer", buyer)
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (record,) = await settled(sql, "batch", 1, subject=buyer)
    assert (record["code"], record["role"], record["method"]) == ("PERMISSION_DENIED", "buyer", "CreateSupplier")


async def test_bad_input_is_recorded_as_invalid_argument(stub, sql):
    admin = someone()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateSupplier(pb.CreateSupplierRequest(request_id="", supplier=pb.Supplier()), metadata=auth("admin", admin))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [r["code"] for r in await settled(sql, "batch", 1, subject=admin)] == ["INVALID_ARGUMENT"]


async def test_a_call_without_a_token_is_recorded_under_its_call_request_id(stub, sql):
    call_id = f"call-{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ResolveReview(pb.ResolveReviewRequest(), metadata=(("x-request-id", call_id),))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (record,) = await settled(sql, "batch", 1, request_id=call_id)
    assert (record["code"], record["role"], record["subject"]) == ("UNAUTHENTICATED", "anonymous", "")


async def test_reads_are_not_audited(stub, sql):
    admin = someone()
    supplier = await create_supplier(stub, unique_category())
    await stub.GetSupplier(pb.GetSupplierRequest(supplier_id=supplier.supplier_id), metadata=auth("admin", admin))
    await stub.ListSuppliers(pb.ListSuppliersRequest(), metadata=auth("admin", admin))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetSupplier(pb.GetSupplierRequest(supplier_id=str(uuid.uuid4())), metadata=auth("admin", admin))
    with pytest.raises(grpc.aio.AioRpcError):  # a refused write after them: once it is in, anything before is too
        await stub.CreateSupplier(pb.CreateSupplierRequest(request_id=""), metadata=auth("admin", admin))
    assert [r["method"] for r in await settled(sql, "batch", 1, subject=admin)] == ["CreateSupplier"]


async def test_records_and_logs_hold_no_token_and_no_raw_ip(stub, sql):
    buyer, ip = someone(), "203.0.113.77"
    bearer = token("buyer", buyer)
    category = unique_category()
    await create_supplier(stub, category)
    buffer = io.StringIO()
    redactor = logs.configure(service="batch", level="info", redaction_key=TEST_JWT_SECRET, stream=buffer)
    try:
        metadata = (("authorization", f"Bearer {bearer}"), *from_gateway(ip))
        await stub.PlaceOrder(
            pb.PlaceOrderRequest(request_id=request_id(), category=category, quantity=3,
                                 style=pb.StyleDetails(style_count=1, colors=["black"], sizes=["M"])),
            metadata=metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateSupplier(pb.CreateSupplierRequest(request_id=request_id()), metadata=metadata)
    finally:
        logs.configure(service="test", level="warning", redaction_key=TEST_JWT_SECRET)
    found = await settled(sql, "batch", 2, subject=buyer)
    assert sorted(r["code"] for r in found) == ["OK", "PERMISSION_DENIED"]
    assert {r["client_ip_hash"] for r in found} == {redactor.hash_ip(ip)}
    dumped = repr(found) + buffer.getvalue()
    assert buffer.getvalue().count('"rpc"') >= 2
    for secret in (bearer, bearer.split(".")[2], ip, TEST_JWT_SECRET):
        assert secret not in dumped


async def test_list_audit_events_is_for_admins_only(stub):
    for role in ("buyer", "supplier", "service"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=auth(role))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_list_audit_events_filters_by_subject_method_code_and_time_and_pages(stub, sql):
    admin = someone()
    before = datetime.now(UTC) - timedelta(seconds=1)
    for _ in range(3):
        await create_supplier_as(stub, admin)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateSupplier(pb.CreateSupplierRequest(request_id=""), metadata=auth("admin", admin))
    await settled(sql, "batch", 4, subject=admin)
    listed = await list_all(stub, subject=admin, page_size=2)
    assert [e.code for e in listed] == ["INVALID_ARGUMENT", "OK", "OK", "OK"]  # newest first
    assert all(e.service == "batch" and e.method == "CreateSupplier" and e.subject == admin for e in listed)
    assert len(await list_all(stub, subject=admin, code="OK")) == 3
    assert await list_all(stub, subject=admin, method="PlaceOrder") == []
    request = audit_pb2.ListAuditEventsRequest(subject=admin)
    request.end_time.FromDatetime(before)
    assert list((await stub.ListAuditEvents(request, metadata=ADMIN)).audit_events) == []
    request = audit_pb2.ListAuditEventsRequest(subject=admin)
    request.start_time.FromDatetime(before)
    assert len((await stub.ListAuditEvents(request, metadata=ADMIN)).audit_events) == 4


async def create_supplier_as(stub, admin: str) -> None:
    await stub.CreateSupplier(
        pb.CreateSupplierRequest(
            request_id=request_id(),
            supplier=pb.Supplier(name="Audit Apparel", categories=[unique_category()], moq=10, capacity=20,
                                 price_tiers=[pb.PriceTier(min_quantity=1, unit_price="1.00")], active=True,
                                 max_styles_per_batch=5, lead_time_days=3),
        ),
        metadata=auth("admin", admin),
    )


async def list_all(stub, **filters) -> list[audit_pb2.AuditEvent]:
    found, page_token = [], ""
    while True:
        reply = await stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_token=page_token, **filters), metadata=ADMIN)
        found += reply.audit_events
        page_token = reply.next_page_token
        if not page_token:
            return found


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_records_its_own_refusals_and_lists_them(services, sql, service):
    buyer = someone()
    assert await call(services[service].target, ADMIN_WRITES[service], auth("buyer", buyer)) == grpc.StatusCode.PERMISSION_DENIED
    (record,) = await settled(sql, service, 1, subject=buyer)
    assert record["method"] == ADMIN_WRITES[service].rpartition("/")[2]
    async with stub_for(service, services[service].target) as client:
        reply = await client.ListAuditEvents(audit_pb2.ListAuditEventsRequest(subject=buyer), metadata=ADMIN)
    assert [(e.service, e.code) for e in reply.audit_events] == [(service, "PERMISSION_DENIED")]


@pytest.mark.parametrize("service", ("batch", "rules", "tracking"))
async def test_purge_old_data_deletes_audit_records_past_their_retention_only(services, sql, service):
    old, recent = someone(), someone()
    for subject, age in ((old, timedelta(days=400)), (recent, timedelta(days=300))):
        sql.execute(
            f"INSERT INTO {service}.audit_events VALUES (%s, now() - %s, %s, 'admin', 'X', '', '', 'OK', '')",
            (uuid.uuid4(), age, subject),
        )
    async with stub_for(service, services[service].target) as client:
        request = symbol_database.Default().GetSymbol(f"loom.{service}.v1.PurgeOldDataRequest")
        # The request's retention_days governs the service's own data, never the audit trail (365 days).
        reply = await client.PurgeOldData(request(request_id=request_id(), retention_days=1), metadata=ADMIN)
    assert reply.audit_events_deleted >= 1
    assert records(sql, service, subject=old) == []
    assert len(records(sql, service, subject=recent)) == 1


async def test_the_schedulers_purge_job_deletes_its_audit_records_past_their_retention(services, sql):
    old = someone()
    sql.execute(
        "INSERT INTO scheduler.audit_events VALUES (%s, now() - interval '400 days', %s, 'admin', 'X', '', '', 'OK', '')",
        (uuid.uuid4(), old),
    )
    async with stub_for("scheduler", services["scheduler"].target) as client:
        reply = await client.RunJobNow(
            scheduler_pb.RunJobNowRequest(request_id=request_id(), job_name="purge-job-runs", wait=True), metadata=ADMIN
        )
    assert reply.run.result["audit_events_deleted"] >= 1
    assert records(sql, "scheduler", subject=old) == []
