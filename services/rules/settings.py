"""Settings of the rules service process."""

from pydantic import Field

from libs.settings import Settings


class RulesSettings(Settings):
    smtp_host: str | None = Field(
        default=None, description="SMTP server for send_email actions. Unset: notifications are recorded, not sent."
    )
    smtp_port: int = Field(default=25, description="SMTP server port.")
    smtp_sender: str = Field(default="loom@localhost", description="From address of rule e-mails.")
    smtp_timeout_seconds: float = Field(default=10.0, description="Connect/send timeout of one SMTP attempt.")
    action_max_attempts: int = Field(default=4, description="Attempts of an action that fails transiently.")
    action_backoff_seconds: float = Field(
        default=0.2, description="First wait between action attempts; doubles each retry (capped at 5 s)."
    )
    regex_max_pattern_length: int = Field(default=256, description="Longest regular expression a `matches` leaf may hold.")
    regex_max_input_length: int = Field(default=4096, description="Longest fact value a `matches` leaf searches.")
    regex_timeout_ms: float = Field(default=50.0, description="Time bound of one `matches` evaluation.")
    worker_batch_size: int = Field(default=50, description="Events the evaluation worker leases at a time.")
    worker_poll_seconds: float = Field(
        default=0.5,
        description="How often the worker looks for events, due waits and stalled executions when not woken "
        "(a dead replica's work is taken over within a lease plus this).",
    )
    event_lease_seconds: float = Field(
        default=4.0,
        gt=0,
        description="Lease of an event a worker evaluates, renewed every third of it while the worker lives; "
        "a dead replica's events are taken over this long after its last renewal.",
    )
    execution_lease_seconds: float = Field(
        default=4.0,
        gt=0,
        description="Lease of a running execution (and of a due wait being resumed), renewed every third of it "
        "while its replica lives, however long an action takes; a dead replica's are resumed elsewhere after it.",
    )
    fact_fetch_attempts: int = Field(
        default=5,
        description="Evaluations of an event retried while a fact cannot be fetched; then it is evaluated without it.",
    )
    loop_max_depth: int = Field(
        default=3,
        description="Times a rule may appear in an event's causation chain; beyond, its execution is refused (loop guard).",
    )
    breaker_failures: int = Field(
        default=5, description="Consecutive failed executions after which a rule is deactivated (circuit breaker; 0: never)."
    )
    notification_poll_seconds: float = Field(
        default=0.5, description="How often a WatchNotifications stream looks for new notifications and read changes."
    )
    retention_days: int = Field(default=90, description="Age after which PurgeOldData deletes events and executions.")


SETTINGS_CLASS = RulesSettings
