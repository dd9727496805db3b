"""Schedules and their trigger math: crontab with a zone (DST-safe), intervals and
one-shot times, as APScheduler triggers.

No I/O here; everything is unit-tested in tests/scheduler/test_domain.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from services.scheduler.domain.errors import Problems

# --- schedules -------------------------------------------------------------------------

MAX_INTERVAL_SECONDS = 366 * 24 * 3600
MAX_JITTER_SECONDS = 3600
_EVERY = re.compile(r"@every\s+(\d+)\s*([smhd])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class Schedule:
    """Exactly one of cron (five crontab fields), interval_seconds and run_at (one shot)."""

    cron: str = ""
    interval_seconds: int = 0
    time_zone: str = ""  # empty: the configured default zone
    jitter_seconds: int = 0
    run_at: datetime | None = None

    def describe(self) -> str:
        if self.cron:
            return f"{self.cron} ({self.time_zone or 'default zone'})"
        if self.run_at is not None:
            return f"once at {self.run_at.isoformat()}"
        return f"every {self.interval_seconds}s"


def parse_schedule_spec(spec: str) -> Schedule:
    """A configured schedule: "@every 300s" (s/m/h/d) or a five-field crontab line."""
    spec = spec.strip()
    if spec.startswith("@"):
        match = _EVERY.fullmatch(spec)
        if not match:
            raise ValueError(f"{spec!r}: expected '@every <n><s|m|h|d>' or a crontab line")
        return Schedule(interval_seconds=int(match[1]) * _UNIT_SECONDS[match[2].lower()])
    return Schedule(cron=" ".join(spec.split()))


def validate_schedule(schedule: Schedule, field: str = "schedule") -> None:
    """Raises InvalidInput naming every bad part of the schedule."""
    problems = Problems()
    if sum((bool(schedule.cron), bool(schedule.interval_seconds), schedule.run_at is not None)) != 1:
        problems.add(field, "exactly one of cron, interval_seconds and run_at")
    if schedule.cron:
        try:
            crontab_fields(schedule.cron)
        except ValueError as error:
            problems.add(f"{field}.cron", str(error))
    if schedule.interval_seconds and not 0 < schedule.interval_seconds <= MAX_INTERVAL_SECONDS:
        problems.add(f"{field}.interval_seconds", f"between 1 and {MAX_INTERVAL_SECONDS}")
    if schedule.time_zone:
        try:
            zone(schedule.time_zone)
        except ValueError as error:
            problems.add(f"{field}.time_zone", str(error))
    if not 0 <= schedule.jitter_seconds <= MAX_JITTER_SECONDS:
        problems.add(f"{field}.jitter_seconds", f"between 0 and {MAX_JITTER_SECONDS}")
    problems.raise_if_any()


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone") from None


def crontab_fields(expression: str) -> dict[str, str]:
    """The CronTrigger fields of a standard five-field crontab line.

    APScheduler counts weekdays from Monday (0=mon), crontab from Sunday (0 or 7=sun),
    so the weekday field is expanded to names. Crontab ORs a restricted day-of-month
    with a restricted day-of-week while APScheduler ANDs them; rather than guess, such
    a line is refused.
    """
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"{expression!r}: a crontab line has 5 fields (minute hour day month weekday)")
    minute, hour, day, month, weekday = parts
    if day != "*" and weekday != "*":
        raise ValueError("restrict day-of-month or day-of-week, not both")
    fields = {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": _weekday_names(weekday),
              "second": "0"}
    try:
        CronTrigger(**fields, timezone=UTC)
    except ValueError as error:
        raise ValueError(f"{expression!r}: {error}") from None
    return fields


def _weekday_number(token: str) -> int:
    if token.lower() in _WEEKDAYS:
        return _WEEKDAYS.index(token.lower())
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"weekday {token!r}: 0-7 or sun-sat")


def _weekday_names(field: str) -> str:
    days: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        if step_text and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"weekday step {step_text!r}")
        step = int(step_text or 1)
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _weekday_number(low), _weekday_number(high)
            if high == "7":
                last = 7
            if last < first:
                raise ValueError(f"weekday range {span!r} runs backwards")
        else:
            first = last = _weekday_number(span)
            if step_text:
                last = 6
        days.update(day % 7 for day in range(first, last + 1, step))
    if days == set(range(7)):
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


class WallClockCronTrigger(BaseTrigger):
    """A crontab schedule on a zone's wall clock that DST neither skips nor doubles.

    Each matching wall-clock time fires once: a time that occurs twice (clocks set
    back) fires at its first occurrence only; a time that does not exist (clocks set
    forward) fires when the clock would have shown it, i.e. shifted by the gap
    (02:30 on a spring-forward night becomes 03:30). APScheduler's own CronTrigger
    fires a repeated hour twice, which is why this exists.
    """

    # Larger than any UTC offset change (DST shifts are 30 min to 2 h).
    _MAX_SHIFT = timedelta(hours=3)

    def __init__(self, expression: str, zone_name: str, jitter: int | None = None) -> None:
        self.expression, self.zone_name, self.jitter = expression, zone_name, jitter or None
        self._build()

    def _build(self) -> None:
        self._zone = zone(self.zone_name)
        # Matching wall-clock times, computed on a calendar without DST (UTC as a naive clock).
        self._calendar = CronTrigger(**crontab_fields(self.expression), timezone=UTC)

    def __getstate__(self) -> dict:
        return {"version": 1, "expression": self.expression, "zone_name": self.zone_name, "jitter": self.jitter}

    def __setstate__(self, state: dict) -> None:
        self.expression, self.zone_name, self.jitter = state["expression"], state["zone_name"], state["jitter"]
        self._build()

    def _instant(self, wall: datetime) -> datetime:
        # fold=0 is the first occurrence of a repeated time and, for a skipped one,
        # the offset before the jump: the time shifted forward by the gap.
        return wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self._zone).replace(tzinfo=UTC)

    def next_instant(self, earliest: datetime) -> datetime | None:
        """The first firing at or after `earliest`."""
        best: datetime | None = None
        wall = self._calendar.get_next_fire_time(None, self._wall(earliest) - self._MAX_SHIFT)
        # Wall order and instant order differ by at most the DST shift, so once the wall
        # clock is that far past the best instant found, nothing later can beat it.
        while wall is not None and (best is None or wall <= self._wall(best) + self._MAX_SHIFT):
            instant = self._instant(wall.replace(tzinfo=None))
            if instant >= earliest and (best is None or instant < best):
                best = instant
            wall = self._calendar.get_next_fire_time(wall, wall)
        return best

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # Like CronTrigger: strictly after the previous firing (so missed firings can be
        # counted and coalesced), else from now.
        earliest = previous_fire_time + timedelta(microseconds=1) if previous_fire_time else now
        instant = self.next_instant(earliest)
        if instant is None:
            return None
        # In UTC: an aware time inside a repeated hour never compares equal across zones.
        return self._apply_jitter(instant, self.jitter, now)

    def __str__(self) -> str:
        return f"cron[{self.expression}] {self.zone_name}"

    def __repr__(self) -> str:
        return f"<WallClockCronTrigger ({self.expression!r}, zone={self.zone_name!r}, jitter={self.jitter})>"


def build_trigger(schedule: Schedule, default_zone: str) -> BaseTrigger:
    zone_name = schedule.time_zone or default_zone
    if schedule.run_at is not None:
        return DateTrigger(run_date=schedule.run_at, timezone=UTC)
    if schedule.cron:
        return WallClockCronTrigger(schedule.cron, zone_name, schedule.jitter_seconds)
    return IntervalTrigger(
        seconds=schedule.interval_seconds, timezone=zone(zone_name), jitter=schedule.jitter_seconds or None
    )


def same_trigger(stored: BaseTrigger, wanted: BaseTrigger) -> bool:
    """Whether a job store's trigger already fires as `wanted` (e.g. after a change of
    the default time zone it does not, though the job's own row did not change)."""
    if isinstance(stored, WallClockCronTrigger) and isinstance(wanted, WallClockCronTrigger):
        return stored.__getstate__() == wanted.__getstate__()
    if isinstance(stored, IntervalTrigger) and isinstance(wanted, IntervalTrigger):
        return (stored.interval, stored.jitter, str(stored.timezone)) == (
            wanted.interval, wanted.jitter, str(wanted.timezone)
        )
    if isinstance(stored, DateTrigger) and isinstance(wanted, DateTrigger):
        return stored.run_date == wanted.run_date
    return False


def firings_between(trigger: BaseTrigger, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """The trigger's firings in [start, end) without jitter (a backfill's slots), at
    most `limit` + 1 of them so a caller can tell there are more than it allows.
    An interval schedule's slots are counted from the range's start."""
    found: list[datetime] = []
    if isinstance(trigger, DateTrigger):
        return [trigger.run_date] if start <= trigger.run_date < end else []
    if isinstance(trigger, IntervalTrigger):
        step = trigger.interval
        while start + step * len(found) < end and len(found) <= limit:
            found.append(start + step * len(found))
        return found
    assert isinstance(trigger, WallClockCronTrigger)
    fire = trigger.next_instant(start)
    while fire is not None and fire < end and len(found) <= limit:
        found.append(fire)
        fire = trigger.next_instant(fire + timedelta(microseconds=1))
    return found
