"""GetVocabulary: what a rule may say, as the rule builder offers it.

Everything but the job names is what this service validates with (its domain's facts,
operators, event types, action parameters and the status lifecycle it knows batch
enforces) plus the order and batch statuses of the batch protos, the shared contract.
The job names belong to the scheduler and change at run time, so they are asked for
(ListJobs) on each call; when the scheduler does not answer, the vocabulary says so
(`unavailable: ["jobs"]`) rather than failing.
"""

from __future__ import annotations

import functools

import grpc
import structlog
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2

from libs.clients import ServiceClients
from services.rules.domain import rules, vocabulary
from services.rules.domain.operators import OPERATORS

log = structlog.get_logger("loom.rules.catalog")

# A job list the console can wait for: the scheduler answers from memory.
JOBS_DEADLINE_SECONDS = 2.0


def _enum_values(enum, prefix: str) -> list[str]:
    return [name.removeprefix(prefix).lower() for name in enum.keys() if not name.endswith("_UNSPECIFIED")]


def _options(root: str, field: str) -> list[str]:
    if field == "status" and root == "order":
        return _enum_values(batch_pb2.OrderStatus, "ORDER_STATUS_")
    if field == "status" and root == "batch":
        return _enum_values(batch_pb2.BatchStatus, "BATCH_STATUS_")
    if root == "event" and field == "type":
        return sorted(rules.EVENT_TYPES)
    return []


def _fact(root: str, field: str) -> rules_pb2.VocabularyFact:
    window = vocabulary.WINDOWED_FACTS.get(field) if root == vocabulary.WINDOW_ROOT else None
    return rules_pb2.VocabularyFact(
        path=f"{root}.{field}" if field else root,
        type=vocabulary.fact_type(root, field),
        options=_options(root, field),
        description=window.description if window else "",
    )


def _action(name: str, jobs: list[str]) -> rules_pb2.VocabularyAction:
    spec = rules.ACTIONS[name]
    allowed: list[rules_pb2.VocabularyParameterValues] = []
    if "entity" in spec.required | spec.optional:
        allowed.append(rules_pb2.VocabularyParameterValues(parameter="entity", values=_values(rules.ENTITIES)))
    if name == "update_status":
        for entity in rules.ENTITIES:
            reached = rules.REACHED_FROM[entity]
            values = [
                rules_pb2.VocabularyValue(value=status, reached_from=sorted(reached[status])) for status in sorted(reached)
            ]
            allowed.append(rules_pb2.VocabularyParameterValues(parameter="status", entity=entity, values=values))
    if name == "trigger_workflow":
        allowed.append(rules_pb2.VocabularyParameterValues(parameter="job", values=_values(jobs)))
    if name == "notify":
        allowed.append(rules_pb2.VocabularyParameterValues(parameter="role", values=_values(rules.ROLES)))
    return rules_pb2.VocabularyAction(
        type=rules_pb2.ActionType.Value(f"ACTION_TYPE_{name.upper()}"),
        required_parameters=sorted(spec.required),
        optional_parameters=sorted(spec.optional),
        allowed_values=allowed,
        templated_parameters=[] if name in rules.UNTEMPLATED_ACTIONS else sorted(spec.required | spec.optional),
    )


def _values(names) -> list[rules_pb2.VocabularyValue]:
    return [rules_pb2.VocabularyValue(value=n) for n in names]


@functools.cache
def _static() -> rules_pb2.GetVocabularyResponse:
    """Everything but the actions (whose job names change at run time)."""
    groups = [
        rules_pb2.VocabularyFactGroup(
            root=root, fetched=root in vocabulary.FETCHED_ROOTS, facts=[_fact(root, field) for field in sorted(fields)]
        )
        for root, fields in vocabulary.ENTITY_FIELDS.items()
    ]
    groups += [
        rules_pb2.VocabularyFactGroup(root=root, fetched=root in vocabulary.FETCHED_ROOTS, facts=[_fact(root, "")])
        for root in sorted(vocabulary.SCALAR_FACTS)
    ]
    return rules_pb2.GetVocabularyResponse(
        event_types=sorted(rules.EVENT_TYPES),
        event_sources=[
            rules_pb2.VocabularyEventSource(source=source, entities=entities)
            for source, entities in vocabulary.EVENT_ENTITIES.items()
        ],
        fact_groups=groups,
        operators=list(OPERATORS),
        operators_by_type=[
            rules_pb2.VocabularyOperators(type=kind, operators=[op for op in ops if op in OPERATORS])
            for kind, ops in vocabulary.OPERATORS_BY_TYPE.items()
        ],
        compact_aliases=[
            rules_pb2.VocabularyAlias(alias=alias, fact=fact) for alias, fact in vocabulary.COMPACT_ALIASES.items()
        ],
        placeholder_roots=[vocabulary.DECISION_ROOT],
    )


async def job_names(clients: ServiceClients) -> list[str] | None:
    """The scheduler's jobs, or None when it does not answer."""
    try:
        reply = await clients.scheduler.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=JOBS_DEADLINE_SECONDS)
    except grpc.aio.AioRpcError as error:
        log.warning("jobs not fetched for the vocabulary", code=error.code().name)
        return None
    return sorted(job.job_name for job in reply.jobs)


async def get_vocabulary(clients: ServiceClients) -> rules_pb2.GetVocabularyResponse:
    jobs = await job_names(clients)
    response = rules_pb2.GetVocabularyResponse()
    response.CopyFrom(_static())
    response.actions.extend(_action(name, jobs or []) for name in rules.ACTIONS)
    if jobs is None:
        response.unavailable.append("jobs")
    return response
