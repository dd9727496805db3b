"""The scheduler's pure decisions (no I/O, no transport), one concern per module:

- runs.py       run statuses, trigger kinds, retry back-off;
- catalogue.py  the built-in jobs;
- schedules.py  crontab (DST-safe), intervals and one-shots as APScheduler triggers;
- jobs.py       a job's definition and what an update may change;
- policies.py   overlap (skip, buffer one/all, cancel other, allow all) and catch-up;
- blackouts.py  blackout calendars;
- backfills.py  a backfill's slots and final state;
- errors.py     plain exceptions the servicer maps to status codes.
"""
