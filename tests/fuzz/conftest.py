import pytest

from libs.scratch_db import server_url
from tests.deploy.twin import Twin
from tests.fuzz.fleet import SERVICE_DESCRIPTORS, open_sync_channel

# Background loops off, so fingerprints show only what requests did.
QUIET = {"batch": {"LOOM_OUTBOX_DISPATCH": "false"}}


@pytest.fixture(scope="package")
def fleet():
    """The compose topology as processes, and a plain channel to each service."""
    with Twin(server_url=server_url(), extra_env=QUIET) as twin:
        channels = {s: open_sync_channel(twin.target(s)) for s in SERVICE_DESCRIPTORS}
        yield twin, channels
        for channel in channels.values():
            channel.close()
