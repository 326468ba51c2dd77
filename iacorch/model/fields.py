"""Building blocks of the runbook models: the base model, rule errors, durations."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*(ms|s|m|h|d))+\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class RuleError(ValueError):
    """A value that breaks a rule of the format; `hint` says how to write it instead.

    The schema error mapper shows `message` and `hint` apart; `str()` joins them for
    callers that only print the error (command-line flags).
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; {hint}")
        self.message = message
        self.hint = hint


_DURATION_HINT = "write it as 30s, 15m, 4h or 1h30m (a bare number means seconds)"


def parse_duration(value: object) -> float:
    """`90`, `"90s"`, `"15m"`, `"1h30m"`, `"250ms"` -> seconds."""
    if isinstance(value, bool):
        raise RuleError(f"{str(value).lower()} is not a duration", _DURATION_HINT)
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RuleError(f"{value} is not a duration", _DURATION_HINT)
        if value < 0:
            raise RuleError("a duration cannot be negative", _DURATION_HINT)
        return float(value)
    if isinstance(value, str) and _DURATION.match(value):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    shown = repr(value) if isinstance(value, str) else "a " + type(value).__name__
    raise RuleError(f"{shown} is not a duration", _DURATION_HINT)


def duration_or_template(value: object) -> float | str:
    """A duration in seconds, or a template (`"{{ vars.rto }}"`) the compiler renders."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return value
    return parse_duration(value)


_DURATION_SCHEMA = [{"type": "number", "minimum": 0},
                    {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d))+\s*$"}]
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema({
    "anyOf": _DURATION_SCHEMA,
    "description": "seconds, or a duration such as 30s, 15m, 4h, 1h30m"})]
# Durations the compiler may compute from vars, e.g. an RTO per environment.
VarsDuration = Annotated[float | str, BeforeValidator(duration_or_template), WithJsonSchema({
    "anyOf": [*_DURATION_SCHEMA, {"type": "string", "pattern": r"\{\{|\{%"}],
    "description": "seconds, a duration such as 30s, 15m, 4h, 1h30m, or a template of "
                   "vars giving one"})]
Templated = str  # a string that may hold {{ ... }}


class Strict(BaseModel):
    """Base of every runbook model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              defer_build=True)  # built when first used: most never are
