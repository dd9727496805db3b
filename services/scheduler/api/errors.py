"""Domain exceptions -> the libs.errors types the interceptor turns into status codes,
in one table. (When the shared table in libs/interceptor.py lands, this folds into it.)"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from libs.errors import AlreadyExists, DomainError, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.scheduler.domain.errors import Duplicate, InvalidInput, Missing, WrongState

# Each translator is given an instance of its key's type (so Any: mypy cannot tie the two).
TRANSLATIONS: dict[type[Exception], Callable[[Any], DomainError]] = {
    InvalidInput: lambda e: InvalidArgument([FieldViolation(v.field, v.description) for v in e.violations]),
    Missing: lambda e: NotFound(e.kind, e.name),
    WrongState: lambda e: FailedPrecondition(str(e), reason="STATE", subject=e.subject),
    Duplicate: lambda e: AlreadyExists(str(e)),
}


def translated(error: Exception) -> Exception:
    for kind in type(error).__mro__:
        if kind in TRANSLATIONS:
            return TRANSLATIONS[kind](error)
    return error


def mapping_domain_errors(cls: type) -> type:
    """Wraps every RPC method (CamelCase coroutine or async generator) of a servicer."""
    for name, method in list(vars(cls).items()):
        if not name[:1].isupper():
            continue
        if inspect.isasyncgenfunction(method):
            setattr(cls, name, _stream(method))
        elif inspect.iscoroutinefunction(method):
            setattr(cls, name, _unary(method))
    return cls


def _unary(method):
    @functools.wraps(method)
    async def call(self, request, context):
        try:
            return await method(self, request, context)
        except tuple(TRANSLATIONS) as error:
            raise translated(error) from None

    return call


def _stream(method):
    @functools.wraps(method)
    async def call(self, request, context):
        try:
            async for item in method(self, request, context):
                yield item
        except tuple(TRANSLATIONS) as error:
            raise translated(error) from None

    return call
