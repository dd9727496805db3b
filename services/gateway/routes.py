"""The HTTP routes of every Loom RPC, read from its `google.api.http` annotation.

Nothing here names a single RPC: the table is built from the descriptors of
the generated protos, so adding an RPC (with its annotation) adds its route.
Path templates follow google/api/http.proto: literal segments, `*`, `**`,
variables `{field.path}` or `{field.path=segments/*}`, and a trailing `:verb`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from loom.batch.v1 import batch_pb2  # noqa: F401 - registers the descriptors in the default pool
from loom.common.v1 import access_pb2
from loom.rules.v1 import rules_pb2  # noqa: F401
from loom.scheduler.v1 import scheduler_pb2  # noqa: F401
from loom.tracking.v1 import tracking_pb2  # noqa: F401

from libs.settings import SERVICE_NAMES

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A path template this gateway cannot route (raised at start-up, never per request)."""


@dataclass(frozen=True)
class Rpc:
    """One gRPC method and what the gateway needs to call it."""

    descriptor: MethodDescriptor
    backend: str  # which Loom service serves it: batch, rules, tracking or scheduler

    @property
    def path(self) -> str:
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def server_streaming(self) -> bool:
        return self.descriptor.server_streaming

    @cached_property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor.input_type)

    @cached_property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor.output_type)

    @cached_property
    def access(self) -> access_pb2.AccessRule:
        return self.descriptor.GetOptions().Extensions[access_pb2.access]


@dataclass(frozen=True)
class PathTemplate:
    template: str
    pattern: re.Pattern[str]
    variables: tuple[str, ...]  # field paths, in the order of the pattern's groups
    verb: str
    literal_segments: int

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in zip(self.variables, found.groups(), strict=True)}


def parse_template(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    path, verb = template, ""
    last_slash = template.rfind("/")
    last_brace = template.rfind("}")
    colon = template.rfind(":")
    if colon > max(last_slash, last_brace):
        path, verb = template[:colon], template[colon + 1 :]
    regex: list[str] = []
    variables: list[str] = []
    literals = 0
    for segment in _split_segments(path[1:]):
        if segment.startswith("{"):
            name, _, sub = segment[1:-1].partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
                raise TemplateError(f"bad variable {segment!r} in {template!r}")
            variables.append(name)
            regex.append(f"({_segments_regex(sub or '*', template)})")
        else:
            literals += segment not in ("*", "**")
            regex.append(_segments_regex(segment, template))
    pattern = "/" + "/".join(regex) + (":" + re.escape(verb) if verb else "")
    return PathTemplate(template, re.compile(pattern), tuple(variables), verb, literals)


def _split_segments(path: str) -> list[str]:
    """Splits on '/' outside braces, so `{name=shelves/*}` stays one piece."""
    segments, depth, current = [], 0, ""
    for char in path:
        depth += (char == "{") - (char == "}")
        if char == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += char
    segments.append(current)
    return segments


def _segments_regex(segments: str, template: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append(".+")
        elif segment and re.fullmatch(r"[A-Za-z0-9._~\-]+", segment):
            parts.append(re.escape(segment))
        else:
            raise TemplateError(f"bad segment {segment!r} in {template!r}")
    return "/".join(parts)


@dataclass(frozen=True)
class Binding:
    """One HTTP route of an RPC (an annotation or one of its additional_bindings)."""

    rpc: Rpc
    http_method: str  # upper case
    template: PathTemplate
    body: str  # "", "*" or a field path
    response_body: str

    @property
    def priority(self) -> tuple:
        # A template with a verb is tried first, so `/v1/batches/x:watch` reaches WatchBatch
        # rather than GetBatch with batch_id "x:watch"; then the most literal template wins.
        return (not self.template.verb, -self.template.literal_segments, -len(self.template.template))


@dataclass
class RouteTable:
    bindings: list[Binding] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bindings.sort(key=lambda b: b.priority)
        self._by_method: dict[str, list[Binding]] = {}
        for binding in self.bindings:
            self._by_method.setdefault(binding.http_method, []).append(binding)

    def match(self, http_method: str, raw_path: str) -> tuple[Binding, dict[str, str]] | None:
        for binding in self._by_method.get(http_method, ()):
            variables = binding.template.match(raw_path)
            if variables is not None:
                return binding, variables
        return None

    def allowed_methods(self, raw_path: str) -> list[str]:
        """Methods some other binding accepts at this path (for 405 vs 404)."""
        return sorted({b.http_method for b in self.bindings if b.template.match(raw_path) is not None})


def loom_services() -> list[tuple[str, ServiceDescriptor]]:
    """(backend name, service descriptor) of every Loom gRPC service."""
    pool = descriptor_pool.Default()
    return [
        (backend, service)
        for backend in SERVICE_NAMES
        for service in pool.FindFileByName(f"loom/{backend}/v1/{backend}.proto").services_by_name.values()
    ]


def build_table() -> RouteTable:
    bindings = []
    for backend, service in loom_services():
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            rpc = Rpc(method, backend)
            for each in (rule, *rule.additional_bindings):
                bindings.append(_binding(rpc, each))
    return RouteTable(bindings)


def _binding(rpc: Rpc, rule: http_pb2.HttpRule) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        http_method, template = rule.custom.kind.upper(), rule.custom.path
    elif kind in HTTP_METHODS:
        http_method, template = kind.upper(), getattr(rule, kind)
    else:
        raise TemplateError(f"{rpc.path} has an http rule without a pattern")
    parsed = parse_template(template)
    for variable in parsed.variables:
        resolve_field_path(rpc.descriptor.input_type, variable)
    if rule.body not in ("", "*"):
        resolve_field_path(rpc.descriptor.input_type, rule.body)
    return Binding(rpc, http_method, parsed, rule.body, rule.response_body)


def resolve_field_path(message: Descriptor | None, path: str):
    """The field descriptors along a dotted path of proto names; TemplateError if one is missing."""
    fields = []
    for name in path.split("."):
        if message is None or name not in message.fields_by_name:
            raise TemplateError(f"{path!r} names no field of {message.full_name if message else 'a scalar'}")
        found = message.fields_by_name[name]
        fields.append(found)
        message = found.message_type
    return fields
