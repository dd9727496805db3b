"""Settings of the gateway process."""

from pydantic import Field

from libs.settings import Settings


class GatewaySettings(Settings):
    cors_origins: list[str] = Field(
        default=[], description='Origins browsers may call the gateway from (JSON list, e.g. ["https://shop.example"]).'
    )
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest request body the gateway accepts (413 beyond).")
    max_header_bytes: int = Field(
        default=16 * 1024, description="Largest total of a request's header names and values (431 beyond)."
    )
    max_header_count: int = Field(default=100, description="Most headers a request may carry (431 beyond).")
    rate_limit_ip_per_second: float = Field(
        default=100.0,
        ge=0,
        description="Requests a second one client IP (an IPv6 /64) may make, per gateway process; 0: no limit (429 beyond).",
    )
    rate_limit_ip_burst: int = Field(
        default=400, ge=1, description="Requests one client IP may make at once before its rate applies."
    )
    rate_limit_subject_per_second: float = Field(
        default=20.0,
        ge=0,
        description="Requests a second one token subject may make, per gateway process; 0: no limit (429 beyond).",
    )
    rate_limit_subject_burst: int = Field(
        default=100, ge=1, description="Requests one token subject may make at once before its rate applies."
    )
    default_deadline_seconds: float = Field(
        default=10.0, description="Deadline of a backend call when the request sends no Grpc-Timeout header."
    )
    max_deadline_seconds: float = Field(default=60.0, description="Longest deadline a Grpc-Timeout header may ask for.")
    sse_keepalive_seconds: float = Field(
        default=15.0, description="Interval of the comment lines that keep idle Server-Sent Event streams open."
    )


SETTINGS_CLASS = GatewaySettings
