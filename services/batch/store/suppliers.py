"""Suppliers: their terms (categories, MOQ, capacity, price tiers) and contact."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch import domain
from services.batch.records import Supplier
from services.batch.store.schema import after_key, fetch_all, fetch_by_id, fetch_one


def tiers_json(tiers: Sequence[domain.PriceTier]) -> str:
    ordered = sorted(tiers, key=lambda t: t.min_quantity)
    return json.dumps([{"min_quantity": t.min_quantity, "unit_price": str(t.unit_price)} for t in ordered])


def supplier_record(row: Mapping[Any, Any]) -> Supplier:
    return Supplier(
        id=str(row["id"]),
        name=row["name"],
        categories=tuple(row["categories"]),
        moq=row["moq"],
        capacity=row["capacity"],
        price_tiers=tuple(domain.PriceTier(t["min_quantity"], Decimal(t["unit_price"])) for t in row["price_tiers"]),
        lead_time_days=row["lead_time_days"],
        rating=row["rating"],
        active=row["active"],
        max_styles_per_batch=row["max_styles_per_batch"],
        contact_email=row["contact_email"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def save_supplier(
    conn: AsyncConnection, terms: domain.SupplierTerms, name: str, contact_email: str, now: datetime
) -> Supplier:
    """Inserts the supplier, or replaces every field of an existing one."""
    row = await fetch_one(
        conn,
        """
        INSERT INTO batch.suppliers AS s (id, name, categories, moq, capacity, price_tiers, lead_time_days, rating,
                                          active, max_styles_per_batch, contact_email, create_time, update_time)
        VALUES (:id, :name, :categories, :moq, :capacity, CAST(:tiers AS jsonb), :lead_time_days, :rating,
                :active, :max_styles, :email, :now, :now)
        ON CONFLICT (id) DO UPDATE SET name = excluded.name, categories = excluded.categories, moq = excluded.moq,
            capacity = excluded.capacity, price_tiers = excluded.price_tiers,
            lead_time_days = excluded.lead_time_days, rating = excluded.rating, active = excluded.active,
            max_styles_per_batch = excluded.max_styles_per_batch, contact_email = excluded.contact_email,
            update_time = excluded.update_time
        RETURNING *
        """,
        id=terms.supplier_id,
        name=name,
        categories=list(terms.categories),
        moq=terms.moq,
        capacity=terms.capacity,
        tiers=tiers_json(terms.price_tiers),
        lead_time_days=terms.lead_time_days,
        rating=terms.rating,
        active=terms.active,
        max_styles=terms.max_styles_per_batch,
        email=contact_email,
        now=now,
    )
    assert row is not None
    return supplier_record(row)


async def get_supplier(conn: AsyncConnection, supplier_id: str, *, for_update: bool = False) -> Supplier:
    return supplier_record(await fetch_by_id(conn, "suppliers", "supplier", "supplier_id", supplier_id, for_update=for_update))


async def list_suppliers(
    conn: AsyncConnection, category: str, active_only: bool, after: list | None, limit: int
) -> list[Supplier]:
    rows = await fetch_all(
        conn,
        """
        SELECT * FROM batch.suppliers
        WHERE (:category = '' OR categories @> ARRAY[CAST(:category AS text)])
          AND (NOT :active_only OR active)
          AND (CAST(:after_time AS timestamptz) IS NULL OR (create_time, id) > (:after_time, CAST(:after_id AS uuid)))
        ORDER BY create_time, id LIMIT :limit
        """,
        category=category,
        active_only=active_only,
        **after_key(after),
        limit=limit,
    )
    return [supplier_record(r) for r in rows]


async def suppliers_serving(conn: AsyncConnection, category: str) -> list[domain.SupplierTerms]:
    rows = await fetch_all(conn, "SELECT * FROM batch.suppliers WHERE categories @> ARRAY[CAST(:c AS text)]", c=category)
    return [supplier_record(r).terms for r in rows]


async def active_suppliers(conn: AsyncConnection) -> list[domain.SupplierTerms]:
    return [supplier_record(r).terms for r in await fetch_all(conn, "SELECT * FROM batch.suppliers WHERE active ORDER BY id")]
