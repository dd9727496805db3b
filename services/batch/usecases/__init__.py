"""The batch service's use cases: the calls that coordinate several steps.

Each takes an open connection (the caller owns the transaction and its idempotency),
loads records through the store, asks the domain, writes through the store, and raises
plain domain errors. The servicer translates proto to arguments and records to protos;
it calls the store directly only for a single read or write.

    placement      PlaceOrder: choose, lock, open, join, retry; and a group's orders at once
    suppliers      which supplier a new batch goes to; whether one may take over work
    orders         cancelling an order, moving it along its workflow, reassigning its supplier
    batches        advancing a batch, reassigning its supplier
    orchestration  the orchestration run (and its dry run), resolving a review
    prices         capturing a price snapshot, the average price trend
"""
