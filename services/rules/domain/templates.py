"""Action parameter templates: "{{order.id}}" placeholders over the event and its facts.

A string that is exactly one placeholder renders to the fact's own value (a number
stays a number); placeholders inside longer text render as text.
"""

from __future__ import annotations

import re
from typing import Any

from services.rules.domain.conditions import fact_getter
from services.rules.domain.operators import MISSING
from services.rules.domain.vocabulary import path_problem

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class RenderError(Exception):
    """A template names a fact this event does not have."""


def variables(template: Any) -> list[str]:
    """Every placeholder name in a parameter value (strings, lists and objects)."""
    if isinstance(template, str):
        return PLACEHOLDER.findall(template)
    if isinstance(template, list):
        return [name for item in template for name in variables(item)]
    if isinstance(template, dict):
        return [name for item in template.values() for name in variables(item)]
    return []


def template_problems(template: Any) -> list[str]:
    """Why the placeholders of a parameter value are not usable (empty when they are)."""
    problems = []
    for name in variables(template):
        problem = path_problem(name)
        if problem:
            problems.append(f"template variable {{{{{name}}}}}: {problem}")
    return problems


def render(template: Any, facts: dict[str, Any]) -> Any:
    """The parameter value with every placeholder replaced; RenderError when a fact is missing."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return _value(whole.group(1), facts)
        return PLACEHOLDER.sub(lambda m: _text(_value(m.group(1), facts)), template)
    if isinstance(template, list):
        return [render(item, facts) for item in template]
    if isinstance(template, dict):
        return {key: render(item, facts) for key, item in template.items()}
    return template


def _value(name: str, facts: dict[str, Any]) -> Any:
    value = fact_getter(name)(facts)
    if value is MISSING or value is None:
        raise RenderError(f"{{{{{name}}}}} has no value for this event")
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
