"""Jobs defined at run time, overlap and catch-up policies, backfills and blackout calendars.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in (
        # Defined in code (rows seeded at start-up) or created over the API.
        sa.Column("builtin", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        # "loom.<svc>.v1.<Svc>Service/<Method>", or the scheduler's in-process housekeeping.
        sa.Column("target", sa.Text, nullable=False, server_default=""),
        sa.Column("payload", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        # A one-shot schedule.
        sa.Column("run_at", sa.DateTime(timezone=True)),
        # NULL: the configured defaults.
        sa.Column("max_attempts", sa.Integer),
        sa.Column("deadline_seconds", sa.Float),
        sa.Column("catch_up_window_seconds", sa.BigInteger),
        sa.Column("catch_up_coalesce", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("overlap_policy", sa.Text, nullable=False, server_default="skip"),
        sa.Column("blackout_calendars", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        # When the job was paused: firings since then are caught up on resume.
        sa.Column("paused_time", sa.DateTime(timezone=True)),
    ):
        op.add_column("jobs", column, schema="scheduler")
    # The built-in jobs coalesced missed firings before the policy was per job.
    op.execute("UPDATE scheduler.jobs SET catch_up_coalesce = true")
    op.drop_constraint("jobs_one_schedule_kind", "jobs", schema="scheduler")
    op.create_check_constraint(
        "jobs_one_schedule_kind", "jobs",
        "(cron <> '')::int + (interval_seconds > 0)::int + (run_at IS NOT NULL)::int = 1", schema="scheduler",
    )
    op.create_check_constraint(
        "jobs_overlap_policy", "jobs",
        "overlap_policy IN ('skip','buffer_one','buffer_all','cancel_other','allow_all')", schema="scheduler",
    )

    op.add_column("job_runs", sa.Column("backfill_id", postgresql.UUID(as_uuid=True)), schema="scheduler")
    # What a policy decided (overlap, catch-up, blackout); empty when the firing simply ran.
    op.add_column("job_runs", sa.Column("decision", sa.Text, nullable=False, server_default=""), schema="scheduler")
    # Set by CANCEL_OTHER or CancelBackfill; the replica running the attempt stops it.
    op.add_column(
        "job_runs", sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        schema="scheduler",
    )
    op.drop_constraint("job_runs_status", "job_runs", schema="scheduler")
    op.create_check_constraint(
        "job_runs_status", "job_runs",
        "status IN ('queued','running','succeeded','failed','dead_lettered','interrupted','skipped','cancelled')",
        schema="scheduler",
    )
    op.drop_constraint("job_runs_trigger", "job_runs", schema="scheduler")
    op.create_check_constraint(
        "job_runs_trigger", "job_runs", "trigger IN ('schedule','manual','retry','backfill')", schema="scheduler"
    )
    # A backfill runs each of its slots once, whichever replica leads.
    op.create_index(
        "job_runs_one_per_slot", "job_runs", ["backfill_id", "scheduled_time"], unique=True, schema="scheduler",
        postgresql_where=sa.text("trigger = 'backfill'"),
    )
    op.create_index(
        "job_runs_backfill", "job_runs", ["backfill_id", "status"], schema="scheduler",
        postgresql_where=sa.text("backfill_id IS NOT NULL"),
    )
    op.create_index(
        "job_runs_queued", "job_runs", ["job_name", "start_time"], schema="scheduler",
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("job_runs_trigger_start", "job_runs", ["trigger", sa.text("start_time DESC")],
                    schema="scheduler")

    op.create_table(
        "backfills",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("job_name", sa.Text, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_concurrency", sa.Integer, nullable=False),
        # NULL: the job's policy at the time each slot starts.
        sa.Column("overlap_policy", sa.Text),
        sa.Column("state", sa.Text, nullable=False, server_default="running"),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finish_time", sa.DateTime(timezone=True)),
        sa.CheckConstraint("state IN ('running','succeeded','failed','cancelled')", name="backfills_state"),
        schema="scheduler",
    )
    op.create_index("backfills_job_create", "backfills", ["job_name", sa.text("create_time DESC")],
                    schema="scheduler")
    op.create_index("backfills_running", "backfills", ["create_time"], schema="scheduler",
                    postgresql_where=sa.text("state = 'running'"))

    op.create_table(
        "blackout_calendars",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("time_zone", sa.Text, nullable=False),
        # [["2026-12-24T00:00:00", "2026-12-27T00:00:00"], ...]: local wall-clock times.
        sa.Column("ranges", postgresql.JSONB, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema="scheduler",
    )


def downgrade() -> None:
    op.drop_table("blackout_calendars", schema="scheduler")
    op.drop_table("backfills", schema="scheduler")
    for index in ("job_runs_trigger_start", "job_runs_queued", "job_runs_backfill", "job_runs_one_per_slot"):
        op.drop_index(index, "job_runs", schema="scheduler")
    op.execute("DELETE FROM scheduler.job_runs WHERE trigger = 'backfill' OR status IN ('queued','cancelled')")
    op.drop_constraint("job_runs_trigger", "job_runs", schema="scheduler")
    op.create_check_constraint("job_runs_trigger", "job_runs", "trigger IN ('schedule','manual','retry')",
                               schema="scheduler")
    op.drop_constraint("job_runs_status", "job_runs", schema="scheduler")
    op.create_check_constraint(
        "job_runs_status", "job_runs",
        "status IN ('running','succeeded','failed','dead_lettered','interrupted','skipped')", schema="scheduler",
    )
    for column in ("cancel_requested", "decision", "backfill_id"):
        op.drop_column("job_runs", column, schema="scheduler")
    op.execute("DELETE FROM scheduler.jobs WHERE NOT builtin")
    op.drop_constraint("jobs_overlap_policy", "jobs", schema="scheduler")
    op.drop_constraint("jobs_one_schedule_kind", "jobs", schema="scheduler")
    op.create_check_constraint("jobs_one_schedule_kind", "jobs", "(cron <> '') <> (interval_seconds > 0)",
                               schema="scheduler")
    for column in ("paused_time", "blackout_calendars", "overlap_policy", "catch_up_coalesce",
                   "catch_up_window_seconds", "deadline_seconds", "max_attempts", "run_at", "payload", "target",
                   "description", "builtin"):
        op.drop_column("jobs", column, schema="scheduler")
