"""Proto <-> records for the tracking service (ingestion's own conversion is in usecases/ingestion.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from loom.tracking.v1 import tracking_pb2 as pb

from libs.domain_errors import InvalidArgument
from services.tracking import domain
from services.tracking.records import Popularity, Post, Recommendation


def time_or_none(ts: Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def time_range(request) -> tuple[datetime | None, datetime | None]:
    """A request's optional [start_time, end_time)."""
    start = time_or_none(request.start_time, request.HasField("start_time"))
    end = time_or_none(request.end_time, request.HasField("end_time"))
    if start and end and start >= end:
        raise InvalidArgument.field("end_time", "must be after start_time")
    return start, end


def check_id(field: str, value: str, *, required: bool = True) -> None:
    problem = domain.id_problem(value, required=required)
    if problem:
        raise InvalidArgument.field(field, problem)


def post_message(post: Post) -> pb.Post:
    return pb.Post(
        post_id=post.post_id,
        title=post.title,
        url=post.url,
        published=post.published,
        share_count=post.share_count,
        publish_time=timestamp(post.publish_time),
        create_time=timestamp(post.create_time),
        update_time=timestamp(post.update_time),
    )


def popularity_message(scored: Popularity) -> pb.Popularity:
    return pb.Popularity(
        product_id=scored.product_id,
        count_7d=scored.count_7d,
        count_30d=scored.count_30d,
        score=scored.score,
        compute_time=timestamp(scored.compute_time),
        paired=[
            pb.PairedProduct(product_id=p.product_id, percentage=p.percentage, together_count=p.together)
            for p in scored.paired
        ],
    )


def recommendation_message(picked: Recommendation) -> pb.Recommendation:
    score = picked.score
    return pb.Recommendation(
        product_id=picked.product_id,
        score=score,
        reason=(
            f"people who interacted with {picked.because} also interacted with this: {score:g}%"
            if picked.because
            else f"popular now (score {score:g})"
        ),
    )
