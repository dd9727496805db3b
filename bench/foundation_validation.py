"""What checking the protos' declared constraints (buf.validate, libs/validation.py) costs per request.

The interceptor validates every request before its servicer; this times that check on
the two hottest requests, a TrackInteraction and a PlaceOrder as clients send them,
against decoding the same request from its wire bytes (which every call pays anyway).
"""

from __future__ import annotations

import time

from loom.batch.v1 import batch_pb2
from loom.tracking.v1 import tracking_pb2

from bench.harness import BenchContext, Figure, benchmark, median
from libs import validation

REQUESTS = {
    "foundation.validation.track": tracking_pb2.TrackInteractionRequest(
        interaction=tracking_pb2.Interaction(
            type=tracking_pb2.INTERACTION_TYPE_HOVER, product_id="p-123", session_id="s-4567", user_id="u-89",
            referrer="https://www.google.com/search?q=tees", page="/p/123",
            user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15",
        )
    ),
    "foundation.validation.place_order": batch_pb2.PlaceOrderRequest(
        request_id="6b1f4a2e8c1d4f7a9b2e3c4d5e6f7a8b", category="t_shirts", quantity=25,
        style=batch_pb2.StyleDetails(style_count=2, colors=["black", "white"], sizes=["M", "L"], notes="soft cotton"),
    ),
}


def _seconds_per_call(work, message, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        work(message)
    return (time.perf_counter() - started) / calls


@benchmark("foundation.validation", figures=tuple(REQUESTS))
async def validation_cost(ctx: BenchContext) -> list[Figure]:
    calls = ctx.size("BENCH_VALIDATION_CALLS", full=50_000, quick=5_000)
    figures = []
    for name, request in REQUESTS.items():
        wire, parse = request.SerializeToString(), type(request).FromString
        assert validation.violations(request) == [], name  # a valid request: the common case is timed
        checks, parses = [], []
        for _ in range(ctx.runs):
            parses.append(_seconds_per_call(parse, wire, calls))
            checks.append(_seconds_per_call(validation.violations, request, calls))
        value, baseline = median(checks), median(parses)
        figures.append(Figure(name, value * 1e6, "us/request", value / baseline, "decoding the request"))
    return figures
