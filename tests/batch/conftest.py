"""Fixtures of the batch service tests: a running service, stubs, suppliers, raw SQL access."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from loom.batch.v1 import batch_pb2 as pb

from libs.scratch_db import create_database, drop_database, plain_url, server_url
from tests.support import auth, serve, stub_for

ADMIN = auth("admin")
SERVICE = auth("service")


@pytest.fixture(scope="module")
def own_database():
    """A database for this module alone (orchestration touches every filling batch)."""
    admin_url = server_url()
    url = create_database(admin_url)
    yield url
    drop_database(admin_url, url)


@pytest.fixture(scope="module")
async def batch_service(database_url):
    async with serve("batch", database_url, outbox_dispatch=False) as running:
        yield running


@pytest.fixture(scope="module")
async def stub(batch_service):
    async with stub_for("batch", batch_service.target) as client:
        yield client


@pytest.fixture
def sql(database_url):
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        yield conn


def unique_category() -> str:
    return f"cat_{uuid.uuid4().hex[:10]}"


def request_id() -> str:
    return uuid.uuid4().hex


def supplier_message(category: str, **overrides) -> pb.Supplier:
    values = dict(
        name="Acme Apparel",
        categories=[category],
        moq=100,
        capacity=200,
        price_tiers=[pb.PriceTier(min_quantity=1, unit_price="6.00"), pb.PriceTier(min_quantity=100, unit_price="5.00")],
        lead_time_days=10,
        rating=4.5,
        active=True,
        max_styles_per_batch=10,
        contact_email="ops@acme.example",
    )
    values.update(overrides)
    return pb.Supplier(**values)


async def create_supplier(stub, category: str, **overrides) -> pb.Supplier:
    reply = await stub.CreateSupplier(
        pb.CreateSupplierRequest(request_id=request_id(), supplier=supplier_message(category, **overrides)),
        metadata=ADMIN,
    )
    return reply.supplier


async def place(stub, category: str, quantity: int, *, buyer: str = "buyer-1", styles: int = 1, rid: str | None = None):
    return await stub.PlaceOrder(
        pb.PlaceOrderRequest(
            request_id=rid or request_id(), category=category, quantity=quantity,
            style=pb.StyleDetails(style_count=styles, colors=["black"], sizes=["M"]),
        ),
        metadata=auth("buyer", buyer),
    )
