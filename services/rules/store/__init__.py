"""The rules service's store: its schema (schema.py) and one module of queries per area.

Exactly-once per (rule, event) rests on the unique key of `executions`: an
execution is claimed with INSERT ... ON CONFLICT DO NOTHING, so concurrent or
repeated evaluations of one event cannot both win. Events and stalled executions
are leased with FOR UPDATE SKIP LOCKED, so several replicas share the work.

The use cases and the servicer call `store.<query>`; the package re-exports each area's
queries so that the call sites read the same whatever module a query lives in.
"""

from services.rules.store.events import *  # noqa: F403
from services.rules.store.executions import *  # noqa: F403
from services.rules.store.leases import *  # noqa: F403
from services.rules.store.notifications import *  # noqa: F403
from services.rules.store.retention import *  # noqa: F403
from services.rules.store.rules import *  # noqa: F403
from services.rules.store.schema import *  # noqa: F403
from services.rules.store.waits import *  # noqa: F403
