"""The scheduler schema's tables, as the migrations create them."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Unicode,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from libs.audit import audit_table
from libs.idempotency import idempotency_table

metadata = MetaData(schema="scheduler")

jobs = Table(
    "jobs",
    metadata,
    Column("name", Text, primary_key=True),
    Column("builtin", Boolean, nullable=False),
    Column("description", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("cron", Text, nullable=False),
    Column("interval_seconds", Integer, nullable=False),
    Column("run_at", DateTime(timezone=True)),
    Column("time_zone", Text, nullable=False),
    Column("jitter_seconds", Integer, nullable=False),
    Column("schedule_source", Text, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("paused_time", DateTime(timezone=True)),
    Column("max_attempts", Integer),
    Column("deadline_seconds", Float),
    Column("overlap_policy", Text, nullable=False),
    Column("catch_up_window_seconds", BigInteger),
    Column("catch_up_coalesce", Boolean, nullable=False),
    Column("blackout_calendars", ARRAY(Text), nullable=False),
    Column("version", Integer, nullable=False),
    Column("applied_version", Integer, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("job_name", Text, nullable=False),
    Column("firing_id", UUID(as_uuid=True), nullable=False),
    Column("trigger", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("scheduled_time", DateTime(timezone=True)),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("finish_time", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("result", JSONB),
    Column("error", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("runner", Text, nullable=False),
    Column("runner_key", Integer, nullable=False),
    Column("target_request_id", Text, nullable=False),
    Column("next_attempt_time", DateTime(timezone=True)),
    Column("retry_run_id", UUID(as_uuid=True)),
    Column("backfill_id", UUID(as_uuid=True)),
    Column("decision", Text, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
)

backfills = Table(
    "backfills",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("job_name", Text, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=False),
    Column("max_concurrency", Integer, nullable=False),
    Column("overlap_policy", Text),
    Column("state", Text, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("finish_time", DateTime(timezone=True)),
)

blackout_calendars = Table(
    "blackout_calendars",
    metadata,
    Column("name", Text, primary_key=True),
    Column("description", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("ranges", JSONB, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
)

apscheduler_jobs = Table(
    "apscheduler_jobs",
    metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25)),
    Column("job_state", LargeBinary, nullable=False),
)

idempotency_keys = idempotency_table(metadata)
audit_events = audit_table(metadata)
