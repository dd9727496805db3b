"""Settings of the tracking service process."""

from pydantic import Field

from libs.settings import Settings


class TrackingSettings(Settings):
    dedup_window_seconds: int = Field(
        default=1800, description="Same session, product and type within this many seconds is stored once."
    )
    max_event_age_seconds: int = Field(
        default=7 * 24 * 3600, description="Interactions whose occurred_time is older than this are rejected."
    )
    max_clock_skew_seconds: int = Field(
        default=300, description="How far in the future a client's occurred_time may be (clock skew)."
    )
    ingest_max_batch_events: int = Field(
        default=5000, description="Most interactions one group commit writes in a single transaction."
    )
    ingest_writers: int = Field(
        default=2, description="Group commits that may be in flight at once in one process."
    )
    # Under load a statement and a commit per tiny group cost more CPU than a short wait:
    # with 32 clients on 2 cores, 4 ms / 12 calls gave groups of ~4 events and ~235 us of
    # PostgreSQL CPU per event; 10 ms / 32 calls gives ~9 events, ~115 us, and ~20% more
    # calls per second at a lower p99 (bench tracking.ingest.unary).
    ingest_commit_delay_ms: float = Field(
        default=10.0, ge=0, le=100,
        description="How long a group commit may wait to grow while calls arrive concurrently (0: never waits).",
    )
    ingest_commit_group_calls: int = Field(
        default=32, ge=1, description="Calls a waiting group commit stops waiting at (as it does at a full batch of events)."
    )
    share_limit_per_hour: int = Field(default=10, description="Social shares one IP may make in a sliding hour.")
    retention_days: int = Field(
        default=90, description="Raw interactions and shares older than this are purged (aggregates stay)."
    )
    # Exact retention deletes the expired days of the boundary month row by row at every
    # daily purge, so in steady state most rows still leave by DELETE; whole months make
    # every purge a partition drop, at the price of keeping rows up to a month longer.
    retention_whole_months: bool = Field(
        default=False,
        description="Purge raw interactions and shares only by whole expired months (partition drops, no row deletes):"
        " rows stay up to a month past retention_days.",
    )
    popularity_pairs_per_product: int = Field(
        default=20, description="Commonly-paired products kept per product by the popularity aggregation."
    )


SETTINGS_CLASS = TrackingSettings
