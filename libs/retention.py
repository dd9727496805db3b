"""The retention window every PurgeOldData request names, validated once for all services."""

from libs.errors import InvalidArgument

# A century: any longer keeps everything anyway, and a cutoff that far back
# would fall outside what dates can represent.
MAX_RETENTION_DAYS = 36_500


def retention_days(requested: int, default: int) -> int:
    """The requested retention in days, or the service's default when 0 (unset)."""
    if not 0 <= requested <= MAX_RETENTION_DAYS:
        raise InvalidArgument.field(
            "retention_days", f"between 1 and {MAX_RETENTION_DAYS} days, or 0 for the configured default"
        )
    return requested or default
