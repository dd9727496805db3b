"""The built-in jobs (defined in code: never deleted, only paused or rescheduled)."""

from __future__ import annotations

from dataclasses import dataclass

# The scheduler's own housekeeping runs in process, not over gRPC.
IN_PROCESS_PREFIX = "scheduler (in process): "


@dataclass(frozen=True)
class JobDefinition:
    name: str
    description: str
    # The service whose RPC the job calls; None for the scheduler's own housekeeping.
    service: str | None
    method: str
    default_schedule: str

    @property
    def target(self) -> str:
        if self.service is None:
            return f"{IN_PROCESS_PREFIX}{self.method}"
        return f"loom.{self.service}.v1.{self.service.capitalize()}Service/{self.method}"


PURGE_JOB_RUNS = "purge-job-runs"

JOBS: dict[str, JobDefinition] = {
    job.name: job
    for job in (
        JobDefinition(
            "orchestrate-batches", "Confirm, flag, cancel and nudge filling batches.", "batch", "Orchestrate",
            "@every 300s",
        ),
        JobDefinition(
            "aggregate-popularity", "Recompute popularity scores and co-occurrence.", "tracking",
            "AggregatePopularity", "0 2 * * *",
        ),
        JobDefinition(
            "capture-price-snapshot", "Record every supplier's tier price (weekly, Sunday).", "batch",
            "CapturePriceSnapshot", "0 3 * * 0",
        ),
        JobDefinition(
            PURGE_JOB_RUNS, "Delete the scheduler's job runs older than the retention.", None, "PurgeJobRuns",
            "0 4 1 * *",
        ),
        JobDefinition("purge-batch-data", "The batch service's retention clean-up.", "batch", "PurgeOldData",
                      "30 3 * * *"),
        JobDefinition("purge-rules-data", "The rules service's retention clean-up.", "rules", "PurgeOldData",
                      "40 3 * * *"),
        JobDefinition("purge-tracking-data", "The tracking service's retention clean-up.", "tracking",
                      "PurgeOldData", "50 3 * * *"),
    )
}
