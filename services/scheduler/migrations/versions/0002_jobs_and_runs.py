"""Job definitions, the job-run log and APScheduler's job store.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("cron", sa.Text, nullable=False, server_default=""),
        sa.Column("interval_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("time_zone", sa.Text, nullable=False, server_default=""),
        sa.Column("jitter_seconds", sa.Integer, nullable=False, server_default="0"),
        # 'config' (follows the settings) or 'api' (edited over UpdateSchedule: kept).
        sa.Column("schedule_source", sa.Text, nullable=False, server_default="config"),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        # Raised by every change; the leader copies it to applied_version once its
        # APScheduler job store reflects the change.
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("applied_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("(cron <> '') <> (interval_seconds > 0)", name="jobs_one_schedule_kind"),
        schema="scheduler",
    )
    op.create_table(
        "job_runs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("job_name", sa.Text, nullable=False),
        sa.Column("firing_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("scheduled_time", sa.DateTime(timezone=True)),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True)),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("result", postgresql.JSONB),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("params", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("runner", sa.Text, nullable=False),
        # The runner's liveness lock key: a run whose runner holds no lock was interrupted.
        sa.Column("runner_key", sa.Integer, nullable=False),
        sa.Column("target_request_id", sa.Text, nullable=False),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True)),
        sa.Column("retry_run_id", postgresql.UUID(as_uuid=True)),
        sa.CheckConstraint(
            "status IN ('running','succeeded','failed','dead_lettered','interrupted','skipped')",
            name="job_runs_status",
        ),
        sa.CheckConstraint("trigger IN ('schedule','manual','retry')", name="job_runs_trigger"),
        schema="scheduler",
    )
    op.create_index("job_runs_start", "job_runs", [sa.text("start_time DESC"), sa.text("id DESC")], schema="scheduler")
    op.create_index(
        "job_runs_job_start", "job_runs", ["job_name", sa.text("start_time DESC"), sa.text("id DESC")],
        schema="scheduler",
    )
    # Fencing: a firing of the schedule runs once, even if two replicas briefly both lead.
    op.create_index(
        "job_runs_one_per_firing", "job_runs", ["job_name", "scheduled_time"], unique=True,
        schema="scheduler", postgresql_where=sa.text("trigger = 'schedule'"),
    )
    op.create_index("job_runs_one_per_attempt", "job_runs", ["firing_id", "attempt"], unique=True, schema="scheduler")
    op.create_index(
        "job_runs_pending_retries", "job_runs", ["next_attempt_time"], schema="scheduler",
        postgresql_where=sa.text("status = 'failed' AND retry_run_id IS NULL"),
    )
    op.create_index(
        "job_runs_running", "job_runs", ["job_name"], schema="scheduler",
        postgresql_where=sa.text("status = 'running'"),
    )
    # Every replica's WatchJobRuns hears of each change, whichever replica made it.
    op.execute(
        """
        CREATE FUNCTION scheduler.notify_job_run() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('scheduler_job_runs', NEW.id::text);
            RETURN NULL;
        END $$;
        CREATE TRIGGER job_runs_notify AFTER INSERT OR UPDATE ON scheduler.job_runs
            FOR EACH ROW EXECUTE FUNCTION scheduler.notify_job_run();
        """
    )
    # APScheduler's SQLAlchemyJobStore table (its exact shape), created here so the
    # service's role needs no DDL rights at run time.
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), index=True),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
        schema="scheduler",
    )


def downgrade() -> None:
    op.drop_table("apscheduler_jobs", schema="scheduler")
    op.execute("DROP TRIGGER job_runs_notify ON scheduler.job_runs; DROP FUNCTION scheduler.notify_job_run()")
    op.drop_table("job_runs", schema="scheduler")
    op.drop_table("jobs", schema="scheduler")
