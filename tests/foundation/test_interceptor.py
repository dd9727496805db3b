"""The shared call interceptor, through a real server with a purpose-built servicer.

The servicer below stands in for any Loom service: each method fails or
answers in one way the interceptor must handle.
"""

import asyncio
import io
import json
import uuid

import grpc
import psycopg
import pytest
import sqlalchemy.exc
from loom.batch.v1 import batch_pb2, batch_pb2_grpc

from libs import logs
from libs.bootstrap import ServiceSpec, start
from libs.errors import FieldViolation, InvalidArgument, field_violations, status_details
from services.batch.settings import BatchSettings
from tests.support import TEST_JWT_SECRET, auth, settings_for

# The interceptor checks declared constraints (a batch id is a UUID) before the probe servicer sees a call.
BATCH_ID = "0b6f5a1e-3c2d-4e8f-9a7b-1c2d3e4f5a6b"


class ProbeServicer(batch_pb2_grpc.BatchServiceServicer):
    async def GetSupplier(self, request, context):
        raise InvalidArgument([FieldViolation("supplier_id", "must be a UUID")])

    async def ListSuppliers(self, request, context):
        raise RuntimeError('psycopg.errors.UndefinedTable: relation "batch.secret" does not exist\nSELECT * FROM x')

    async def ListBatches(self, request, context):
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached, connection timed out")

    async def ListOrders(self, request, context):
        # Hot paths send statements to psycopg directly: its errors arrive unwrapped.
        raise psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")

    async def GetBatch(self, request, context):
        return batch_pb2.GetBatchResponse(batch=batch_pb2.Batch(batch_id=request.batch_id))

    async def CreateSupplier(self, request, context):
        return batch_pb2.CreateSupplierResponse(supplier=request.supplier)


async def _setup(context) -> None:
    batch_pb2_grpc.add_BatchServiceServicer_to_server(ProbeServicer(), context.server)


PROBE = ServiceSpec(
    name="batch",
    settings_class=BatchSettings,
    grpc_services=("loom.batch.v1.BatchService",),
    setup=_setup,
    uses_database=False,
)


@pytest.fixture(scope="module")
async def stub():
    running = await start(PROBE, settings_for("batch", database_url=None), port=0)
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield batch_pb2_grpc.BatchServiceStub(channel)
    await running.stop(grace=0)


async def test_call_without_token_to_admin_method_is_unauthenticated(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CreateSupplier(batch_pb2.CreateSupplierRequest())
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_invalid_token_is_unauthenticated(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetBatch(batch_pb2.GetBatchRequest(), metadata=(("authorization", "Bearer not-a-jwt"),))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_token_signed_with_another_key_is_unauthenticated(stub):
    from libs.auth import mint_token

    forged = mint_token("another-key-of-full-length-but-not-ours!", subject="mallory", role="admin")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetBatch(batch_pb2.GetBatchRequest(), metadata=(("authorization", f"Bearer {forged}"),))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_verified_before_is_refused_once_it_expires(stub):
    from libs.auth import mint_token

    token = mint_token(TEST_JWT_SECRET, subject="buyer-1", role="admin", ttl_seconds=1)
    metadata = (("authorization", f"Bearer {token}"),)
    await stub.GetBatch(batch_pb2.GetBatchRequest(batch_id=str(uuid.uuid4())), metadata=metadata)
    await asyncio.sleep(1.1)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetBatch(batch_pb2.GetBatchRequest(batch_id=str(uuid.uuid4())), metadata=metadata)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_role_is_permission_denied(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CreateSupplier(batch_pb2.CreateSupplierRequest(), metadata=auth("buyer"))
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_allowed_role_reaches_the_servicer(stub):
    reply = await stub.GetBatch(batch_pb2.GetBatchRequest(batch_id=BATCH_ID), metadata=auth("supplier", "s-1"))
    assert reply.batch.batch_id == BATCH_ID


async def test_domain_validation_error_is_invalid_argument_with_field_violations(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetSupplier(batch_pb2.GetSupplierRequest(), metadata=auth("admin"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == {"supplier_id": "must be a UUID"}


async def test_unexpected_exception_is_internal_without_trace_or_sql(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListSuppliers(batch_pb2.ListSuppliersRequest(), metadata=auth("admin"))
    error = failure.value
    assert error.code() == grpc.StatusCode.INTERNAL
    leaked = (error.details() or "") + str(status_details(error) or "")
    for secret in ("Traceback", "psycopg", "SELECT", "batch.secret", "RuntimeError"):
        assert secret not in leaked


async def test_request_id_is_echoed_in_trailing_metadata(stub):
    call = stub.GetBatch(
        batch_pb2.GetBatchRequest(batch_id=BATCH_ID), metadata=(*auth("admin"), ("x-request-id", "req-42"))
    )
    await call
    assert ("x-request-id", "req-42") in tuple(await call.trailing_metadata())


async def test_every_call_logs_one_json_line_with_request_id_and_no_raw_email_or_ip(stub):
    buffer = io.StringIO()
    logs.configure(service="batch", level="info", redaction_key=TEST_JWT_SECRET, stream=buffer)
    try:
        await stub.GetBatch(
            batch_pb2.GetBatchRequest(batch_id=BATCH_ID),
            metadata=(*auth("supplier", "jane.doe@example.com"), ("x-request-id", "req-log-1")),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetSupplier(batch_pb2.GetSupplierRequest(), metadata=(*auth("admin"), ("x-request-id", "req-log-2")))
    finally:
        logs.configure(service="test", level="warning", redaction_key=TEST_JWT_SECRET)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    rpc_lines = [line for line in lines if line["event"] == "rpc"]
    assert [line["request_id"] for line in rpc_lines] == ["req-log-1", "req-log-2"]
    assert [line["code"] for line in rpc_lines] == ["OK", "INVALID_ARGUMENT"]
    assert all({"method", "duration_ms", "service"} <= line.keys() for line in rpc_lines)
    text = buffer.getvalue()
    assert "jane.doe@example.com" not in text
    assert "127.0.0.1" not in text
    assert rpc_lines[0]["peer"].startswith("ip:")


async def test_a_database_out_of_reach_is_unavailable_so_clients_retry(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListBatches(batch_pb2.ListBatchesRequest(), metadata=auth("admin"))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "QueuePool" not in failure.value.details()


async def test_a_connection_lost_under_the_driver_itself_is_unavailable_too(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListOrders(batch_pb2.ListOrdersRequest(), metadata=auth("admin"))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "server closed" not in failure.value.details()
