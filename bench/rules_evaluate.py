"""Rule evaluation throughput: 100 active rules of mixed shape against many events, in process.

Leaves name windowed facts too (`window.*`, in the facts as the evaluator hands them
over after its one fetch per evaluation). One rule in ten is a decision table (its
rows become an any-of-alls for the floor and the peers, which have no tables: the
same decision, whatever the policy, because its numeric bands are disjoint).

Subject: the rules service's evaluator (`domain.evaluation.evaluate`, the worker's
hot path, dry — no I/O). Floor: the same conditions as plain Python lambdas over
well-formed dicts (no missing-fact or type handling). Peers: the same rules as one
zen-engine decision (an expression node with one expression per rule, one call per
event) and as business-rules rule dicts over a variables class. Every engine must
agree on which rules match each event, so they all do the same work. The peers are
slow, so they run on a sample of the events (BENCH_RULES_PEER_EVENTS); rates are per
second either way. Every figure's ratio is to the hand-written floor.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from typing import Any

from bench.harness import BenchContext, Figure, benchmark, median
from services.rules.domain.conditions import Violation, normalise
from services.rules.domain.evaluation import ActiveRule, evaluate, in_evaluation_order

RULES = 100
STATUSES = ["placed", "awaiting_supplier", "confirmed", "in_production", "cancelled"]
CATEGORIES = ["t_shirts", "hoodies", "tote_bags", "caps", "trousers"]
NUMERIC = {
    "order.quantity": (1, 500),
    "batch.fill_percentage": (0, 120),
    "batch.current_quantity": (0, 1000),
    "supplier.rating": (0, 5),
    "supplier.lead_time_days": (1, 60),
    "supplier.capacity": (50, 5000),
    # Windowed facts (fetched once per evaluation from batch / tracking; here, already in the facts).
    "window.buyer_orders_24h": (0, 30),
    "window.product_interactions_today": (0, 500),
}
STRING = {"order.status": STATUSES, "batch.status": ["filling", "confirmed", "cancelled"], "order.category": CATEGORIES}


def random_leaf(rng: random.Random) -> dict:
    if rng.random() < 0.55:
        fact = rng.choice(list(NUMERIC))
        low, high = NUMERIC[fact]
        if rng.random() < 0.2:
            a, b = sorted(rng.randint(low, high) for _ in range(2))
            return {"fact": fact, "operator": "between", "value": [a, b]}
        operator = rng.choice(["greater_than", "greater_than_inclusive", "less_than", "less_than_inclusive"])
        return {"fact": fact, "operator": operator, "value": rng.randint(low, high)}
    fact = rng.choice(list(STRING))
    kind = rng.random()
    if kind < 0.5:
        return {"fact": fact, "operator": "equal", "value": rng.choice(STRING[fact])}
    if kind < 0.8:
        return {"fact": fact, "operator": "in", "value": rng.sample(STRING[fact], 2)}
    return {"fact": fact, "operator": "starts_with", "value": rng.choice(STRING[fact])[:2]}


def random_condition(rng: random.Random) -> dict:
    shape = rng.randrange(5)
    if shape == 0:
        return random_leaf(rng)
    if shape == 1:
        return {"all": [random_leaf(rng) for _ in range(rng.randint(2, 3))]}
    if shape == 2:
        return {"any": [random_leaf(rng) for _ in range(2)]}
    if shape == 3:
        return {"all": [{"any": [random_leaf(rng), random_leaf(rng)]}, random_leaf(rng)]}
    return {"any": [{"all": [random_leaf(rng), random_leaf(rng)]}, random_leaf(rng)]}


def random_table(rng: random.Random) -> dict:
    """A decision table over a numeric and a string fact: disjoint numeric bands, so every policy's
    "does it yield a result" is "does any row match" and the peers can run it as an any-of-alls."""
    number = rng.choice(list(NUMERIC))
    text = rng.choice(list(STRING))
    low, high = NUMERIC[number]
    cuts = sorted(rng.sample(range(low + 1, high), 3))
    edges = [low, *cuts, high]
    policy = rng.choice(["UNIQUE", "FIRST", "PRIORITY", "COLLECT"])
    rows = [
        {
            "when": [{"min": a, "max": b - 1} if i < 3 else f">= {a}", rng.choice(["-", rng.sample(STRING[text], 2)])],
            "then": {"discount": rng.choice([0, 5, 10])},
        }
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    table = {
        "hit_policy": policy,
        "inputs": [number, text],
        "outputs": [{"name": "discount", "priorities": [10, 5, 0]}],
        "rules": rows,
    }
    if policy == "COLLECT":
        table["aggregation"] = "SUM"
    return {"table": table}


def expanded(node: dict) -> dict:
    """The same condition without tables: a table that yields a result is one whose rows any match."""
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        return {key: [expanded(c) for c in node[key]]}
    if "table" not in node:
        return node
    table = node["table"]
    return {
        "any": [
            {"all": [{"fact": fact, **cell} for fact, cell in zip(table["inputs"], row["when"], strict=True) if cell is not None]}
            for row in table["rules"]
        ]
    }


def random_facts(rng: random.Random) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for path, (low, high) in NUMERIC.items():
        entity, field = path.split(".")
        facts.setdefault(entity, {})[field] = float(rng.randint(low, high))
    for path, values in STRING.items():
        entity, field = path.split(".")
        facts.setdefault(entity, {})[field] = rng.choice(values)
    return facts


# --- the same conditions for every engine -----------------------------------------------------


def python_source(node: dict) -> str:
    if "all" in node:
        return "(" + " and ".join(python_source(c) for c in node["all"]) + ")"
    if "any" in node:
        return "(" + " or ".join(python_source(c) for c in node["any"]) + ")"
    entity, field = node["fact"].split(".")
    fact, value, operator = f"f[{entity!r}][{field!r}]", node["value"], node["operator"]
    return {
        "greater_than": lambda: f"{fact} > {value!r}",
        "greater_than_inclusive": lambda: f"{fact} >= {value!r}",
        "less_than": lambda: f"{fact} < {value!r}",
        "less_than_inclusive": lambda: f"{fact} <= {value!r}",
        "between": lambda: f"{value[0]!r} <= {fact} <= {value[1]!r}",
        "equal": lambda: f"{fact} == {value!r}",
        "in": lambda: f"{fact} in {tuple(value)!r}",
        "starts_with": lambda: f"{fact}.startswith({value!r})",
    }[operator]()


def zen_source(node: dict) -> str:
    if "all" in node:
        return "(" + " and ".join(zen_source(c) for c in node["all"]) + ")"
    if "any" in node:
        return "(" + " or ".join(zen_source(c) for c in node["any"]) + ")"
    fact, value, operator = node["fact"], node["value"], node["operator"]
    return {
        "greater_than": lambda: f"{fact} > {value}",
        "greater_than_inclusive": lambda: f"{fact} >= {value}",
        "less_than": lambda: f"{fact} < {value}",
        "less_than_inclusive": lambda: f"{fact} <= {value}",
        "between": lambda: f"({fact} >= {value[0]} and {fact} <= {value[1]})",
        "equal": lambda: f"{fact} == {json.dumps(value)}",
        "in": lambda: f"{fact} in {json.dumps(value)}",
        "starts_with": lambda: f"startsWith({fact}, {json.dumps(value)})",
    }[operator]()


def business_rules_conditions(node: dict) -> dict:
    if "all" in node:
        return {"all": [business_rules_conditions(c) for c in node["all"]]}
    if "any" in node:
        return {"any": [business_rules_conditions(c) for c in node["any"]]}
    name, value, operator = node["fact"].replace(".", "_"), node["value"], node["operator"]
    if operator == "between":
        return {"all": [
            {"name": name, "operator": "greater_than_or_equal_to", "value": value[0]},
            {"name": name, "operator": "less_than_or_equal_to", "value": value[1]},
        ]}
    if operator == "in":
        return {"any": [{"name": name, "operator": "equal_to", "value": v} for v in value]}
    renamed = {
        "greater_than_inclusive": "greater_than_or_equal_to",
        "less_than_inclusive": "less_than_or_equal_to",
        "equal": "equal_to",
    }
    return {"name": name, "operator": renamed.get(operator, operator), "value": value}


def business_evaluator(conditions: list[dict]):
    from business_rules import engine
    from business_rules.actions import BaseActions, rule_action
    from business_rules.variables import (
        BaseVariables,
        numeric_rule_variable,
        string_rule_variable,
    )

    def variable(path: str, decorator):
        entity, field = path.split(".")
        return decorator(lambda self: self.facts[entity][field])

    namespace = {"__init__": lambda self, facts: setattr(self, "facts", facts)}
    for path in NUMERIC:
        namespace[path.replace(".", "_")] = variable(path, numeric_rule_variable)
    for path in STRING:
        namespace[path.replace(".", "_")] = variable(path, string_rule_variable)
    variables_class = type("BenchVariables", (BaseVariables,), namespace)

    class Matches(BaseActions):
        def __init__(self) -> None:
            self.matched: list[int] = []

        @rule_action(params={"rule": "numeric"})
        def matched_rule(self, rule):
            self.matched.append(int(rule))

    rule_list = [
        {"conditions": business_rules_conditions(c), "actions": [{"name": "matched_rule", "params": {"rule": i}}]}
        for i, c in enumerate(conditions)
    ]

    def run(facts: dict) -> list[int]:
        actions = Matches()
        engine.run_all(rule_list, defined_variables=variables_class(facts), defined_actions=actions)
        return actions.matched

    return run


def zen_engine(conditions: list[dict]):
    import zen

    content = {
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "request"},
            {
                "id": "rules",
                "type": "expressionNode",
                "name": "rules",
                "content": {
                    "expressions": [{"id": f"e{i}", "key": f"r{i}", "value": zen_source(c)} for i, c in enumerate(conditions)]
                },
            },
            {"id": "out", "type": "outputNode", "name": "response"},
        ],
        "edges": [{"id": "a", "sourceId": "in", "targetId": "rules"}, {"id": "b", "sourceId": "rules", "targetId": "out"}],
    }
    decision = zen.ZenEngine().create_decision(json.dumps(content))
    keys = [f"r{i}" for i in range(len(conditions))]

    def run(facts: dict) -> list[int]:
        result = decision.evaluate(facts)["result"]
        return [i for i, key in enumerate(keys) if result[key]]

    return run


def evaluations_per_second(run, events: list[dict]) -> tuple[float, int]:
    started = time.perf_counter()
    matches = sum(len(run(facts)) for facts in events)
    return len(events) * RULES / (time.perf_counter() - started), matches


@benchmark("rules.evaluate", figures=("rules.evaluate", "rules.evaluate.zen", "rules.evaluate.business_rules"))
async def rule_evaluation(ctx: BenchContext) -> list[Figure]:
    rng = random.Random(4)
    conditions, tables = [], []
    for i in range(RULES):
        found: list[Violation] = []
        # One rule in ten is a decision table.
        tree = normalise(random_table(rng) if i % 10 == 0 else random_condition(rng), "conditions", found)
        assert not found, found
        tables.append(tree)
        conditions.append(expanded(tree))
    events = [random_facts(rng) for _ in range(ctx.size("BENCH_RULES_EVENTS", full=100_000, quick=5_000))]
    sample = events[: ctx.size("BENCH_RULES_PEER_EVENTS", full=5_000, quick=500)]

    active = in_evaluation_order([
        ActiveRule.compile(
            rule_id=f"{i:03d}", name=f"r{i}", version=1, priority=RULES - i, event_types=[], stop_processing=False,
            conditions=c, actions=[{"type": "trigger_workflow", "params": {"job": "bench"}}],
        )
        for i, c in enumerate(tables)
    ])

    def ours(facts: dict) -> list[int]:
        return [int(o.rule.rule_id) for o in evaluate(active, "order.placed", facts)]

    closures = [eval(f"lambda f: {python_source(c)}") for c in conditions]  # noqa: S307 - our own generated source

    def floor(facts: dict) -> list[int]:
        return [i for i, test in enumerate(closures) if test(facts)]

    zen_run, business_run = zen_engine(conditions), business_evaluator(conditions)
    for facts in sample[:200]:  # the same work: every engine matches the same rules
        expected = floor(facts)
        assert sorted(ours(facts)) == expected == zen_run(facts) == business_run(facts)

    rates: dict[str, list[float]] = {"ours": [], "floor": [], "zen": [], "business": []}
    for _ in range(ctx.runs):
        rates["floor"].append(evaluations_per_second(floor, events)[0])
        rates["ours"].append(evaluations_per_second(ours, events)[0])
        rates["zen"].append(evaluations_per_second(zen_run, sample)[0])
        rates["business"].append(evaluations_per_second(business_run, sample)[0])
    floor_rate = median(rates["floor"])
    vs = "hand-written Python closures"
    return [
        Figure("rules.evaluate", median(rates["ours"]), "evals/s", median(rates["ours"]) / floor_rate, vs),
        Figure("rules.evaluate.zen", median(rates["zen"]), "evals/s", median(rates["zen"]) / floor_rate, vs),
        Figure("rules.evaluate.business_rules", median(rates["business"]), "evals/s", median(rates["business"]) / floor_rate, vs),
    ]
