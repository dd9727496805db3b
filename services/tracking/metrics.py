"""What the business watches in the tracking service, for Prometheus."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INTERACTIONS = Counter(
    "loom_tracking_interactions_total",
    "Interactions received, by outcome: stored, duplicate (within the session window) or rejected (bad input).",
    ["outcome"],
)
GROUP_COMMIT_EVENTS = Histogram(
    "loom_tracking_group_commit_events",
    "Events written by one ingestion transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000),
)
SHARE_REJECTIONS = Counter(
    "loom_tracking_share_rejections_total",
    "Social shares refused, by reason: rate_limited, unknown_post, unpublished_post.",
    ["reason"],
)

STORED, DUPLICATE, REJECTED = (INTERACTIONS.labels(outcome) for outcome in ("stored", "duplicate", "rejected"))
