"""Property-based fuzzing of every RPC's request message at the gRPC layer.

Every service runs as its own process (the compose topology, tests/deploy/twin.py);
requests are generated from the descriptors (tests/fuzz/messages.py) and sent as
a caller the method admits. Properties: the answer is never INTERNAL/UNKNOWN, and
a rejected request leaves every row of the service's schema as it was.
"""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings

from tests.fuzz.fleet import BACKGROUND, all_methods, fingerprint, invoke
from tests.fuzz.messages import message_strategy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXAMPLES = int(os.environ.get("LOOM_FUZZ_EXAMPLES", "20"))
# Deterministic in `make test` (the same examples every run); LOOM_FUZZ_RANDOM=1 explores afresh.
DERANDOMIZE = not os.environ.get("LOOM_FUZZ_RANDOM")
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


@pytest.mark.parametrize(("service", "method"), all_methods(), ids=[f"{s}.{m.name}" for s, m in all_methods()])
def test_fuzzed_requests_never_fail_internally_and_rejected_ones_change_no_row(fleet, service, method):
    twin, channels = fleet
    channel = channels[service]
    ignored = BACKGROUND.get(service)
    probe = invoke(channel, method, GetMessageClass(method.input_type)())
    if probe.code == grpc.StatusCode.UNIMPLEMENTED:
        pytest.skip(f"{service}.{method.name} is not implemented yet")

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(request=message_strategy(method.input_type))
    def check(request):
        before = fingerprint(twin.admin_url, service, ignored)
        outcome = invoke(channel, method, request)
        assert outcome.code not in NEVER, f"{outcome.code.name}: {outcome.details}\nrequest: {request}"
        if outcome.code != grpc.StatusCode.OK:
            after = fingerprint(twin.admin_url, service, ignored)
            changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
            assert not changed, f"rejected with {outcome.code.name} yet changed {changed}\nrequest: {request}"

    check()
