"""Settings of the scheduler service process."""

from pydantic import Field

from libs.settings import Settings


class SchedulerSettings(Settings):
    scheduler_time_zone: str = Field(
        default="UTC", description="IANA zone of cron schedules that name none (daily jobs follow its wall clock)."
    )
    scheduler_job_schedules: dict[str, str] = Field(
        default={},
        description=(
            'Default schedules by job name (JSON), e.g. {"orchestrate-batches": "@every 300s", '
            '"aggregate-popularity": "0 2 * * *"}; a schedule edited over the API wins over these.'
        ),
    )
    scheduler_max_attempts: int = Field(
        default=4, ge=1, le=20, description="Attempts per firing before a run is dead-lettered."
    )
    scheduler_retry_base_seconds: float = Field(
        default=30.0, gt=0, description="Delay before the first retry; each further retry doubles it."
    )
    scheduler_retry_max_seconds: float = Field(default=1800.0, gt=0, description="Longest delay between retries.")
    scheduler_catch_up_window_seconds: int = Field(
        default=300,
        ge=1,
        description=(
            "Catch-up window of jobs that set none: a firing missed (no replica leading, or the job paused) by at "
            "most this runs late; an older one is recorded as missed."
        ),
    )
    scheduler_job_timeout_seconds: float = Field(
        default=900.0, gt=0, description="Deadline of one call to a job's target RPC."
    )
    scheduler_leader_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often a standby tries to take the leader lock, and the leader checks it and due retries.",
    )
    scheduler_run_retention_days: int = Field(
        default=30, ge=1, description="purge-job-runs deletes job runs older than this."
    )


SETTINGS_CLASS = SchedulerSettings
