"""ErasePersonData: one person's engagement data goes from every tracking table, another's stays.

Both people's data is made through the real RPCs (interactions anonymous then signed in,
a second session seen only through the browser id, duplicates, client event ids, a share
with a request id, the aggregation's rollups). What "nothing remains" means is checked
by walking every table of the schema, whatever its columns: no row, read as text, holds
one of the person's identifiers, and no binary column holds one either, so a table added
later is checked without anyone remembering to.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from loom.tracking.v1 import tracking_pb2 as pb

from libs.scratch_db import plain_url
from tests.gateway.support import gateway_settings, run_gateway
from tests.support import auth, from_gateway, token

ADMIN = auth("admin")
# Audit records (who called which RPC, kept for their own retention) are a security log,
# not engagement data: they name the person as a caller and as the erasure's subject.
KEPT_BY_DESIGN = ("audit",)


@dataclass
class Person:
    user_id: str
    ip: str
    identifiers: set[str] = field(default_factory=set)  # every id of theirs the service handed out or was given

    @property
    def signed_in(self):
        return (*auth("buyer", self.user_id), *from_gateway(self.ip))

    @property
    def anonymous(self):
        return from_gateway(self.ip)


def database_rows(database_url: str, sql: str, *params):
    with psycopg.connect(plain_url(database_url)) as conn:
        return conn.execute(sql, params).fetchall()


def tracking_tables(database_url: str) -> list[tuple[str, list[str]]]:
    """(table, its bytea columns) for every table of the tracking schema, partitions included."""
    found: dict[str, list[str]] = {}
    for table, column, data_type in database_rows(
        database_url,
        """SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'tracking' AND t.table_type = 'BASE TABLE' ORDER BY 1, 2""",
    ):
        found.setdefault(table, [])
        if data_type == "bytea":
            found[table].append(column)
    return [(table, columns) for table, columns in found.items() if not table.startswith(KEPT_BY_DESIGN)]


def rows_holding(database_url: str, identifiers: set[str]) -> dict[str, list[str]]:
    """Per table, the rows (as text) in which any column holds one of the identifiers."""
    patterns = [f"%{value}%" for value in identifiers]
    needles = [value.encode() for value in identifiers]
    holding = {}
    for table, binary_columns in tracking_tables(database_url):
        in_binary = " OR ".join(
            f"EXISTS (SELECT 1 FROM unnest(%s::bytea[]) n WHERE position(n IN x.{column}) > 0)" for column in binary_columns
        )
        condition = "x::text LIKE ANY(%s)" + (f" OR {in_binary}" if in_binary else "")
        found = database_rows(
            database_url,
            f"SELECT x::text FROM tracking.{table} x WHERE {condition} ORDER BY 1",
            patterns,
            *([needles] * len(binary_columns)),
        )
        if found:
            holding[table] = [row for (row,) in found]
    return holding


async def seed(stub, post_id: str, person: Person) -> None:
    """A person's engagement, through the RPCs: two sessions, a browser id, duplicates, a share, rollups."""
    tag = person.user_id
    browser, session, other_session = f"browser-{tag}", f"session-{tag}", f"later-session-{tag}"
    person.identifiers |= {person.user_id, browser, session, other_session}

    async def track(metadata, **fields):
        reply = await stub.TrackInteraction(pb.TrackInteractionRequest(interaction=pb.Interaction(**fields)), metadata=metadata)
        person.identifiers.add(reply.interaction_id)

    view, cart = pb.INTERACTION_TYPE_VIEW_DETAILS, pb.INTERACTION_TYPE_ADD_TO_CART
    await track(person.anonymous, type=view, product_id="p-shirt", session_id=session, anonymous_id=browser,
                client_event_id=f"event-1-{tag}")
    await track(person.anonymous, type=view, product_id="p-shirt", session_id=session, anonymous_id=browser)  # duplicate
    await track(person.signed_in, type=cart, product_id="p-shirt", session_id=session, anonymous_id=browser,
                user_id=person.user_id, client_event_id=f"event-2-{tag}")
    await track(person.anonymous, type=view, product_id="p-cap", session_id=other_session, anonymous_id=browser)
    person.identifiers |= {f"event-1-{tag}", f"event-2-{tag}"}
    shared = await stub.TrackShare(
        pb.TrackShareRequest(post_id=post_id, platform=pb.SHARE_PLATFORM_LINKEDIN, session_id=f"share-session-{tag}",
                             user_id=person.user_id, request_id=f"share-{tag}"),
        metadata=person.signed_in,
    )
    person.identifiers |= {shared.share_id, f"share-session-{tag}"}


@pytest.fixture
async def two_people(stub, unique):
    shared = pb.Post(title="Tees", url="https://loom.example/t", published=True)
    post = await stub.CreatePost(pb.CreatePostRequest(request_id=uuid.uuid4().hex, post=shared), metadata=ADMIN)
    erased, kept = Person(f"erased-{unique}", "203.0.113.41"), Person(f"kept-{unique}", "203.0.113.42")
    for person in (erased, kept):
        await seed(stub, post.post.post_id, person)
    await stub.AggregatePopularity(
        pb.AggregatePopularityRequest(request_id=uuid.uuid4().hex), metadata=ADMIN
    )
    return erased, kept, post.post.post_id


