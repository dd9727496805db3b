"""Pure tracking decisions: validation, enrichment rules, in-batch de-duplication, limits."""

from datetime import UTC, datetime, timedelta

import pytest

from services.tracking import domain
from services.tracking.domain import Event, IngestLimits

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LIMITS = IngestLimits(dedup_window=timedelta(minutes=30), max_age=timedelta(days=7), max_skew=timedelta(minutes=5))


def violations(**overrides):
    values = dict(
        type=1, product_id="p-1", session_id="s-1", user_id="", anonymous_id="", client_event_id="",
        occurred_at=None, referrer="", user_agent="", page="", now=NOW, limits=LIMITS,
    )
    return {v.field for v in domain.interaction_violations(**{**values, **overrides})}


def test_a_complete_interaction_has_no_violations():
    assert violations() == set()


def test_unknown_type_missing_session_and_malformed_ids_are_each_named():
    assert violations(type=0, session_id="", product_id="has space", client_event_id="x" * 200) == {
        "type", "session_id", "product_id", "client_event_id",
    }


def test_occurred_time_must_be_neither_far_future_nor_too_old():
    assert violations(occurred_at=NOW + timedelta(minutes=6)) == {"occurred_time"}
    assert violations(occurred_at=NOW - timedelta(days=8)) == {"occurred_time"}
    assert violations(occurred_at=NOW + timedelta(minutes=4)) == set()


def test_oversized_free_text_fields_are_rejected():
    assert violations(referrer="r" * 3000, page="p" * 3000, user_agent="u" * 2000) == {"referrer", "page", "user_agent"}


def test_referrer_host_is_the_url_host_only():
    assert domain.referrer_host("https://www.google.com/search?q=x") == "www.google.com"
    assert domain.referrer_host("news.ycombinator.com/item") == "news.ycombinator.com"
    assert domain.referrer_host("") is None


def test_device_class_from_user_agent():
    assert domain.device_class("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile", "iPhone", "iOS") == "mobile"
    assert domain.device_class("Mozilla/5.0 (iPad; CPU OS 17_0)", "iPad", "iOS") == "tablet"
    assert domain.device_class("Mozilla/5.0 (Linux; Android 14; SM-X700)", "Samsung", "Android") == "tablet"
    assert domain.device_class("Googlebot/2.1", "Spider", "Other") == "bot"
    assert domain.device_class("Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0", "Other", "Linux") == "desktop"
    assert domain.device_class("", "", "") == "unknown"


def test_ip_hash_depends_on_salt_and_hides_the_address():
    one, other = domain.ip_hash(b"salt-a", "203.0.113.9"), domain.ip_hash(b"salt-b", "203.0.113.9")
    assert one != other and len(one) == 16 and b"203.0.113.9" not in one
    assert one == domain.ip_hash(b"salt-a", "203.0.113.9")


def test_repeated_client_ids_in_a_batch_point_at_their_first_use():
    assert domain.first_claims(["a", None, "b", "a", "a", None]) == {3: 0, 4: 0}


def _event(minute: int, product: str = "p") -> Event:
    return Event(
        id=minute, occurred_at=NOW + timedelta(minutes=minute), type=1, product_id=product, session_id="s",
        user_id=None, anonymous_id=None, client_event_id=None, page=None, referrer_host=None, country=None,
        browser=None, os=None, device="unknown", ip_hash=b"",
    )


def test_session_rounds_group_events_within_the_window_behind_one_representative():
    events = [_event(10), _event(0), _event(20), _event(5, "q"), _event(45)]
    rounds = domain.session_rounds(events, range(len(events)), timedelta(minutes=30))
    assert rounds == [{1: [0, 2], 3: []}, {4: []}]


def test_share_decision_allows_below_the_limit_and_otherwise_waits_for_the_oldest_to_expire():
    assert domain.share_decision(9, NOW - timedelta(minutes=50), NOW, 10) is None
    assert domain.share_decision(10, NOW - timedelta(minutes=50), NOW, 10) == 600.0
    assert domain.share_decision(10, NOW - timedelta(minutes=59, seconds=59.5), NOW, 10) == 1.0


def test_post_fields_are_checked_only_where_asked():
    assert {v.field for v in domain.post_violations(post_id="", title="", url="ftp://x", check={"title", "url"})} == {
        "post.title", "post.url",
    }
    assert domain.post_violations(post_id="", title="", url="", check=set()) == []


def test_share_locks_before_and_after_the_midnight_salt_rotation_overlap():
    def hash_on(day: str) -> bytes:
        return domain.ip_hash(day.encode(), "203.0.113.9")

    before_midnight = domain.share_lock_keys(hash_on("D"), hash_on("D-1"))
    after_midnight = domain.share_lock_keys(hash_on("D+1"), hash_on("D"))
    assert set(before_midnight) & set(after_midnight)
    assert before_midnight == sorted(before_midnight) and after_midnight == sorted(after_midnight)


def test_a_batch_of_ids_is_acceptable_when_each_is_empty_or_well_formed():
    assert domain.ids_acceptable(["p-1", "", "user@example.com", "a" * 128, "x:y/z+=."])
    assert domain.ids_acceptable([])


@pytest.mark.parametrize("bad", ["two\nlines", "has space", "-leading", "a" * 129, "é", "tab\t"])
def test_one_malformed_id_makes_the_batch_unacceptable(bad):
    assert not domain.ids_acceptable(["p-1", bad, "s-1"])
    assert domain.id_problem(bad, required=True) == domain.MALFORMED_ID
