"""The tracking schema's metadata."""

from sqlalchemy import MetaData

from libs.idempotency import idempotency_table

METADATA = MetaData(schema="tracking")
IDEMPOTENCY = idempotency_table(METADATA)
