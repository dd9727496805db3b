"""What the tracking store hands back: one frozen record per kind of answer.

Servicers and use cases read these, never rows. Ingestion's own values (domain.Event in,
domain.Outcome out) are made once per event on the hot path and live in the domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Post:
    post_id: str
    title: str
    url: str
    published: bool
    share_count: int
    publish_time: datetime | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class ShareOutcome:
    """Either accepted (share_id set) or rejected by the rate limit (retry_after_seconds set)."""

    share_id: str | None = None
    share_count: int = 0
    remaining: int = 0
    retry_after_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PlatformCount:
    platform: int
    count: int


@dataclass(frozen=True, slots=True)
class DailyShareCount:
    day: str  # YYYY-MM-DD, UTC
    platform: int
    count: int


@dataclass(frozen=True, slots=True)
class ShareStats:
    total: int
    by_platform: list[PlatformCount]
    by_day: list[DailyShareCount]


@dataclass(frozen=True, slots=True)
class DailyRejections:
    day: str  # YYYY-MM-DD, UTC
    rejected: int
    accepted: int


@dataclass(frozen=True, slots=True)
class EngagementSummary:
    by_type: dict[int, int]
    authenticated: int
    unique_sessions: int


@dataclass(frozen=True, slots=True)
class TrendCount:
    """Events of one type in one period (a UTC day or ISO week)."""

    period_start: datetime
    type: int
    events: int
    authenticated: int


@dataclass(frozen=True, slots=True)
class ProductCount:
    product_id: str
    count: int


@dataclass(frozen=True, slots=True)
class PairedProduct:
    product_id: str
    percentage: float
    together: int


@dataclass(frozen=True, slots=True)
class Popularity:
    product_id: str
    count_7d: int
    count_30d: int
    score: float
    compute_time: datetime | None
    paired: list[PairedProduct]


@dataclass(frozen=True, slots=True)
class Recommendation:
    product_id: str
    score: float
    because: str | None  # the actor's product it pairs with; None for a merely popular one


@dataclass(frozen=True, slots=True)
class AggregationResult:
    scanned: int
    products: int
    pairs: int
    repaired: int


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    interactions: int
    shares: int
    rate_limit_rows: int
