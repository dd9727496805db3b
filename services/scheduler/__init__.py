"""The scheduler service: timed jobs, the job-run log and manual runs.

- domain.py  the job catalogue, schedules (crontab / "@every Ns"), the DST-safe
             wall-clock cron trigger, retry back-off and which failures to retry;
- store.py   scheduler.jobs (desired schedules, pauses), scheduler.job_runs (one
             row per attempt), reads of APScheduler's scheduler.apscheduler_jobs;
- leader.py  advisory-lock leader election; only the leader runs APScheduler;
- runner.py  executes attempts (target call, outcome, retries, interruptions);
- targets.py builds target requests from run params and words failures;
- watch.py   LISTEN/NOTIFY fan-out for WatchJobRuns;
- server.py  the gRPC servicer.
"""
