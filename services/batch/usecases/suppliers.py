"""Which supplier takes new work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import FailedPrecondition, InvalidArgument
from services.batch import domain
from services.batch.records import Supplier
from services.batch.store import suppliers


async def recommend_supplier(
    conn: AsyncConnection, category: str, quantity: int, style_count: int = 1
) -> domain.SupplierTerms:
    """The supplier a new batch would go to; INVALID_ARGUMENT for a category nobody serves,
    FAILED_PRECONDITION when no supplier of it can take the order."""
    serving = await suppliers.suppliers_serving(conn, category)
    if not serving:
        raise InvalidArgument.field("category", f"unknown category {category!r}: no supplier serves it")
    chosen = domain.choose_supplier(serving, category, quantity, style_count)
    if chosen is None:
        raise FailedPrecondition(
            f"no active supplier of {category!r} can take {quantity} units in {style_count} styles",
            reason="NO_SUPPLIER",
            subject=f"category/{category}",
        )
    return chosen


def require_reassignable(status: str, allowed: tuple[str, ...], kind: str, subject: str) -> None:
    """Only work in one of the allowed states may change supplier; kind is "an order" or "a batch"."""
    if status not in allowed:
        raise FailedPrecondition(f"{kind} that is {status} cannot change supplier", reason="BAD_STATE", subject=subject)


async def assignable_supplier(conn: AsyncConnection, supplier_id: str, category: str, quantity: int) -> Supplier:
    """The supplier, if it is active, serves the category and can make the quantity."""
    supplier = await suppliers.get_supplier(conn, supplier_id)
    if not (supplier.active and category in supplier.categories and quantity <= supplier.capacity):
        raise FailedPrecondition(
            f"supplier {supplier_id} is inactive, does not serve {category!r} or cannot make {quantity} units",
            reason="SUPPLIER_UNFIT",
            subject=f"suppliers/{supplier_id}",
        )
    return supplier
