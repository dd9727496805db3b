"""Aggregates the analytics read instead of raw events: sessions per hour, funnel steps per
(hour, product, session), and event counts per (day, person, product).

Built by AggregatePopularity for the hours and days it covers; the queries add the raw
events after the last aggregation (at most about a day of them) to stay current.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE tracking.session_hours (
            hour timestamptz NOT NULL,
            session_id text NOT NULL
        );
        CREATE INDEX session_hours_hour ON tracking.session_hours (hour);

        -- steps: bit n set when the session reached funnel step n (view_details, add_to_cart, quote_click).
        CREATE TABLE tracking.funnel_steps (
            hour timestamptz NOT NULL,
            product_id text COLLATE "C" NOT NULL,
            session_id text NOT NULL,
            steps smallint NOT NULL
        );
        CREATE INDEX funnel_steps_product ON tracking.funnel_steps (product_id, hour);

        -- A signed-in person's events per day and product (their own, or their session's
        -- attributed user's). Keys compare bytewise ("C"): only ever matched for equality,
        -- and cheaper to index than C.UTF-8-collated text.
        CREATE TABLE tracking.user_products_daily (
            day date NOT NULL,
            user_id text COLLATE "C" NOT NULL,
            product_id text NOT NULL,
            events bigint NOT NULL
        );
        CREATE INDEX user_products_daily_user ON tracking.user_products_daily (user_id, day);
        CREATE INDEX user_products_daily_day ON tracking.user_products_daily (day);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE tracking.user_products_daily;
        DROP TABLE tracking.funnel_steps;
        DROP TABLE tracking.session_hours;
        """
    )
