"""Settings of the gateway process."""

from pydantic import Field

from libs.settings import Settings


class GatewaySettings(Settings):
    cors_origins: list[str] = Field(
        default=[], description='Origins browsers may call the gateway from (JSON list, e.g. ["https://shop.example"]).'
    )
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest request body the gateway accepts (413 beyond).")
    default_deadline_seconds: float = Field(
        default=10.0, description="Deadline of a backend call when the request sends no Grpc-Timeout header."
    )
    max_deadline_seconds: float = Field(default=60.0, description="Longest deadline a Grpc-Timeout header may ask for.")
    sse_keepalive_seconds: float = Field(
        default=15.0, description="Interval of the comment lines that keep idle Server-Sent Event streams open."
    )


SETTINGS_CLASS = GatewaySettings
