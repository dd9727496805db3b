"""Running an execution's actions: calls to batch and the scheduler, e-mail over SMTP.

Actions run in order. A transient failure (UNAVAILABLE, DEADLINE_EXCEEDED, an SMTP
connection refused or a 4xx reply) is retried with exponential backoff up to the
configured attempts; any failure is recorded on the action and the next action still
runs. While it runs, the execution's lease is renewed by the process's heartbeat
(services/rules/leases.py), however long an action takes; progress is saved after
every action, only while the lease is still this process's, so an execution
interrupted by a crash is resumed elsewhere from its first unfinished action, and one
whose lease was taken over (this replica stalled past it) is left to the replica
that took it. Each call carries a request_id derived from (execution, action index),
so a resumed or retried call is idempotent at the receiving service.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

import grpc
import structlog
from google.protobuf import json_format, struct_pb2
from loom.batch.v1 import batch_pb2
from loom.scheduler.v1 import scheduler_pb2
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import causation, tracing
from libs.clients import ServiceClients
from libs.db import run_in_transaction
from libs.leases import LeaseKeeper, LeaseLost
from services.rules import metrics, store
from services.rules.domain.evaluation import action_request_id, execution_status
from services.rules.domain.guards import Link, breaker_trips
from services.rules.records import ExecutionRecord, NotificationRecord
from services.rules.settings import RulesSettings

log = structlog.get_logger("loom.rules.actions")

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
MAX_BACKOFF_SECONDS = 5.0
# Who deactivated a rule whose executions kept failing (shown as the version's author).
BREAKER_ACTOR = "system:circuit-breaker"


class ActionFailed(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _order_status(name: str) -> batch_pb2.OrderStatus.ValueType:
    return batch_pb2.OrderStatus.Value(f"ORDER_STATUS_{str(name).upper()}")


def _batch_status(name: str) -> batch_pb2.BatchStatus.ValueType:
    return batch_pb2.BatchStatus.Value(f"BATCH_STATUS_{str(name).upper()}")


class ActionRunner:
    def __init__(
        self, engine: AsyncEngine, clients: ServiceClients, settings: RulesSettings, leases: LeaseKeeper
    ) -> None:
        self._engine, self._clients, self._settings, self._leases = engine, clients, settings, leases

    async def run(self, execution: ExecutionRecord) -> ExecutionRecord:
        """Runs the unfinished actions of an execution this process leased, and records its outcome.

        Returns the execution as it stands: finished, waiting, or (its lease taken over by
        another replica) as this process left it.
        """
        execution_id = execution.execution_id
        async with self._leases.holding("executions", [execution_id]):
            try:
                return await self._run(execution)
            except LeaseLost:
                log.warning("execution taken over by another replica; leaving it", execution_id=execution_id)
                return execution

    def _check_lease(self, execution_id: str, still_ours: bool = True) -> None:
        if not still_ours or self._leases.lost("executions", execution_id):
            raise LeaseLost("executions", execution_id)

    async def _run(self, execution: ExecutionRecord) -> ExecutionRecord:
        execution_id, owner = execution.execution_id, self._leases.owner
        actions = [dict(a) for a in execution.actions]
        for action in actions:
            if action["status"] != "pending":
                continue
            self._check_lease(execution_id)
            if action["type"] == "wait":
                return await self._pause(execution, action, actions)
            await self._run_one(execution, action)
            recorded = await run_in_transaction(
                self._engine,
                lambda conn: store.record_actions(
                    conn, execution_id, actions, lease_seconds=self._settings.execution_lease_seconds, owner=owner
                ),
            )
            self._check_lease(execution_id, recorded)
        status = execution_status([a["status"] for a in actions])
        finished = await run_in_transaction(
            self._engine, lambda conn: store.finish_execution(conn, execution_id, status, actions, owner=owner)
        )
        self._check_lease(execution_id, finished is not None)
        assert finished is not None
        metrics.EXECUTIONS.labels(execution.rule_id, status).inc()
        if status == "failed":
            await run_in_transaction(self._engine, lambda conn: self._maybe_trip_breaker(conn, execution.rule_id))
        return finished

    async def _pause(
        self, execution: ExecutionRecord, action: dict[str, Any], actions: list[dict[str, Any]]
    ) -> ExecutionRecord:
        """Stores the wait and leaves the execution waiting; the wait runner resumes it when due."""
        action["status"] = "waiting"

        async def pause(conn) -> ExecutionRecord:
            conditions = action["params"].get("conditions")
            if conditions is None:  # the rule's own, as of the version this execution runs
                conditions = (await store.get_version(conn, execution.rule_id, execution.rule_version)).conditions
            await store.start_wait(
                conn, execution, action["index"], float(action["params"]["seconds"]), conditions, actions,
                owner=self._leases.owner,
            )
            return replace(execution, status="waiting", actions=actions)

        return await run_in_transaction(self._engine, pause)

    async def _maybe_trip_breaker(self, conn, rule_id: str) -> None:
        failures = self._settings.breaker_failures
        if breaker_trips(await store.latest_statuses(conn, rule_id, failures), failures):
            reason = f"circuit breaker: the last {failures} executions failed"
            log.warning("rule deactivated", rule_id=rule_id, reason=reason)
            await store.deactivate(conn, rule_id, reason, BREAKER_ACTOR)

    async def _run_one(self, execution: ExecutionRecord, action: dict[str, Any]) -> None:
        started = time.perf_counter()
        delay = self._settings.action_backoff_seconds
        while True:
            action["attempts"] += 1
            try:
                await self._perform(execution, action)
            except ActionFailed as failure:
                action["error"] = str(failure)
                if failure.transient and action["attempts"] < self._settings.action_max_attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                    continue
                action["status"] = "failed"
                log.warning(
                    "action failed", execution_id=execution.execution_id, index=action["index"], error=str(failure)
                )
            else:
                action["status"], action["error"] = "succeeded", ""
            break
        metrics.ACTIONS.labels(action["type"], action["status"]).inc()
        action["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)

    async def _perform(self, execution: ExecutionRecord, action: dict[str, Any]) -> None:
        params = action["params"]
        request_id = action_request_id(execution.execution_id, action["index"])
        # The chain that led here plus this execution: the producer puts it on the events it emits.
        link = Link(execution.rule_id, execution.execution_id, execution.event_id)
        metadata = ((causation.METADATA_KEY, json.dumps([*execution.causation, link.as_dict()])),)
        kind = action["type"]
        if kind == "send_email":
            await self._send_email(execution, action)
            return
        if kind == "notify":
            await self._notify(execution, action)
            return
        try:
            if kind == "update_status" and params["entity"] == "order":
                await self._clients.batch.UpdateOrderStatus(
                    batch_pb2.UpdateOrderStatusRequest(
                        request_id=request_id,
                        order_id=str(params["id"]),
                        status=_order_status(params["status"]),
                        reason=str(params.get("reason") or f"rule {execution.rule_id}"),
                    ),
                    metadata=metadata,
                )
            elif kind == "update_status":
                await self._clients.batch.AdvanceBatch(
                    batch_pb2.AdvanceBatchRequest(
                        request_id=request_id, batch_id=str(params["id"]), status=_batch_status(params["status"])
                    ),
                    metadata=metadata,
                )
            elif kind == "assign_supplier":
                target = {"order_id" if params["entity"] == "order" else "batch_id": str(params["id"])}
                await self._clients.batch.AssignSupplier(
                    batch_pb2.AssignSupplierRequest(
                        request_id=request_id,
                        supplier_id=str(params["supplier_id"]),
                        priority=int(params.get("priority") or 0),
                        **target,
                    ),
                    metadata=metadata,
                )
            elif kind == "trigger_workflow":
                job_params = struct_pb2.Struct()
                json_format.ParseDict(params.get("params") or {}, job_params)
                await self._clients.scheduler.RunJobNow(
                    scheduler_pb2.RunJobNowRequest(request_id=request_id, job_name=str(params["job"]), params=job_params),
                    metadata=metadata,
                )
            else:  # pragma: no cover - validation admits only the four action types
                raise ActionFailed(f"unknown action {kind!r}", transient=False)
        except grpc.aio.AioRpcError as error:
            raise ActionFailed(
                f"{error.code().name}: {error.details()}", transient=error.code() in TRANSIENT_CODES
            ) from None
        except ValueError as error:  # a rendered status that names no enum value
            raise ActionFailed(f"bad parameter: {error}", transient=False) from None

    async def _send_email(self, execution: ExecutionRecord, action: dict[str, Any]) -> None:
        params = action["params"]
        configured = bool(self._settings.smtp_host)
        notification = await self._claim_notification(
            execution,
            action,
            recipient=str(params["recipient"]),
            status="pending" if configured else "not_configured",
        )
        action["notification_id"] = notification.notification_id
        if notification.status in ("sent", "not_configured"):
            return
        error, transient = "", False
        try:
            with tracing.child_span("smtp.send", attributes={"loom.notification_id": str(notification.notification_id)}):
                await asyncio.to_thread(self._deliver, notification)
        except (OSError, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as failure:
            error, transient = f"SMTP unreachable: {failure}", True
        except smtplib.SMTPResponseException as failure:
            error, transient = f"SMTP {failure.smtp_code}: {failure.smtp_error!r}", 400 <= failure.smtp_code < 500
        except smtplib.SMTPException as failure:
            error = f"SMTP: {failure}"
        retrying = transient and action["attempts"] < self._settings.action_max_attempts
        values: dict[str, Any] = {"attempts": notification.attempts + 1, "error": error}
        if not error:
            values.update(status="sent", sent_time=func.now())
        elif not retrying:
            values["status"] = "failed"
        await run_in_transaction(
            self._engine, lambda conn: store.update_notification(conn, notification.notification_id, **values)
        )
        if error:
            raise ActionFailed(error, transient=transient)

    async def _claim_notification(
        self, execution: ExecutionRecord, action: dict[str, Any], **values: Any
    ) -> NotificationRecord:
        """The notification of this (execution, action): created once, found again on a resumed run."""
        row = {
            "execution_id": execution.execution_id,
            "action_index": action["index"],
            "rule_id": execution.rule_id,
            "event_id": execution.event_id,
            "subject": str(action["params"]["subject"]),
            "body": str(action["params"]["body"]),
            **values,
        }
        return await run_in_transaction(self._engine, lambda conn: store.claim_notification(conn, row))

    async def _notify(self, execution: ExecutionRecord, action: dict[str, Any]) -> None:
        """An inbox notification: delivered by being stored (watchers see it on their next poll)."""
        params = action["params"]
        user, role = str(params.get("user") or ""), str(params.get("role") or "")
        notification = await self._claim_notification(
            execution,
            action,
            recipient=user or f"role:{role}",
            recipient_user=user,
            recipient_role=role,
            channel="inbox",
            status="sent",
            attempts=1,
            sent_time=func.now(),
        )
        action["notification_id"] = notification.notification_id

    def _deliver(self, notification: NotificationRecord) -> None:
        message = EmailMessage()
        message["From"] = self._settings.smtp_sender
        message["To"] = notification.recipient
        message["Subject"] = notification.subject
        message["Message-ID"] = f"<{notification.notification_id}@loom.rules>"
        message.set_content(notification.body)
        with smtplib.SMTP(
            # "" (no host) connects nowhere, as None did: sending then fails as disconnected.
            self._settings.smtp_host or "", self._settings.smtp_port, timeout=self._settings.smtp_timeout_seconds
        ) as smtp:
            smtp.send_message(message)
