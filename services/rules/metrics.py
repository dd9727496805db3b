"""What operators watch in the rules service, for Prometheus.

Label sets stay bounded: outcomes and statuses are fixed sets, action types are the
vocabulary's, and rules are named by their id (an admin-managed, finite set).
"""

from __future__ import annotations

from prometheus_client import Counter

EVALUATIONS = Counter(
    "loom_rules_evaluations_total", "Events evaluated against the active rules, by outcome: matched or no_match.", ["outcome"]
)
EXECUTIONS = Counter(
    "loom_rules_executions_total", "Rule executions that finished, by rule id and final status.", ["rule", "status"]
)
ACTIONS = Counter(
    "loom_rules_actions_total",
    "Actions run to their end (retries included in one), by action type and outcome: succeeded or failed.",
    ["action", "outcome"],
)
