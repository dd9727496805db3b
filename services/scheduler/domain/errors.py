"""The scheduler domain's errors: plain exceptions, free of any transport.

The servicer layer maps each class to a status code in one table
(services/scheduler/api/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


class InvalidInput(Exception):
    """Bad input, naming every bad field at once."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class Problems:
    """Collects violations before failing once."""

    def __init__(self) -> None:
        self.found: list[Violation] = []

    def add(self, field: str, description: str) -> None:
        self.found.append(Violation(field, description))

    def extend(self, violations: list[Violation]) -> None:
        self.found.extend(violations)

    def raise_if_any(self) -> None:
        if self.found:
            raise InvalidInput(self.found)


class Missing(Exception):
    """No such job, run, backfill or calendar."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        super().__init__(f"{kind} {name!r} not found")


class WrongState(Exception):
    """The thing exists but is in no state for this (a built-in job deleted, a calendar in use)."""

    def __init__(self, message: str, *, subject: str = "") -> None:
        self.subject = subject
        super().__init__(message)


class Duplicate(Exception):
    """A job or calendar of that name already exists."""
