"""The one server interceptor every Loom service runs.

Per call it: takes or makes the request id, authenticates the bearer token and
enforces the method's declared access rule, maps domain errors to status codes
with details (and anything unexpected to a bare INTERNAL), records Prometheus
metrics and writes exactly one JSON log line; for state-changing methods it opens
the call's audit record and writes it after a refusal (`libs.audit`). Doing this in
one wrapper keeps a single measured duration and a single final status per call.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable

import grpc
import psycopg
import structlog
from google.protobuf.message import Message
from prometheus_client import Counter, Histogram
from sqlalchemy import exc as sa_exc

from libs import audit, causation, validation, wellformed
from libs.auth import ANONYMOUS, Authenticator, IdentityProvider, access_rule, authorize, set_current_caller
from libs.client_ip import caller_ip
from libs.db import is_transient
from libs.errors import DomainError, FieldViolation, InvalidArgument, Unavailable, grpc_status_of, status_code_of
from libs.logs import Redactor, peer_ip
from libs.tls import peer_identity

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128

HANDLED = Counter(
    "loom_grpc_server_handled_total", "RPCs completed, by method and status code.", ["grpc_method", "grpc_code"]
)
LATENCY = Histogram(
    "loom_grpc_server_handling_seconds",
    "Time from receiving an RPC to its final status.",
    ["grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_log = structlog.get_logger("loom.rpc")


class _Outcome:
    __slots__ = ("code", "error", "peer")

    def __init__(self, peer: str) -> None:
        self.code = grpc.StatusCode.OK
        self.error: str | None = None
        # Read while the call is alive: asking a call that ended (a deadline passed while
        # it waited) for its peer can crash grpc's Cython layer.
        self.peer = peer


def _require_wellformed(request, declared: bool = True) -> None:
    """Enum numbers no proto declares and out-of-range timestamps are bad input, not INTERNAL;
    so is anything that breaks the constraints the proto declares (`buf.validate`). Every
    violation is reported at once, each field once."""
    if not isinstance(request, Message):
        return
    found: dict[str, FieldViolation] = {}
    for violation in (*wellformed.violations(request), *(validation.violations(request) if declared else ())):
        found.setdefault(violation.field, violation)
    if found:
        raise InvalidArgument(found.values())


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        jwt_key: str,
        jwt_issuer: str,
        redactor: Redactor,
        identity_provider: IdentityProvider | None = None,
        validate: bool = True,
        auditor: audit.Auditor | None = None,
    ) -> None:
        """validate=False skips the protos' declared constraints (buf.validate): only for
        stand-in backends whose tests decide every answer themselves. The auditor, once
        its engine is attached, records the calls of state-changing methods."""
        self._validate = validate
        self._auditor = auditor or audit.Auditor(None)
        self._authenticator = Authenticator(jwt_key, issuer=jwt_issuer, provider=identity_provider)
        self._redactor = redactor

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        rule = access_rule(method)
        quiet = rule is None  # health checks and reflection: logged at debug level only
        auditing = self._auditor.active and audit.audited(rule)

        def unary(behavior: Callable):
            async def call(request, context):
                outcome, started = _Outcome(context.peer() or ""), time.perf_counter()
                record = self._auditor.begin(method, request) if auditing else None
                try:
                    await self._enter(context, method, rule, record)
                    _require_wellformed(request, self._validate)
                    return await behavior(request, context)
                except BaseException as error:  # noqa: BLE001 - every exit is classified and re-raised
                    await self._fail(context, outcome, error, record)
                finally:
                    code = self._finish(context, method, outcome, started, quiet)
                    if record is not None:  # accepted without a transaction writing it, or aborted by the servicer
                        await self._auditor.finish(record, code.name)

            return call

        def streaming(behavior: Callable):
            async def call(request, context):
                outcome, started = _Outcome(context.peer() or ""), time.perf_counter()
                try:
                    await self._enter(context, method, rule)
                    _require_wellformed(request, self._validate)
                    produced = behavior(request, context)
                    if inspect.isasyncgen(produced):
                        async for item in produced:
                            yield item
                    else:
                        await produced
                except BaseException as error:  # noqa: BLE001 - every exit is classified and re-raised
                    await self._fail(context, outcome, error)
                finally:
                    self._finish(context, method, outcome, started, quiet)

            return call

        return _rewrap(handler, unary, streaming)

    async def _enter(self, context, method: str, rule, record: audit.Pending | None = None) -> None:
        """Binds the call's request id and caller (to its audit record too, when audited),
        then enforces the access rule."""
        # Each RPC runs in its own asyncio task, so what is bound here dies with the call.
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get(REQUEST_ID_HEADER) or "")[:MAX_REQUEST_ID_LENGTH] or uuid.uuid4().hex
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        if record is not None:
            # Refused before the token is understood: the peer's address, no subject.
            record.identify(request_id, ANONYMOUS, self._redactor.hash_ip(caller_ip(context)))
        caller = await self._authenticator.identify(metadata, peer_identity(context))
        set_current_caller(caller)
        structlog.contextvars.bind_contextvars(role=caller.role_name, subject=caller.subject or None)
        if record is not None:
            record.identify(request_id, caller, self._redactor.hash_ip(caller_ip(context)))
        authorize(caller, rule)
        if caller.service:  # only Loom services say which rule executions caused a call
            causation.enter(metadata)

    async def _fail(self, context, outcome: _Outcome, error: BaseException, record: audit.Pending | None = None) -> None:
        """Classifies the call's failure and ends the call with it, queueing a refused call's
        audit record (written after the call, on a short transaction of its own)."""
        request_id = dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER)
        if _database_unavailable(error):
            # The database went away (restart, failover) and the transaction's own
            # retries ran out: the client may retry, which idempotency keys make safe.
            _log.warning("database unavailable", error=type(getattr(error, "orig", None) or error).__name__)
            error = Unavailable("the database is briefly unavailable; retry", reason="DATABASE_UNAVAILABLE")
        if isinstance(error, DomainError):
            # Which status and details a domain error becomes: the table in libs.errors.
            outcome.code, outcome.error = status_code_of(error), error.message
            status = grpc_status_of(error)
            trailing = tuple(status.trailing_metadata) + (((REQUEST_ID_HEADER, request_id),) if request_id else ())
            if record is not None:
                self._auditor.record_refusal(record, outcome.code.name)
            await context.abort(status.code, status.details, trailing_metadata=trailing)
        if isinstance(error, grpc.aio.AbortError | grpc.aio.BaseError):
            outcome.code = _code(context) or grpc.StatusCode.UNKNOWN
            raise error
        if not isinstance(error, Exception):  # cancellation, generator close
            outcome.code = grpc.StatusCode.CANCELLED
            raise error
        outcome.code, outcome.error = grpc.StatusCode.INTERNAL, type(error).__name__
        _log.error("unhandled error", exc_info=error)
        if record is not None:
            self._auditor.record_refusal(record, outcome.code.name)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; quote the request id to the operators")

    def _finish(self, context, method: str, outcome: _Outcome, started: float, quiet: bool) -> grpc.StatusCode:
        elapsed = time.perf_counter() - started
        code = outcome.code if outcome.code != grpc.StatusCode.OK else (_code(context) or grpc.StatusCode.OK)
        HANDLED.labels(method, code.name).inc()
        LATENCY.labels(method).observe(elapsed)
        log = _log.debug if quiet else _log.info
        log(
            "rpc",
            code=code.name,
            duration_ms=round(elapsed * 1000, 3),
            peer=self._redactor.hash_ip(peer_ip(outcome.peer)) if outcome.peer else None,
            error=outcome.error,
        )
        return code


def _database_unavailable(error: BaseException) -> bool:
    """The database (or the way to it) failed in a way a later attempt may not meet:
    dropped or refused connections, restarts, and a pool with no connection to lend."""
    if isinstance(error, DomainError):
        return False
    return isinstance(error, sa_exc.TimeoutError) or (
        isinstance(error, sa_exc.DBAPIError | psycopg.Error | ConnectionError) and is_transient(error)
    )


def _code(context) -> grpc.StatusCode | None:
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), None)


def _rewrap(handler: grpc.RpcMethodHandler, unary: Callable, streaming: Callable) -> grpc.RpcMethodHandler:
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, unary),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, streaming),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, unary),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, streaming),
    )
    for behavior, make, wrap in kinds:
        if behavior is not None:
            return make(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
