"""What the rule-history browser tests share: rules and stored events made over the gateway's
public API, and the API's own answer to a replay, to hold the pages to."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from tests.console.support import Suite

EMAIL = {
    "type": "ACTION_TYPE_SEND_EMAIL",
    "params": {"recipient": "ops@loom.example", "subject": "Order {{order.id}}", "body": "placed"},
}


def big_orders(tag: str, more_than: int) -> dict:
    """Orders of one test's own category, above a quantity: no other test's events match."""
    return {"all": [
        {"fact": "order.category", "operator": "equal", "value": tag},
        {"fact": "order.quantity", "operator": "greater_than", "value": more_than},
    ]}


async def create_rule(suite: Suite, name: str, **fields) -> dict:
    rule = {
        "name": name, "type": "RULE_TYPE_NOTIFICATION", "active": True, "priority": 10,
        "eventTypes": ["order.placed"], "actions": [EMAIL], **fields,
    }
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/rules", json={"requestId": str(uuid.uuid4()), "rule": rule})
    assert reply.status_code == 200, reply.text
    return reply.json()["rule"]


async def tagged_rule(suite: Suite, what: str, more_than: int = 10) -> tuple[str, dict]:
    """A rule on the order events of a category of its own (the tag), above a quantity."""
    tag = f"{what}_{uuid.uuid4().hex[:8]}"
    return tag, await create_rule(suite, f"{what} {tag}", conditions=big_orders(tag, more_than))


async def update_rule(suite: Suite, rule_id: str, **fields) -> dict:
    async with suite.http("admin") as admin:
        reply = await admin.patch(
            f"/v1/rules/{rule_id}",
            params={"requestId": str(uuid.uuid4()), "updateMask": ",".join(fields)},
            json={"ruleId": rule_id, **fields},
        )
    assert reply.status_code == 200, reply.text
    return reply.json()["rule"]


async def run_live(suite: Suite, tag: str, quantities: list[int]) -> list[dict]:
    """Order events of the last few hours, stored and run through the live rules (ExecuteRules)."""
    now = datetime.now(UTC)
    events = [
        {
            "eventId": str(uuid.uuid4()), "type": "order.placed", "source": "batch",
            "occurredTime": (now - timedelta(hours=i + 1)).isoformat(),
            "data": {"order": {"id": f"o-{uuid.uuid4().hex[:8]}", "category": tag, "quantity": quantity}},
        }
        for i, quantity in enumerate(quantities)
    ]
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/rules:execute", json={"requestId": str(uuid.uuid4()), "events": events})
    assert reply.status_code == 200, reply.text
    return events


async def replay_over_api(suite: Suite, body: dict) -> tuple[list[dict], dict]:
    """The results and the summary of POST /v1/rules:replay, read from its event stream."""
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/rules:replay", json=body)
    assert reply.status_code == 200, reply.text
    results, summaries = [], []
    for block in reply.text.split("\n\n"):
        data = [line.removeprefix("data: ") for line in block.splitlines() if line.startswith("data: ")]
        if not data or block.startswith("event: end"):
            continue
        message = json.loads("\n".join(data))
        assert "code" not in message, message
        results.extend(message.get("results", []))
        if message.get("summary"):
            summaries.append(message["summary"])
    (summary,) = summaries
    return results, summary


async def dry_run_matches(suite: Suite, rule_id: str, data: dict, event_type: str = "order.placed") -> bool:
    event = {"eventId": str(uuid.uuid4()), "type": event_type, "source": "batch", "data": data}
    async with suite.http("admin") as admin:
        reply = await admin.post("/v1/events:evaluate", json={"event": event, "dryRun": True})
    assert reply.status_code == 200, reply.text
    (trace,) = [r for r in reply.json()["rules"] if r["ruleId"] == rule_id]
    return trace["matched"]


async def notify(suite: Suite, **recipient) -> str:
    """One inbox notification to that user or role, by a rule fired on an event of its own; its subject."""
    tag = f"bell_{uuid.uuid4().hex[:8]}"
    subject = f"Order {{{{order.id}}}} of {tag}"
    action = {"type": "ACTION_TYPE_NOTIFY", "params": {**recipient, "subject": subject, "body": "{{order.quantity}} pieces"}}
    only_its_own = {"all": [{"fact": "order.category", "operator": "equal", "value": tag}]}
    await create_rule(suite, f"Notify {tag}", conditions=only_its_own, actions=[action])
    (event,) = await run_live(suite, tag, [12])
    return f"Order {event['data']['order']['id']} of {tag}"
