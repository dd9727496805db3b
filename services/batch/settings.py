"""Settings of the batch service process."""

from decimal import Decimal

from pydantic import Field

from libs.settings import Settings


class BatchSettings(Settings):
    """The batch service's own knobs (env LOOM_<FIELD>)."""

    currency: str = Field(default="USD", description="Currency of every price the batch service quotes.")
    margin_percent: Decimal = Field(
        default=Decimal("15"), description="Platform margin added to the supplier's tier price, in percent."
    )
    batch_window_days: int = Field(default=14, description="How long a new batch stays open for orders, in days.")
    max_order_quantity: int = Field(default=1_000_000, description="Largest quantity one order may ask for.")
    confirm_percent: Decimal = Field(default=Decimal("75"), description="Fill % at which a batch is confirmed.")
    review_percent: Decimal = Field(
        default=Decimal("50"),
        description="Fill % from which a batch whose window closed goes to admin review (below it: cancelled).",
    )
    nearing_target_percent: Decimal = Field(
        default=Decimal("60"), description="Fill % from which an open batch raises its one-time nearing-target event."
    )
    closing_soon_hours: int = Field(
        default=24, description="An unconfirmed batch whose window closes within this many hours raises a closing-soon event."
    )
    market_change_percent: Decimal = Field(
        default=Decimal("10"), description="A price snapshot moving more than this % since the last one is a market change."
    )
    outbox_retention_days: int = Field(
        default=30, description="PurgeOldData default: delivered outbox rows and idempotency keys older than this go."
    )
    snapshot_retention_days: int = Field(
        default=730, description="PurgeOldData default: price snapshots older than this go."
    )
    outbox_poll_seconds: float = Field(
        default=0.5, description="How often the outbox dispatcher looks for events written by other replicas."
    )
    outbox_max_backoff_seconds: float = Field(
        default=30.0, description="Longest wait between delivery attempts while the rules service is down."
    )
    watch_interval_seconds: float = Field(
        default=0.2, description="How often the batches being watched (WatchBatch) are looked at for changes."
    )
    group_commit_max_orders: int = Field(
        default=64,
        description="Most concurrent PlaceOrders applied in one shared transaction (placed by one statement where they can be).",
    )
    outbox_dispatch: bool = Field(default=True, description="Run the outbox dispatcher that delivers events to rules.")


SETTINGS_CLASS = BatchSettings
