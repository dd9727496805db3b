"""The scheduler's pure decisions: schedules, DST-safe trigger math, retries."""

import pickle
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

from services.scheduler.domain.catalogue import JOBS
from services.scheduler.domain.errors import InvalidInput
from services.scheduler.domain.runs import RunStatus, next_status_after_failure, retry_delay_seconds
from services.scheduler.domain.schedules import (
    Schedule,
    WallClockCronTrigger,
    build_trigger,
    crontab_fields,
    parse_schedule_spec,
    same_trigger,
    validate_schedule,
)
from services.scheduler.targets import is_transient


def firings(trigger, start: datetime, count: int) -> list[datetime]:
    """The next `count` firings from `start`, as APScheduler asks for them."""
    found, previous = [], None
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, start)
        found.append(previous)
    return found


def local_days(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).date().isoformat() for t in times]


# --- DST --------------------------------------------------------------------------------


def test_daily_job_fires_once_on_every_day_across_spring_forward():
    trigger = WallClockCronTrigger("0 2 * * *", "Europe/Berlin")
    times = firings(trigger, datetime(2025, 3, 28, tzinfo=UTC), 5)
    assert local_days(times, "Europe/Berlin") == [
        "2025-03-28", "2025-03-29", "2025-03-30", "2025-03-31", "2025-04-01"
    ]


def test_a_time_that_does_not_exist_fires_shifted_forward_by_the_gap():
    # 2025-03-30 02:30 never shows on Berlin clocks (02:00 -> 03:00).
    trigger = WallClockCronTrigger("30 2 * * *", "Europe/Berlin")
    fired = trigger.get_next_fire_time(None, datetime(2025, 3, 29, 12, tzinfo=UTC))
    assert fired.astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None) == datetime(2025, 3, 30, 3, 30)


def test_a_time_that_occurs_twice_fires_once_at_its_first_occurrence():
    # 2025-10-26 02:00-02:59 occurs twice in Berlin (03:00 CEST -> 02:00 CET).
    trigger = WallClockCronTrigger("30 2 * * *", "Europe/Berlin")
    times = firings(trigger, datetime(2025, 10, 25, 12, tzinfo=UTC), 3)
    assert times[0] == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first one
    assert local_days(times, "Europe/Berlin") == ["2025-10-26", "2025-10-27", "2025-10-28"]


def test_fall_back_in_new_york_neither_doubles_nor_skips():
    trigger = WallClockCronTrigger("30 1 * * *", "America/New_York")
    times = firings(trigger, datetime(2025, 10, 31, tzinfo=UTC), 5)
    assert local_days(times, "America/New_York") == [
        "2025-10-31", "2025-11-01", "2025-11-02", "2025-11-03", "2025-11-04"
    ]
    assert all(b - a >= timedelta(hours=23) for a, b in zip(times, times[1:], strict=False))


def test_asking_again_from_inside_the_repeated_hour_does_not_fire_twice():
    trigger = WallClockCronTrigger("30 1 * * *", "America/New_York")
    first = datetime(2025, 11, 2, 5, 30, tzinfo=UTC)  # 01:30 EDT
    now = datetime(2025, 11, 2, 6, 29, tzinfo=UTC)  # 01:29 EST: 01:30 shows again a minute later
    assert trigger.get_next_fire_time(first, now) == datetime(2025, 11, 3, 6, 30, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, now) == datetime(2025, 11, 3, 6, 30, tzinfo=UTC)


def test_a_whole_year_of_a_daily_job_fires_exactly_once_per_local_day():
    trigger = WallClockCronTrigger("30 2 * * *", "Europe/London")
    times = firings(trigger, datetime(2025, 1, 1, tzinfo=UTC), 365)
    days = local_days(times, "Europe/London")
    assert len(set(days)) == 365
    assert days[0] == "2025-01-01" and days[-1] == "2025-12-31"


def test_sub_daily_cron_in_utc_matches_plain_cron():
    trigger = WallClockCronTrigger("*/15 9-10 * * *", "UTC")
    times = firings(trigger, datetime(2025, 6, 2, 9, 5, tzinfo=UTC), 3)
    assert [t.strftime("%H:%M") for t in times] == ["09:15", "09:30", "09:45"]


def test_weekly_sunday_uses_crontab_weekday_numbers():
    trigger = build_trigger(parse_schedule_spec(JOBS["capture-price-snapshot"].default_schedule), "UTC")
    times = firings(trigger, datetime(2025, 6, 1, 4, tzinfo=UTC), 3)  # a Sunday, after 03:00
    assert [(t.strftime("%a %H:%M"), t.date().isoformat()) for t in times] == [
        ("Sun 03:00", "2025-06-08"), ("Sun 03:00", "2025-06-15"), ("Sun 03:00", "2025-06-22")
    ]


def test_trigger_survives_the_job_store_pickle():
    trigger = WallClockCronTrigger("0 2 * * *", "Europe/Berlin", jitter=5)
    copy = pickle.loads(pickle.dumps(trigger))  # noqa: S301 - round-trips our own trigger
    start = datetime(2025, 3, 28, tzinfo=UTC)
    assert (copy.expression, copy.zone_name, copy.jitter) == ("0 2 * * *", "Europe/Berlin", 5)
    assert abs(copy.get_next_fire_time(None, start) - datetime(2025, 3, 28, 1, tzinfo=UTC)) <= timedelta(seconds=5)


