"""OpenTelemetry tracing, switched on by the standard OTLP variables and free when off.

`configure(service)` runs once per process, before any server, channel or connection is
made. With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set it installs a
tracer provider that batches spans to that collector over OTLP/gRPC, and instruments:

- grpc.aio servers and channels (the instrumentors wrap `grpc.aio.server` and the channel
  factories, so the bootstrap, `libs.clients` and the gateway's backends need no change;
  the server span is the outermost interceptor, so Loom's own interceptor, its log line
  and the handler all run inside it and W3C `traceparent` travels in gRPC metadata);
- psycopg connections: one span per SQL statement, whether SQLAlchemy or a hot path's
  direct driver call sent it (but for the connection pool's liveness ping, `;` before
  every checkout: it goes to the driver untraced, and was a third of a simple call's spans);
- httpx, where a service calls out over HTTP.

The gateway wraps its ASGI app in `asgi_middleware`, which accepts `traceparent` from web
clients. Unset, nothing is imported beyond this module, nothing is wrapped, and the log
processor is not installed: the RPC path is byte-for-byte today's (the
`foundation.interceptor` benchmark shows it).

What a traced call costs, and how to sample: docs/observability.md ("What tracing costs"),
measured by the `foundation.interceptor.traced` benchmark.

Work that happens later in another process (an outbox event's rule execution, a scheduler
run) starts its own span *linked* to the context it carries (`link_to`), because a parent
that ended minutes ago in another process would make a misleading tree.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACEPARENT = "traceparent"

_active = False


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """An OTLP endpoint is configured and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def active() -> bool:
    return _active


def configure(service: str) -> bool:
    """Installs tracing for this process when wanted; True when it did. Idempotent."""
    global _active
    if _active or not wanted():
        return _active
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"loom-{service}"
    resource = _hashed_once(Resource.create({"service.name": name, "service.namespace": "loom"}))
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    # The sampler the standard variables ask for (OTEL_TRACES_SAMPLER, ..._ARG), as the SDK reads them.
    provider = TracerProvider(resource=resource, sampler=_get_from_env_or_default())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # Health checks and reflection are polled constantly and say nothing about a request.
    GrpcAioInstrumentorServer(filter_=_loom_methods_only).instrument()
    GrpcAioInstrumentorClient(filter_=_loom_methods_only).instrument()
    HTTPXClientInstrumentor().instrument()
    # At the driver, not in SQLAlchemy: the hot paths (group commits, ingestion) run
    # statements on the psycopg connection directly, and each statement is one span either way.
    _use_lean_cursor_tracer()
    PsycopgInstrumentor().instrument(enable_commenter=False)
    atexit.register(provider.shutdown)  # flush what the batch processor still holds
    _active = True
    return True


def _loom_methods_only(details: Any) -> bool:
    """Loom's own RPCs, not health checks or reflection. The instrumentation's
    `filters.service_prefix("loom.")` says the same but costs about a fifth of a server
    span's whole overhead (it tests the call details against several types first)."""
    method = details.method
    return (method.decode() if isinstance(method, bytes) else method).startswith("/loom.")


POOL_PING = ";"  # what SQLAlchemy's pool_pre_ping sends on psycopg before lending a connection
_OPERATION_NAMES_KEPT = 512  # distinct statement texts whose span names are remembered


def _use_lean_cursor_tracer() -> None:
    """Has the psycopg instrumentation (it builds one per connection from its module's
    `CursorTracer`, hence the assignment) send the pool's liveness ping untraced and name a
    statement's span once per statement text.

    The ping is no statement of the request, yet it ran before every transaction and made a
    third of a simple call's spans; a sampler that drops it still pays for the span name,
    a non-recording span and its context switch. The name (the first word after any leading
    comment) is a regex and a split of the whole statement each time, though a service sends
    the same few hundred texts; a text seen first past the cap is named as before, uncached."""
    from opentelemetry.instrumentation import psycopg as instrumentation

    names: dict[str, str] = {}

    class CursorTracer(instrumentation.CursorTracer):
        def get_operation_name(self, cursor: Any, args: Any) -> str:
            statement = args[0] if args else None
            if type(statement) is not str:
                return super().get_operation_name(cursor, args)
            name = names.get(statement)
            if name is None:
                name = super().get_operation_name(cursor, args)
                if len(names) < _OPERATION_NAMES_KEPT:
                    names[statement] = name
            return name

        def traced_execution(self, cursor: Any, query_method: Any, *args: Any, **kwargs: Any) -> Any:
            if args and args[0] == POOL_PING:
                return query_method(*args, **kwargs)
            return super().traced_execution(cursor, query_method, *args, **kwargs)

        async def traced_execution_async(self, cursor: Any, query_method: Any, *args: Any, **kwargs: Any) -> Any:
            if args and args[0] == POOL_PING:
                return await query_method(*args, **kwargs)
            return await super().traced_execution_async(cursor, query_method, *args, **kwargs)

    instrumentation.CursorTracer = CursorTracer  # type: ignore[misc]


def _hashed_once(resource: Any) -> Any:
    """`resource`, hashing as it does but computing the hash once: the OTLP encoder groups
    every exported span by its resource in a dict, and `Resource.__hash__` serialises all
    the resource's attributes to JSON each time (a tenth of the export thread's time)."""
    from opentelemetry.sdk.resources import Resource

    class HashedOnce(Resource):
        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    return HashedOnce(resource.attributes, resource.schema_url)


def asgi_middleware(app: Any) -> Any:
    """The gateway's app inside a span per HTTP request (W3C traceparent honoured)."""
    if not _active:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, excluded_urls="healthz,metrics")


def current_traceparent() -> str:
    """The W3C traceparent of the span in progress, or "" when there is none."""
    if not _active:
        return ""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT, "")


@contextmanager
def span(
    name: str, *, link_to: str | Sequence[str] = "", attributes: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """A new root span for background work, linked to the traceparent(s) it was caused by."""
    if not _active:
        yield
        return
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract

    links = []
    for traceparent in [link_to] if isinstance(link_to, str) else link_to:
        caused_by = trace.get_current_span(extract({TRACEPARENT: traceparent})).get_span_context()
        if caused_by.is_valid:
            links.append(trace.Link(caused_by))
    tracer = trace.get_tracer("loom")
    with tracer.start_as_current_span(name, context=context.Context(), links=links, attributes=dict(attributes or {})):
        yield


@contextmanager
def child_span(name: str, *, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """A span inside the current one, for a step no instrumentation sees (an SMTP send)."""
    if not _active:
        yield
        return
    from opentelemetry import trace

    with trace.get_tracer("loom").start_as_current_span(name, attributes=dict(attributes or {})):
        yield


def add_trace_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span id next to the request id."""
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict
