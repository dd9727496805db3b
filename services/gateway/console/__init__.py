"""The admin web console: static pages served by the gateway under /console.

The pages talk only to the gateway's public JSON API. What each role may see
and do is not re-declared here: `/console/access.json` lists the roles of every
RPC straight from the protos' `(loom.common.v1.access)` options, so the pages
hide what the signed-in role could not call anyway. The rule builder asks the rules
service itself what a rule may say (GetVocabulary, `GET /v1/rules:vocabulary`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from google.protobuf import descriptor_pool
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from libs.auth import ROLE_NAMES, access_rule

STATIC_DIR = Path(__file__).parent / "static"
SERVICES = tuple(
    descriptor_pool.Default().FindServiceByName(name)
    for name in (
        batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name,
        rules_pb2.DESCRIPTOR.services_by_name["RulesService"].full_name,
        scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
        tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name,
    )
)


@functools.cache
def access_table() -> dict[str, dict]:
    """{"loom.batch.v1.BatchService/ResolveReview": {"roles": ["admin"], "anonymous": false}, ...}"""
    table = {}
    for service in SERVICES:
        for method in service.methods:
            path = f"{service.full_name}/{method.name}"
            rule = access_rule(f"/{path}")
            assert rule is not None  # None only for methods outside loom.*, and these are all Loom's
            table[path] = {
                "roles": sorted(ROLE_NAMES[role] for role in rule.roles if role in ROLE_NAMES),
                "anonymous": rule.allow_anonymous,
            }
    return table


async def access(_: Request) -> Response:
    return JSONResponse(access_table(), headers={"cache-control": "no-cache"})


async def to_index(_: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


class ConsoleFiles(StaticFiles):
    """Static files that browsers revalidate, so a redeployed console is never half old.

    Their Content-Security-Policy (everything from here: no inline scripts, no third-party
    origins) and other security headers come with every gateway response
    (services/gateway/protections.py)."""

    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("cache-control", "no-cache")
        return response


def console_routes() -> list[BaseRoute]:
    """Routes the gateway app includes: the console under /console."""
    return [
        Route("/console", to_index),
        Route("/console/access.json", access),
        Mount("/console", app=ConsoleFiles(directory=STATIC_DIR, html=True), name="console"),
    ]
