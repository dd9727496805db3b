"""Interactions, de-duplication, posts and shares, rate-limit records and aggregates.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE tracking.ip_salts (
    day date PRIMARY KEY,
    salt bytea NOT NULL
);

CREATE TABLE tracking.interactions (
    id uuid PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    type smallint NOT NULL,
    product_id text NOT NULL,
    session_id text NOT NULL,
    user_id text,
    anonymous_id text,
    client_event_id text,
    page text,
    referrer_host text,
    country text,
    browser text,
    os text,
    device text,
    ip_hash bytea
);
CREATE INDEX interactions_occurred_at ON tracking.interactions (occurred_at);
CREATE INDEX interactions_product ON tracking.interactions (product_id, occurred_at);
CREATE INDEX interactions_session ON tracking.interactions (session_id, occurred_at);
CREATE INDEX interactions_user ON tracking.interactions (user_id, occurred_at) WHERE user_id IS NOT NULL;

-- Never purged: a client event id is idempotent forever.
CREATE TABLE tracking.client_events (
    client_event_id text PRIMARY KEY,
    interaction_id uuid NOT NULL
);

-- The open de-duplication window of each (session, product, type).
CREATE TABLE tracking.dedup_windows (
    session_id text NOT NULL,
    product_id text NOT NULL,
    type smallint NOT NULL,
    window_start timestamptz NOT NULL,
    interaction_id uuid NOT NULL,
    PRIMARY KEY (session_id, product_id, type)
);
CREATE INDEX dedup_windows_start ON tracking.dedup_windows (window_start);

-- Anonymous -> identified: the first user a session carried.
CREATE TABLE tracking.session_users (
    session_id text PRIMARY KEY,
    user_id text NOT NULL,
    identified_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_users_user ON tracking.session_users (user_id);

-- Hourly counts kept by ingestion; shards spread concurrent writers over rows.
CREATE TABLE tracking.engagement_hourly (
    hour timestamptz NOT NULL,
    type smallint NOT NULL,
    shard smallint NOT NULL,
    events bigint NOT NULL,
    authenticated bigint NOT NULL,
    PRIMARY KEY (hour, type, shard)
);

CREATE TABLE tracking.posts (
    post_id text PRIMARY KEY,
    title text NOT NULL,
    url text NOT NULL,
    published boolean NOT NULL DEFAULT false,
    share_count bigint NOT NULL DEFAULT 0,
    -- Shares removed by retention, so a repaired share_count keeps counting them.
    purged_shares bigint NOT NULL DEFAULT 0,
    publish_time timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tracking.shares (
    id uuid PRIMARY KEY,
    post_id text NOT NULL REFERENCES tracking.posts (post_id),
    platform smallint NOT NULL,
    session_id text,
    user_id text,
    ip_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shares_ip ON tracking.shares (ip_hash, created_at);
CREATE INDEX shares_post ON tracking.shares (post_id, created_at);
CREATE INDEX shares_created_at ON tracking.shares (created_at);

CREATE TABLE tracking.share_rejections (
    day date NOT NULL,
    ip_hash bytea NOT NULL,
    rejected bigint NOT NULL,
    PRIMARY KEY (day, ip_hash)
);

-- Aggregates built by AggregatePopularity; they outlive the raw events.
CREATE TABLE tracking.product_daily (
    day date NOT NULL,
    product_id text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (day, product_id)
);
CREATE INDEX product_daily_product ON tracking.product_daily (product_id, day);

CREATE TABLE tracking.actor_products_daily (
    day date NOT NULL,
    actor text NOT NULL,
    product_id text NOT NULL,
    PRIMARY KEY (day, actor, product_id)
);

CREATE TABLE tracking.product_popularity (
    product_id text PRIMARY KEY,
    count_7d bigint NOT NULL,
    count_30d bigint NOT NULL,
    score double precision NOT NULL,
    compute_time timestamptz NOT NULL
);

CREATE TABLE tracking.product_pairs (
    product_id text NOT NULL,
    paired_product_id text NOT NULL,
    together bigint NOT NULL,
    percentage double precision NOT NULL,
    PRIMARY KEY (product_id, paired_product_id)
);

CREATE TABLE tracking.aggregation_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    aggregated_through timestamptz NOT NULL
);
"""


def upgrade() -> None:
    op.execute(TABLES)


def downgrade() -> None:
    for table in (
        "aggregation_state", "product_pairs", "product_popularity", "actor_products_daily", "product_daily",
        "share_rejections", "shares", "posts", "engagement_hourly", "session_users", "dedup_windows",
        "client_events", "interactions", "ip_salts",
    ):
        op.execute(f"DROP TABLE tracking.{table}")
