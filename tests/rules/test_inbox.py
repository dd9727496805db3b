"""Notifications people can watch: addressed to a user or a role, read per reader, streamed live."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import jwt
import pytest
from loom.rules.v1 import rules_pb2

from tests.gateway.support import gateway_settings, run_gateway
from tests.rules.conftest import ADMIN, action, create, event, rule_message
from tests.support import auth, token

ANA = auth("buyer", f"buyer:ana-{uuid.uuid4().hex[:6]}")
BEN = auth("buyer", f"buyer:ben-{uuid.uuid4().hex[:6]}")
SUPPLIER = auth("supplier", f"supplier:{uuid.uuid4().hex[:6]}")


def subject(metadata) -> str:
    bearer = dict(metadata)["authorization"].removeprefix("Bearer ")
    return jwt.decode(bearer, options={"verify_signature": False})["sub"]


async def inbox(rules, metadata, **fields) -> rules_pb2.ListInboxNotificationsResponse:
    return await rules.ListInboxNotifications(rules_pb2.ListInboxNotificationsRequest(**fields), metadata=metadata)


async def notify(rules, **params) -> None:
    """One notification: a rule that fires on one order only, and that order's event."""
    order = uuid.uuid4().hex[:8]
    notifying = action("notify", subject="Order {{order.id}}", body="placed", **params)
    await create(rules, rule_message(conditions={"order_id": order}, actions=[notifying]))
    await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"id": order})), metadata=ADMIN)


async def test_a_user_sees_their_own_and_their_roles_notifications_only(rules):
    await notify(rules, user=subject(ANA))
    await notify(rules, role="buyer")
    ana, ben, supplier = await inbox(rules, ANA), await inbox(rules, BEN), await inbox(rules, SUPPLIER)
    assert (len(ana.notifications), ana.unread_count) == (2, 2)
    assert [n.recipient_role for n in ben.notifications] == ["buyer"]
    assert [n.recipient_role for n in supplier.notifications if n.recipient_role == "buyer"] == []
    assert all(n.channel == "inbox" and not n.HasField("read_time") for n in ana.notifications)


async def test_read_state_is_per_reader_and_mark_all_read_clears_the_count(rules):
    await notify(rules, role="buyer")
    await notify(rules, user=subject(ANA))
    first = (await inbox(rules, ANA)).notifications[0]
    read = await rules.MarkNotificationRead(
        rules_pb2.MarkNotificationReadRequest(request_id=str(uuid.uuid4()), notification_id=first.notification_id), metadata=ANA
    )
    assert read.notification.HasField("read_time") and read.unread_count == (await inbox(rules, ANA)).unread_count
    ben_before = (await inbox(rules, BEN)).unread_count
    everything = await rules.MarkAllNotificationsRead(
        rules_pb2.MarkAllNotificationsReadRequest(request_id=str(uuid.uuid4())), metadata=ANA
    )
    assert everything.unread_count == 0 and (await inbox(rules, ANA, unread_only=True)).notifications == []
    assert (await inbox(rules, BEN)).unread_count == ben_before  # Ana's reading is hers


async def test_a_notification_the_caller_may_not_see_cannot_be_marked(rules):
    await notify(rules, user=subject(ANA))
    mine = [n for n in (await inbox(rules, ANA)).notifications if n.recipient_user][0]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await rules.MarkNotificationRead(
            rules_pb2.MarkNotificationReadRequest(request_id=str(uuid.uuid4()), notification_id=mine.notification_id),
            metadata=BEN,
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_streams_the_count_then_each_new_notification_for_the_caller_only(rules):
    watcher = auth("supplier", f"supplier:{uuid.uuid4().hex[:6]}")
    stream = rules.WatchNotifications(rules_pb2.WatchNotificationsRequest(), metadata=watcher)
    first = await asyncio.wait_for(stream.read(), 10)
    assert not first.HasField("notification")
    await notify(rules, user=subject(ANA))  # not for the watcher
    await notify(rules, user=subject(watcher))
    update = await asyncio.wait_for(stream.read(), 10)
    assert update.notification.recipient_user == subject(watcher) and update.unread_count == first.unread_count + 1
    await rules.MarkAllNotificationsRead(
        rules_pb2.MarkAllNotificationsReadRequest(request_id=str(uuid.uuid4())), metadata=watcher
    )
    cleared = await asyncio.wait_for(stream.read(), 10)
    assert not cleared.HasField("notification") and cleared.unread_count == 0
    stream.cancel()


async def test_a_notify_action_needs_exactly_one_addressee(rules):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(rules, rule_message(actions=[action("notify", subject="s", body="b", user="u", role="buyer")]))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_gateway_serves_the_watch_as_server_sent_events(rules, rules_service):
    reader = f"supplier:sse-{uuid.uuid4().hex[:6]}"
    targets = dict.fromkeys(("batch", "rules", "tracking", "scheduler"), rules_service.target)
    async with run_gateway(gateway_settings(targets)) as gateway, gateway.client() as http:
        headers = {"authorization": f"Bearer {token('supplier', reader)}"}
        async with http.stream("GET", "/v1/inbox/notifications:watch", headers=headers, timeout=20) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            lines = reply.aiter_lines()

            async def next_data() -> dict:
                async for line in lines:
                    if line.startswith("data: "):
                        return json.loads(line.removeprefix("data: "))
                raise AssertionError("stream ended")

            assert "notification" not in await asyncio.wait_for(next_data(), 10)
            await notify(rules, user=reader)
            pushed = await asyncio.wait_for(next_data(), 10)
    assert pushed["notification"]["recipientUser"] == reader and pushed["unreadCount"] == 1
