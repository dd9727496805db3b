"""libs.causation: only well-formed chains are kept, in one compact form."""

from __future__ import annotations

import json

import pytest

from libs.causation import MAX_LINKS, canonical

LINK = {"rule_id": "r", "execution_id": "x", "event_id": "e"}


def test_a_chain_is_kept_compact_with_only_the_link_fields():
    assert canonical(json.dumps([{**LINK, "extra": 1}])) == '[{"rule_id":"r","execution_id":"x","event_id":"e"}]'


@pytest.mark.parametrize(
    "value",
    ["", "not json", "{}", "[]", "[1]", json.dumps([{**LINK, "rule_id": 7}]), json.dumps([{**LINK, "event_id": ""}]),
     json.dumps([{**LINK, "event_id": "x" * 129}]), json.dumps([{**LINK, "event_id": "a\nb"}])],
)
def test_a_malformed_chain_is_dropped(value):
    assert canonical(value) == ""


def test_a_long_chain_keeps_its_newest_links():
    chain = [{**LINK, "execution_id": str(i)} for i in range(MAX_LINKS + 5)]
    kept = json.loads(canonical(json.dumps(chain)))
    assert [link["execution_id"] for link in kept] == [str(i) for i in range(5, MAX_LINKS + 5)]