async def erase(stub, user_id: str, request_id: str | None = None, metadata=ADMIN) -> pb.ErasePersonDataResponse:
    request = pb.ErasePersonDataRequest(request_id=request_id or uuid.uuid4().hex, user_id=user_id)
    return await stub.ErasePersonData(request, metadata=metadata)


async def test_nothing_of_the_person_remains_in_any_table_and_the_other_persons_data_is_intact(
    stub, tracking_db, two_people
):
    erased, kept, _ = two_people
    theirs = rows_holding(tracking_db, erased.identifiers)
    others_before = rows_holding(tracking_db, kept.identifiers)
    for table in ("interactions", "client_events", "dedup_windows", "session_users", "shares", "idempotency_keys",
                  "user_products_daily", "actor_products_daily", "session_hours", "funnel_steps"):
        assert table in theirs and table in others_before, f"the seed left nothing of either person in {table}"

    reply = await erase(stub, erased.user_id)

    assert rows_holding(tracking_db, erased.identifiers) == {}
    assert rows_holding(tracking_db, kept.identifiers) == others_before
    assert (reply.interactions_deleted, reply.shares_deleted, reply.sessions) == (3, 1, 3)  # the duplicate was never stored
    assert reply.client_events_deleted == 2 and reply.attributions_deleted == 1 and reply.idempotency_records_deleted == 1
    assert reply.dedup_windows_deleted >= 2 and reply.rollup_rows_deleted >= 4


async def test_another_persons_signed_in_events_in_a_shared_session_stay(stub, tracking_db, unique):
    first, second, session = f"first-{unique}", f"second-{unique}", f"shared-{unique}"
    replies = {}
    for user in (first, second):
        item = pb.Interaction(type=pb.INTERACTION_TYPE_VIEW_DETAILS, product_id=f"p-{user}", session_id=session, user_id=user)
        replies[user] = await stub.TrackInteraction(pb.TrackInteractionRequest(interaction=item), metadata=auth("buyer", user))

    await erase(stub, second)

    stored = database_rows(tracking_db, "SELECT user_id FROM tracking.interactions WHERE session_id = %s", session)
    attributed = database_rows(tracking_db, "SELECT user_id FROM tracking.session_users WHERE session_id = %s", session)
    assert stored == [(first,)] and attributed == [(first,)]


async def test_the_posts_share_count_keeps_erased_shares_as_an_anonymous_count(stub, two_people):
    erased, _, post_id = two_people
    await erase(stub, erased.user_id)
    await stub.AggregatePopularity(pb.AggregatePopularityRequest(request_id=uuid.uuid4().hex), metadata=ADMIN)
    post = (await stub.GetPost(pb.GetPostRequest(post_id=post_id), metadata=ADMIN)).post
    stats = await stub.GetShareStats(pb.GetShareStatsRequest(post_id=post_id), metadata=ADMIN)
    assert (post.share_count, stats.total) == (2, 1)  # the count stays; the share itself is gone


async def test_erasing_again_changes_nothing_and_a_retry_returns_the_first_answer(stub, tracking_db, two_people):
    erased, kept, _ = two_people
    first = await erase(stub, erased.user_id, request_id=f"erase-{erased.user_id}")
    others = rows_holding(tracking_db, kept.identifiers)

    retried = await erase(stub, erased.user_id, request_id=f"erase-{erased.user_id}")
    again = await erase(stub, erased.user_id)

    assert retried == first and first.interactions_deleted > 0
    assert again == pb.ErasePersonDataResponse()
    assert rows_holding(tracking_db, kept.identifiers) == others


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (auth("buyer", "erased-self"), grpc.StatusCode.PERMISSION_DENIED),  # not even the person themselves
        (auth("supplier"), grpc.StatusCode.PERMISSION_DENIED),
        (auth("service", "service:scheduler"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_an_admin_may_erase(stub, metadata, code):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, "erased-self", metadata=metadata)
    assert caught.value.code() == code


async def test_an_admin_erases_over_the_gateway(tracking, stub, tracking_db, two_people):
    erased, kept, _ = two_people
    targets = dict.fromkeys(("batch", "rules", "tracking", "scheduler"), tracking.target)
    async with run_gateway(gateway_settings(targets)) as gateway, gateway.client() as http:
        reply = await http.post(
            f"/v1/people/{erased.user_id}:eraseEngagement",
            json={"requestId": uuid.uuid4().hex},
            headers={"authorization": f"Bearer {token('admin')}"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["interactionsDeleted"] == "3"
    assert rows_holding(tracking_db, erased.identifiers) == {}
    assert rows_holding(tracking_db, kept.identifiers) != {}


async def test_client_ips_are_kept_only_as_hashes_with_the_days_rotating_salt(tracking_db, two_people):
    erased, kept, _ = two_people
    today = datetime.now(UTC).date()
    assert rows_holding(tracking_db, {erased.ip, kept.ip}) == {}  # no raw address anywhere, in any form
    salts = dict(database_rows(tracking_db, "SELECT day, salt FROM tracking.ip_salts"))
    assert min(salts) >= today - timedelta(days=1)  # older salts are gone, and their hashes unlinkable
    expected = hmac.new(salts[today], erased.ip.encode(), hashlib.sha256).digest()[:16]
    stored = database_rows(
        tracking_db,
        "SELECT DISTINCT ip_hash FROM tracking.interactions WHERE session_id = %s "
        "UNION SELECT ip_hash FROM tracking.shares WHERE user_id = %s",
        f"session-{erased.user_id}",
        erased.user_id,
    )
    assert stored == [(expected,)]
