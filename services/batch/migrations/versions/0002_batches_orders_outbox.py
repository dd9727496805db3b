"""Suppliers, batches, orders, contributions, supplier orders, refunds, price
snapshots and the event outbox, plus the SQL functions that give every event
its entity shapes (one definition, used by single-row and set-based writes).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE batch.suppliers (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    categories text[] NOT NULL,
    moq bigint NOT NULL CHECK (moq > 0),
    capacity bigint NOT NULL CHECK (capacity >= moq),
    price_tiers jsonb NOT NULL,
    lead_time_days integer NOT NULL CHECK (lead_time_days >= 0),
    rating numeric(3, 2) NOT NULL CHECK (rating BETWEEN 0 AND 5),
    active boolean NOT NULL,
    max_styles_per_batch integer NOT NULL CHECK (max_styles_per_batch > 0),
    contact_email text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX suppliers_categories ON batch.suppliers USING gin (categories);

CREATE SEQUENCE batch.supplier_order_numbers;

CREATE TABLE batch.batches (
    id uuid PRIMARY KEY,
    category text NOT NULL,
    supplier_id uuid NOT NULL REFERENCES batch.suppliers (id),
    status text NOT NULL CHECK (status IN ('filling', 'confirmed', 'in_production', 'completed', 'cancelled')),
    target_quantity bigint NOT NULL CHECK (target_quantity > 0),
    capacity bigint NOT NULL CHECK (capacity >= target_quantity),
    current_quantity bigint NOT NULL DEFAULT 0 CHECK (current_quantity >= 0 AND current_quantity <= capacity),
    style_limit integer NOT NULL,
    style_count integer NOT NULL DEFAULT 0 CHECK (style_count >= 0 AND style_count <= style_limit),
    order_count integer NOT NULL DEFAULT 0 CHECK (order_count >= 0),
    window_open_time timestamptz NOT NULL,
    window_close_time timestamptz NOT NULL,
    needs_review boolean NOT NULL DEFAULT false,
    nearing_target_notified boolean NOT NULL DEFAULT false,
    closing_soon_notified boolean NOT NULL DEFAULT false,
    unit_price numeric(14, 4) NOT NULL,
    supplier_order_number text UNIQUE,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
-- PlaceOrder looks for open batches of a category; Orchestrate scans the filling ones.
CREATE INDEX batches_filling_by_category ON batch.batches (category, window_close_time) WHERE status = 'filling';
CREATE INDEX batches_filling_by_window ON batch.batches (window_close_time) WHERE status = 'filling';
CREATE INDEX batches_by_supplier ON batch.batches (supplier_id, create_time DESC);
CREATE INDEX batches_listing ON batch.batches (create_time DESC, id DESC);

CREATE TABLE batch.orders (
    id uuid PRIMARY KEY,
    buyer_id text NOT NULL,
    category text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    style jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('placed', 'awaiting_supplier', 'confirmed', 'in_production',
                                           'shipped', 'delivered', 'cancelled', 'refunded')),
    status_reason text NOT NULL DEFAULT '',
    batch_id uuid NOT NULL REFERENCES batch.batches (id),
    supplier_id uuid NOT NULL REFERENCES batch.suppliers (id),
    assignment_priority integer NOT NULL DEFAULT 0,
    currency text NOT NULL,
    supplier_unit_price numeric(14, 4) NOT NULL,
    margin_percent numeric(7, 3) NOT NULL,
    unit_price numeric(14, 4) NOT NULL,
    subtotal numeric(18, 2) NOT NULL,
    margin_amount numeric(18, 2) NOT NULL,
    total numeric(18, 2) NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_buyer ON batch.orders (buyer_id, create_time DESC, id DESC);
CREATE INDEX orders_by_batch ON batch.orders (batch_id, status);
CREATE INDEX orders_listing ON batch.orders (create_time DESC, id DESC);

-- A live share of a batch; deleted when its order is cancelled while the batch fills.
CREATE TABLE batch.contributions (
    id uuid PRIMARY KEY,
    batch_id uuid NOT NULL REFERENCES batch.batches (id),
    order_id uuid NOT NULL UNIQUE REFERENCES batch.orders (id),
    quantity bigint NOT NULL CHECK (quantity > 0),
    style_count integer NOT NULL,
    amount numeric(18, 2) NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contributions_by_batch ON batch.contributions (batch_id);

CREATE TABLE batch.supplier_orders (
    order_number text PRIMARY KEY,
    batch_id uuid NOT NULL UNIQUE REFERENCES batch.batches (id),
    supplier_id uuid NOT NULL REFERENCES batch.suppliers (id),
    quantity bigint NOT NULL,
    unit_price numeric(14, 4) NOT NULL,
    total numeric(18, 2) NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

-- One refund per order, ever: the primary key makes a second refund impossible.
CREATE TABLE batch.refunds (
    order_id uuid PRIMARY KEY REFERENCES batch.orders (id),
    batch_id uuid NOT NULL REFERENCES batch.batches (id),
    amount numeric(18, 2) NOT NULL,
    reason text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE batch.price_snapshots (
    id bigserial PRIMARY KEY,
    capture_time timestamptz NOT NULL,
    supplier_id uuid NOT NULL,
    category text NOT NULL,
    unit_price numeric(14, 4) NOT NULL,
    change_percent numeric(12, 4),
    market_change boolean NOT NULL DEFAULT false
);
CREATE INDEX price_snapshots_by_category ON batch.price_snapshots (category, capture_time);
CREATE INDEX price_snapshots_by_supplier ON batch.price_snapshots (supplier_id, category, capture_time DESC);

CREATE TABLE batch.outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    type text NOT NULL,
    occurred_time timestamptz NOT NULL DEFAULT now(),
    data jsonb NOT NULL,
    delivered_time timestamptz
);
CREATE INDEX outbox_pending ON batch.outbox (id) WHERE delivered_time IS NULL;
CREATE INDEX outbox_delivered ON batch.outbox (delivered_time) WHERE delivered_time IS NOT NULL;

CREATE FUNCTION batch.rfc3339(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION batch.batch_json(b batch.batches) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', b.id::text, 'status', b.status, 'category', b.category,
        'current_quantity', b.current_quantity, 'target_quantity', b.target_quantity,
        'capacity', b.capacity,
        'fill_percentage', round(b.current_quantity * 100.0 / b.target_quantity, 2)::text,
        'window_closes_at', batch.rfc3339(b.window_close_time),
        'supplier_id', b.supplier_id::text, 'needs_review', b.needs_review,
        'supplier_order_number', coalesce(b.supplier_order_number, ''))
$$;

CREATE FUNCTION batch.order_json(o batch.orders) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', o.id::text, 'buyer_id', o.buyer_id, 'status', o.status, 'category', o.category,
        'quantity', o.quantity, 'batch_id', o.batch_id::text, 'supplier_id', o.supplier_id::text,
        'unit_price', o.unit_price::text, 'total_price', o.total::text)
$$;

CREATE FUNCTION batch.supplier_json(s batch.suppliers) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', s.id::text, 'name', s.name, 'capacity', s.capacity, 'moq', s.moq,
        'rating', s.rating::text, 'lead_time_days', s.lead_time_days, 'contact_email', s.contact_email)
$$;
"""

DOWNGRADE = """
DROP TABLE batch.outbox, batch.price_snapshots, batch.refunds, batch.supplier_orders,
    batch.contributions, batch.orders, batch.batches, batch.suppliers CASCADE;
DROP SEQUENCE batch.supplier_order_numbers;
DROP FUNCTION batch.rfc3339(timestamptz);
"""


def upgrade() -> None:
    # Raw driver SQL: the text is plain DDL, and its ':' must not read as bind parameters.
    op.get_bind().exec_driver_sql(UPGRADE)


def downgrade() -> None:
    op.get_bind().exec_driver_sql(DOWNGRADE)
