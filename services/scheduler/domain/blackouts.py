"""Blackout calendars: named wall-clock ranges, each read in the calendar's zone,
during which the jobs that name the calendar do not fire.

A range is local time: "2026-10-24T00:00" to "2026-10-26T00:00" in Europe/Berlin
covers the whole of both days, however long DST makes them (49 hours here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.scheduler.domain.errors import Problems
from services.scheduler.domain.schedules import zone

NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
MAX_RANGES = 500


@dataclass(frozen=True)
class BlackoutRange:
    start: datetime  # naive local wall-clock times
    end: datetime


@dataclass(frozen=True)
class Calendar:
    name: str
    time_zone: str
    ranges: tuple[BlackoutRange, ...]
    description: str = ""

    def covers(self, instant: datetime) -> bool:
        """Whether the aware `instant` falls in one of the ranges."""
        tz = zone(self.time_zone)
        # fold=0: a range edge inside a repeated hour is its first occurrence.
        return any(
            r.start.replace(tzinfo=tz, fold=0) <= instant < r.end.replace(tzinfo=tz, fold=0) for r in self.ranges
        )


def blacked_out_by(calendars: Iterable[Calendar], instant: datetime) -> str | None:
    """The name of the first calendar that covers `instant`, if any."""
    return next((calendar.name for calendar in calendars if calendar.covers(instant)), None)


def parse_calendar(name: str, time_zone: str, ranges: Iterable[tuple[str, str]], description: str,
                   field: str = "calendar") -> Calendar:
    """A valid calendar, or InvalidInput naming every bad part."""
    problems = Problems()
    if not NAME.fullmatch(name):
        problems.add(f"{field}.name", "lower-case letters, digits and '-', starting with a letter, at most 63")
    try:
        zone(time_zone)
    except ValueError as error:
        problems.add(f"{field}.time_zone", str(error))
    if len(description) > 500 or "\x00" in description:
        problems.add(f"{field}.description", "at most 500 characters, no NUL")
    parsed: list[BlackoutRange] = []
    ranges = list(ranges)
    if len(ranges) > MAX_RANGES:
        problems.add(f"{field}.ranges", f"at most {MAX_RANGES}")
    for i, (start, end) in enumerate(ranges):
        bounds = []
        for part, text in (("start", start), ("end", end)):
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                problems.add(f"{field}.ranges[{i}].{part}", "a local date-time, e.g. 2026-12-24T00:00:00")
                continue
            if value.tzinfo is not None:
                problems.add(f"{field}.ranges[{i}].{part}", "local time, without an offset: the zone is the calendar's")
                continue
            bounds.append(value)
        if len(bounds) == 2:
            if bounds[0] >= bounds[1]:
                problems.add(f"{field}.ranges[{i}]", "start must be before end")
            else:
                parsed.append(BlackoutRange(*bounds))
    problems.raise_if_any()
    return Calendar(name, time_zone, tuple(parsed), description)
