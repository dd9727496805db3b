import uuid

import psycopg
import pytest
from google.protobuf import json_format, struct_pb2
from loom.common.v1 import event_pb2
from loom.rules.v1 import rules_pb2

from libs.scratch_db import plain_url

# `own_database` (the end-to-end test's own database, as the batch tests have) is a fixture, offered here.
from tests.batch.conftest import own_database  # noqa: F401
from tests.rules.peers import Peers, SmtpServer
from tests.support import auth, serve, stub_for

ADMIN = auth("admin", "admin:ada")
SERVICE = auth("service", "service:batch")


@pytest.fixture(scope="module")
async def peers():
    running = Peers()
    await running.server.start()
    yield running
    await running.server.stop(0)


@pytest.fixture(scope="module")
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
async def rules_service(database_url, peers, smtp):
    async with serve(
        "rules",
        database_url,
        batch_target=peers.target,
        scheduler_target=peers.target,
        tracking_target=peers.target,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        action_backoff_seconds=0.01,
        action_max_attempts=3,
        worker_poll_seconds=0.2,
        client_deadline_seconds=2.0,
    ) as running:
        yield running
    # An event this module's worker had leased when it stopped would be taken over by the next
    # module's worker a lease later (seconds) and meet that module's rules: this module's are done.
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        conn.execute("UPDATE rules.events SET evaluated_time = now(), lease_until = NULL WHERE evaluated_time IS NULL")


@pytest.fixture
async def rules(rules_service, peers, smtp):
    """A stub to the rules service; every rule made in a test is deleted after it."""
    peers.reset()
    smtp.sink.messages.clear()
    async with stub_for("rules", rules_service.target) as stub:
        yield stub
        listed = await stub.ListRules(rules_pb2.ListRulesRequest(page_size=1000), metadata=ADMIN)
        for rule in listed.rules:
            await stub.DeleteRule(rules_pb2.DeleteRuleRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id), metadata=ADMIN)


def value(python) -> struct_pb2.Value:
    return json_format.ParseDict(python, struct_pb2.Value())


def action(kind: str, **params) -> rules_pb2.Action:
    return rules_pb2.Action(
        type=rules_pb2.ActionType.Value(f"ACTION_TYPE_{kind.upper()}"), params=json_format.ParseDict(params, struct_pb2.Struct())
    )


def rule_message(
    name: str = "rule", *, conditions=None, actions=(), priority: int = 0, event_types=(), **fields
) -> rules_pb2.Rule:
    return rules_pb2.Rule(
        name=name,
        type=fields.pop("type", rules_pb2.RULE_TYPE_NOTIFICATION),
        active=fields.pop("active", True),
        priority=priority,
        event_types=list(event_types),
        conditions=value(conditions if conditions is not None else {}),
        actions=list(actions),
        **fields,
    )


async def create(stub, rule: rules_pb2.Rule) -> rules_pb2.Rule:
    reply = await stub.CreateRule(rules_pb2.CreateRuleRequest(request_id=str(uuid.uuid4()), rule=rule), metadata=ADMIN)
    return reply.rule


def event(event_type: str = "batch.confirmed", **data) -> event_pb2.Event:
    message = event_pb2.Event(event_id=str(uuid.uuid4()), type=event_type, source="batch")
    message.occurred_time.GetCurrentTime()
    json_format.ParseDict(data, message.data)
    return message