def test_jitter_delays_a_firing_by_at_most_its_bound():
    trigger = WallClockCronTrigger("0 2 * * *", "UTC", jitter=30)
    start = datetime(2025, 3, 28, tzinfo=UTC)
    for _ in range(20):
        delay = trigger.get_next_fire_time(None, start) - datetime(2025, 3, 28, 2, tzinfo=UTC)
        assert timedelta(0) <= delay <= timedelta(seconds=30)


# --- crontab and schedule validation ----------------------------------------------------


@pytest.mark.parametrize(
    ("weekday", "names"),
    [("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("5-7", "sun,fri,sat"), ("*/2", "sun,tue,thu,sat"),
     ("sat,sun", "sun,sat"), ("*", "*"), ("0-6", "*")],
)
def test_crontab_weekdays_count_from_sunday(weekday, names):
    assert crontab_fields(f"0 3 * * {weekday}")["day_of_week"] == names


@pytest.mark.parametrize(
    "spec",
    ["0 2 * *", "0 2 * * * *", "61 2 * * *", "0 25 * * *", "0 2 32 * *", "0 2 * 13 *", "0 2 * * 8", "0 2 * * 5-1",
     "0 2 1 * 1", "x 2 * * *"],
)
def test_bad_cron_lines_are_invalid_arguments_naming_the_cron_field(spec):
    with pytest.raises(InvalidInput) as raised:
        validate_schedule(Schedule(cron=spec))
    assert [v.field for v in raised.value.violations] == ["schedule.cron"]


def test_a_schedule_needs_exactly_one_of_cron_and_interval():
    for schedule in (Schedule(), Schedule(cron="0 2 * * *", interval_seconds=60)):
        with pytest.raises(InvalidInput) as raised:
            validate_schedule(schedule)
        assert "schedule" in {v.field for v in raised.value.violations}


def test_every_bad_part_of_a_schedule_is_reported_at_once():
    with pytest.raises(InvalidInput) as raised:
        validate_schedule(Schedule(interval_seconds=-5, time_zone="Mars/Olympus", jitter_seconds=-1))
    assert {v.field for v in raised.value.violations} == {
        "schedule.interval_seconds", "schedule.time_zone", "schedule.jitter_seconds"
    }


def test_configured_specs_parse_to_schedules():
    assert parse_schedule_spec("@every 5m") == Schedule(interval_seconds=300)
    assert parse_schedule_spec("@every 2h") == Schedule(interval_seconds=7200)
    assert parse_schedule_spec(" 0  2 * * * ") == Schedule(cron="0 2 * * *")
    with pytest.raises(ValueError):
        parse_schedule_spec("@hourly")


def test_every_default_schedule_is_valid():
    for job in JOBS.values():
        validate_schedule(parse_schedule_spec(job.default_schedule))


def test_interval_trigger_fires_every_interval():
    trigger = build_trigger(Schedule(interval_seconds=300), "UTC")
    times = firings(trigger, datetime(2025, 1, 1, tzinfo=UTC), 3)
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(seconds=300)] * 2


def test_a_stored_trigger_matches_only_the_same_schedule_and_zone():
    daily = Schedule(cron="0 2 * * *")
    assert same_trigger(build_trigger(daily, "UTC"), build_trigger(daily, "UTC"))
    assert not same_trigger(build_trigger(daily, "UTC"), build_trigger(daily, "Europe/Berlin"))
    assert not same_trigger(build_trigger(daily, "UTC"), build_trigger(Schedule(cron="0 3 * * *"), "UTC"))
    every = Schedule(interval_seconds=60)
    assert same_trigger(build_trigger(every, "UTC"), build_trigger(every, "UTC"))
    assert not same_trigger(build_trigger(every, "UTC"), build_trigger(Schedule(interval_seconds=61), "UTC"))
    assert not same_trigger(build_trigger(every, "UTC"), build_trigger(daily, "UTC"))


# --- retries ----------------------------------------------------------------------------


def test_retry_delays_double_up_to_the_cap():
    assert [retry_delay_seconds(n, base=30, maximum=200) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]


def test_transient_failures_retry_until_the_last_attempt_is_dead_lettered():
    assert next_status_after_failure(1, 3, transient=True) == RunStatus.FAILED
    assert next_status_after_failure(2, 3, transient=True) == RunStatus.FAILED
    assert next_status_after_failure(3, 3, transient=True) == RunStatus.DEAD_LETTERED


def test_a_permanent_failure_is_dead_lettered_at_once():
    assert next_status_after_failure(1, 3, transient=False) == RunStatus.DEAD_LETTERED


@pytest.mark.parametrize(
    ("code", "transient"),
    [(grpc.StatusCode.UNAVAILABLE, True), (grpc.StatusCode.DEADLINE_EXCEEDED, True),
     (grpc.StatusCode.RESOURCE_EXHAUSTED, True), (grpc.StatusCode.UNIMPLEMENTED, False),
     (grpc.StatusCode.INVALID_ARGUMENT, False), (grpc.StatusCode.PERMISSION_DENIED, False), (None, False)],
)
def test_which_failures_are_worth_retrying(code, transient):
    assert is_transient(code) is transient
