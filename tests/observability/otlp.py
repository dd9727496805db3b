"""An OTLP/gRPC trace receiver on loopback: the collector's own service, run by the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each link


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    async def Export(self, request, context):  # noqa: N802 - the collector's method name
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


@dataclass
class Collector:
    endpoint: str
    _receiver: _Receiver

    @property
    def spans(self) -> list[ReceivedSpan]:
        return list(self._receiver.spans)

    async def wait_for(self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while not found(self.spans):
            if time.monotonic() > deadline:
                names = sorted({(s.service, s.name) for s in self.spans})
                raise TimeoutError(f"spans not received within {timeout}s; have {names}")
            await asyncio.sleep(0.1)
        return self.spans


@asynccontextmanager
async def otlp_collector() -> AsyncIterator[Collector]:
    receiver = _Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Collector(f"http://127.0.0.1:{port}", receiver)
    finally:
        await server.stop(0)


async def _serve_forever(port_file: str) -> None:
    """Writes its endpoint to port_file, then the number of spans received to port_file.count."""
    async with otlp_collector() as collector:
        with open(port_file, "w") as out:
            out.write(collector.endpoint)
        while True:
            await asyncio.sleep(0.5)
            with open(f"{port_file}.count", "w") as out:
                out.write(str(len(collector._receiver.spans)))


if __name__ == "__main__":
    # A collector in a process of its own (the benchmark's load generator must not pay for it).
    import sys

    asyncio.run(_serve_forever(sys.argv[1]))
