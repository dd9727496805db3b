"""The scheduler service: timed jobs, the job-run log, manual runs, backfills,
jobs defined at run time and blackout calendars. See README.md for the tables,
the flows and the leader lock.

- domain/        pure decisions (schedules, overlap and catch-up, blackouts, backfill slots);
- store/         the scheduler schema's tables, handing out typed records;
- usecases.py    calls that coordinate several steps (define a job, run now, backfill);
- firing.py      a firing meeting the job's policies (blackout, overlap, catch-up);
- backfilling.py starting a backfill's slots within its concurrency;
- runner.py      executes attempts (target call, outcome, retries, cancellation);
- targets.py     the schedulable-RPC allow-list, payload checks, the target call;
- leader.py      advisory-lock leader election; only the leader runs APScheduler;
- watch.py       LISTEN/NOTIFY fan-out for WatchJobRuns;
- api/           the gRPC servicer, message conversion, domain-error mapping;
- wiring.py      the composition root.
"""
