"""Domain errors: plain Python exceptions, free of any transport.

Domain, use-case and store code raise these and nothing else; they say what went
wrong in the business's terms (bad input with every violated field, a missing
resource, a wrong state, a duplicate, a limit with when to retry). Which gRPC
status code and google.rpc details an error becomes is decided in one place, the
table in `libs.errors`, which the server interceptor consults.

Adding an error of your own (rules, scheduler, ...):
- when it means one of the kinds below, subclass that kind; it maps as its parent does
  (the table is looked up along the exception's MRO, like Starlette's handlers):

      class RuleNotFound(NotFound): ...

- when it is a new kind, subclass DomainError here or in your domain module and
  register its status once, next to your servicer or wiring:

      from libs.errors import register_status
      register_status(CompileError, grpc.StatusCode.INVALID_ARGUMENT, details=lambda e: [...])

An unregistered DomainError subclass becomes UNKNOWN with its message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """The base of every error a client is meant to read: `message` is sent as is;
    `reason` (UPPER_SNAKE) identifies the cause for programs."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class InvalidArgument(DomainError):
    """Bad input: every violated field at once."""

    def __init__(self, violations: Iterable[FieldViolation] | str, *, message: str | None = None) -> None:
        if isinstance(violations, str):
            raise TypeError("InvalidArgument needs field violations; use InvalidArgument.field(name, why)")
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid argument: {summary}")

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found")
        self.resource_type, self.name = resource_type, name


class FailedPrecondition(DomainError):
    """The resource is in the wrong state for the request; `subject` names it (e.g. "orders/<id>")."""

    def __init__(self, message: str, *, reason: str | None = None, subject: str = "") -> None:
        super().__init__(message, reason=reason)
        self.subject = subject


class AlreadyExists(DomainError):
    pass


class ResourceExhausted(DomainError):
    """A limit was reached; the caller may retry after `retry_after_seconds`."""

    def __init__(self, message: str, *, retry_after_seconds: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class Unavailable(DomainError):
    """Transient: the same request (same request_id) may succeed later."""


class Violations:
    """Collects every field violation of a request before failing once."""

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._found.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.add(field, description)

    def __bool__(self) -> bool:
        return bool(self._found)

    def raise_if_any(self) -> None:
        if self._found:
            raise InvalidArgument(self._found)
