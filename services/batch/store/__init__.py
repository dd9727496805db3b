"""The batch schema's tables and every query on them, one module per area.

Functions take an open connection (the caller owns the transaction) and return
records (`services.batch.records`), never rows. Every state change writes its outbox
events in the same statement or transaction, using the SQL functions batch.*_json,
so an event has one shape whether one row or a million changed.

    schema         the metadata, the idempotency table, row helpers
    suppliers      suppliers and their terms
    placement      PlaceOrder's statements: open batches, join one, open one, place many
    orders         reading orders, their status changes and supplier assignment
    batches        reading batches, advancing them, reassigning their supplier
    orchestration  the set-based orchestration statements and review resolution
    outbox         the events waiting for delivery
    prices         price snapshots
    retention      purging what has aged out

Callers import the area module they need (`from services.batch.store import orders`).
"""
