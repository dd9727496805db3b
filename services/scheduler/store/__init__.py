"""The scheduler's tables (SQLAlchemy Core), one module per area; each hands back
typed records (records.py), never rows.

- tables.py     the table definitions;
- records.py    the frozen records that cross the store boundary;
- jobs.py       job definitions (built-in and defined at run time), APScheduler's store;
- runs.py       the job-run log: attempts, queueing, cancellation, orphans, retention;
- backfills.py  backfills and their slots;
- calendars.py  blackout calendars.
"""

# Advisory lock namespaces (the first key of the two-key form): one lock per live
# replica, and the single leader lock.
REPLICA_LOCK_NAMESPACE = 0x53434852  # "SCHR"
LEADER_LOCK_NAMESPACE = 0x5343484C  # "SCHL"
