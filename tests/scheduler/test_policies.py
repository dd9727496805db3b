"""The scheduler's policy decisions at their edges: overlap, catch-up, blackouts
(across DST), backfill slots and what an update may change."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain.backfills import MAX_SLOTS, BackfillState, SlotCounts, backfill_slots, final_state
from services.scheduler.domain.blackouts import BlackoutRange, Calendar, blacked_out_by, parse_calendar
from services.scheduler.domain.errors import InvalidInput, WrongState
from services.scheduler.domain.jobs import JobSpec, check_update_paths, validate_job
from services.scheduler.domain.policies import (
    MAX_MISSED_ROWS,
    Action,
    CatchUpPolicy,
    OverlapPolicy,
    decide_overlap,
    plan_catch_up,
)
from services.scheduler.domain.schedules import Schedule, build_trigger

BERLIN = ZoneInfo("Europe/Berlin")

# --- overlap ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(OverlapPolicy))
def test_a_firing_with_nothing_in_progress_starts_under_every_policy(policy):
    assert decide_overlap(policy, [], []).action == Action.START


@pytest.mark.parametrize(
    ("policy", "queued", "action", "cancel"),
    [
        (OverlapPolicy.SKIP, [], Action.SKIP, ()),
        (OverlapPolicy.BUFFER_ONE, [], Action.QUEUE, ()),
        (OverlapPolicy.BUFFER_ONE, ["q1"], Action.SKIP, ()),
        (OverlapPolicy.BUFFER_ALL, ["q1", "q2"], Action.QUEUE, ()),
        (OverlapPolicy.CANCEL_OTHER, [], Action.QUEUE, ("r1",)),
        (OverlapPolicy.CANCEL_OTHER, ["q1"], Action.QUEUE, ("r1", "q1")),
        (OverlapPolicy.ALLOW_ALL, ["q1"], Action.START, ()),
    ],
)
def test_a_firing_meeting_a_run_in_progress(policy, queued, action, cancel):
    decision = decide_overlap(policy, ["r1"], queued)
    assert (decision.action, decision.cancel) == (action, cancel)
    if action != Action.START:
        assert policy.name in decision.reason


def test_a_buffered_firing_keeps_its_place_while_its_predecessor_hands_over():
    # Nothing runs, but a firing already waits: a new one queues behind it.
    assert decide_overlap(OverlapPolicy.BUFFER_ALL, [], ["q1"]).action == Action.QUEUE
    assert decide_overlap(OverlapPolicy.BUFFER_ONE, [], ["q1"]).action == Action.SKIP


# --- catch-up ---------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def seconds_ago(*values: int) -> list[datetime]:
    return [NOW - timedelta(seconds=s) for s in values]


def test_missed_firings_within_the_window_each_run_and_older_ones_are_recorded_missed():
    plan = plan_catch_up(seconds_ago(90, 61, 60, 30, 0), NOW, CatchUpPolicy(window_seconds=60, coalesce=False))
    assert [(f.time, f.run) for f in plan] == [
        (NOW - timedelta(seconds=90), False), (NOW - timedelta(seconds=61), False),
        (NOW - timedelta(seconds=60), True), (NOW - timedelta(seconds=30), True), (NOW, True),
    ]
    assert all("outside the 60s catch-up window" in f.reason for f in plan if not f.run)


def test_coalesce_runs_only_the_latest_firing_within_the_window():
    plan = plan_catch_up(seconds_ago(120, 50, 20, 1), NOW, CatchUpPolicy(window_seconds=60, coalesce=True))
    ran = [f.time for f in plan if f.run]
    assert ran == [NOW - timedelta(seconds=1)]
    coalesced = [f for f in plan if "coalesced" in f.reason]
    assert [f.time for f in coalesced] == seconds_ago(50, 20)
    assert any("catch-up window" in f.reason for f in plan if f.time == NOW - timedelta(seconds=120))


def test_a_firing_on_time_simply_runs():
    assert plan_catch_up([NOW], NOW, CatchUpPolicy(1, True)) == [plan_catch_up([NOW], NOW, CatchUpPolicy(1, False))[0]]
    assert plan_catch_up([NOW], NOW, CatchUpPolicy(1, False))[0].run


def test_a_long_outage_folds_its_oldest_missed_firings_into_one_record():
    times = [NOW - timedelta(minutes=m) for m in range(1000, 0, -1)]
    plan = plan_catch_up(times, NOW, CatchUpPolicy(window_seconds=60, coalesce=False))
    missed = [f for f in plan if not f.run]
    assert len(missed) == MAX_MISSED_ROWS
    assert missed[0].reason.startswith(f"missed: {1000 - 1 - MAX_MISSED_ROWS + 1} firings")
    assert [f.run for f in plan].count(True) == 1


# --- blackouts --------------------------------------------------------------------------


def freeze() -> Calendar:
    # Berlin leaves summer time on 2026-10-25 at 03:00 CEST -> 02:00 CET: the range is 49 hours long.
    return parse_calendar("autumn-freeze", "Europe/Berlin", [("2026-10-24T00:00:00", "2026-10-26T00:00:00")], "")


def test_a_blackout_across_the_end_of_summer_time_covers_both_local_days_whole():
    calendar = freeze()
    start = datetime(2026, 10, 24, 0, 0, tzinfo=BERLIN).astimezone(UTC)
    end = datetime(2026, 10, 26, 0, 0, tzinfo=BERLIN).astimezone(UTC)
    assert end - start == timedelta(hours=49)
    assert calendar.covers(start) and not calendar.covers(start - timedelta(microseconds=1))
    assert calendar.covers(end - timedelta(microseconds=1)) and not calendar.covers(end)


def test_an_hourly_job_is_blacked_out_for_every_firing_of_the_repeated_hour():
    calendar = freeze()
    # Both 02:30s of 2026-10-25 in Berlin (00:30 UTC in CEST, 01:30 UTC in CET).
    for instant in (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)):
        assert blacked_out_by([calendar], instant) == "autumn-freeze"
    hourly = build_trigger(Schedule(cron="30 * * * *", time_zone="Europe/Berlin"), "UTC")
    fire, covered = hourly.next_instant(datetime(2026, 10, 23, 20, tzinfo=UTC)), 0
    while fire < datetime(2026, 10, 26, 2, tzinfo=UTC):
        covered += calendar.covers(fire)
        fire = hourly.next_instant(fire + timedelta(microseconds=1))
    # The wall-clock trigger fires each local time once (the repeated 02:30 at its first occurrence).
    assert covered == 48


def test_a_blackout_across_the_start_of_summer_time_is_an_hour_shorter():
    calendar = parse_calendar("spring", "Europe/Berlin", [("2026-03-29T00:00:00", "2026-03-30T00:00:00")], "")
    (span,) = calendar.ranges
    start, end = (t.replace(tzinfo=BERLIN).astimezone(UTC) for t in (span.start, span.end))
    assert end - start == timedelta(hours=23)
    assert calendar.covers(datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST, just after the jump


def test_only_a_calendar_covering_the_time_blacks_it_out():
    other = Calendar("xmas", "UTC", (BlackoutRange(datetime(2026, 12, 24), datetime(2026, 12, 27)),))
    assert blacked_out_by([other, freeze()], datetime(2026, 10, 24, 12, tzinfo=UTC)) == "autumn-freeze"
    assert blacked_out_by([other], datetime(2026, 10, 24, 12, tzinfo=UTC)) is None


def test_a_bad_calendar_names_every_bad_part():
    with pytest.raises(InvalidInput) as raised:
        parse_calendar("Bad Name", "Mars/Olympus",
                       [("2026-12-27T00:00", "2026-12-24T00:00"), ("tomorrow", "2026-12-24T00:00+01:00")], "")
    assert {v.field for v in raised.value.violations} == {
        "calendar.name", "calendar.time_zone", "calendar.ranges[0]", "calendar.ranges[1].start",
        "calendar.ranges[1].end",
    }


# --- backfills --------------------------------------------------------------------------


def test_a_daily_job_has_fourteen_slots_in_the_first_fourteen_days_of_november():
    trigger = build_trigger(Schedule(cron="0 2 * * *", time_zone="Europe/Berlin"), "UTC")
    start = datetime(2026, 11, 1, tzinfo=BERLIN)
    slots = backfill_slots(trigger, start, datetime(2026, 11, 15, tzinfo=BERLIN), NOW, 2)
    assert len(slots) == 14
    assert [s.astimezone(BERLIN).strftime("%d %H:%M") for s in slots[:2]] == ["01 02:00", "02 02:00"]


def test_an_interval_job_counts_its_slots_from_the_range_start_end_exclusive():
    trigger = build_trigger(Schedule(interval_seconds=3600), "UTC")
    start = NOW - timedelta(hours=3)
    assert backfill_slots(trigger, start, NOW, NOW, 1) == [start, start + timedelta(hours=1), start + timedelta(hours=2)]


@pytest.mark.parametrize(
    ("start", "end", "concurrency", "field"),
    [
        (NOW, NOW - timedelta(hours=1), 1, "end_time"),
        (NOW - timedelta(hours=1), NOW + timedelta(hours=1), 1, "end_time"),
        (None, NOW, 1, "start_time"),
        (NOW - timedelta(hours=1), NOW, 33, "max_concurrency"),
        (NOW - timedelta(seconds=MAX_SLOTS + 1), NOW, 1, "end_time"),
        (NOW - timedelta(seconds=1), NOW - timedelta(microseconds=1), 1, "start_time"),
    ],
)
def test_bad_backfill_requests_name_the_field(start, end, concurrency, field):
    trigger = build_trigger(Schedule(interval_seconds=1) if field != "start_time" or start is None
                            else Schedule(cron="0 2 * * *"), "UTC")
    with pytest.raises(InvalidInput) as raised:
        backfill_slots(trigger, start, end, NOW, concurrency)
    assert field in {v.field for v in raised.value.violations}


def test_a_backfill_ends_once_no_slot_is_pending():
    assert final_state(SlotCounts(succeeded=13, pending=1), cancelled=False) is None
    assert final_state(SlotCounts(succeeded=14), cancelled=False) == BackfillState.SUCCEEDED
    assert final_state(SlotCounts(succeeded=13, failed=1), cancelled=False) == BackfillState.FAILED
    assert final_state(SlotCounts(succeeded=3, pending=11), cancelled=True) == BackfillState.CANCELLED


# --- job definitions --------------------------------------------------------------------


def test_a_built_in_job_changes_only_its_schedule_and_policies():
    assert check_update_paths(["schedule", "overlap_policy"], True, "orchestrate-batches") == {
        "schedule", "overlap_policy"
    }
    with pytest.raises(WrongState):
        check_update_paths(["payload"], True, "orchestrate-batches")
    assert "target" not in check_update_paths([], True, "orchestrate-batches")
    assert "target" in check_update_paths([], False, "nightly")
    with pytest.raises(InvalidInput):
        check_update_paths(["job_name"], False, "nightly")


def test_a_job_definition_names_every_bad_field():
    spec = JobSpec(name="Nightly Job", target="", schedule=Schedule(), max_attempts=99, deadline_seconds=-1,
                   blackout_calendars=("a", "a"))
    assert {v.field for v in validate_job(spec)} == {
        "job.job_name", "job.target", "job.schedule", "job.max_attempts", "job.deadline_seconds",
        "job.blackout_calendars",
    }
