"""The Jinja2 sandbox that renders runbook templates.

Kept apart from `templating` so that Jinja2 is imported only when a runbook has
a template that needs it: a run of a runbook without templates never pays for it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from iacorch.runbook.templating import (
    StageOutputs,
    TemplateProblem,
    shell_raw,
    to_text,
    why_missing,
)

MAX_BUILT = 1_000_000  # characters or items one `*` may build; digits one `**` may make


class _MissingOutput(StrictUndefined):
    """A stage output that has no value: using it raises our explanation of why, not
    Jinja's "'dict object' has no attribute"; `| default` and `is defined` still work."""

    __slots__ = ("_problem",)

    def __init__(self, problem: TemplateProblem, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._problem = problem

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        raise self._problem


# Jinja binds its failing operators (`__str__`, `__iter__`, `__add__`...) to the base
# method when the class is made, so they are bound again here to the override.
for _cls in (Undefined, StrictUndefined):
    for _name, _value in vars(_cls).items():
        if _value is Undefined._fail_with_undefined_error and _name.startswith("__"):
            setattr(_MissingOutput, _name, _MissingOutput._fail_with_undefined_error)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, also refusing `'a' * 10**10` and `10 ** 10**8`: one line of a runbook
    must not take the machine's memory or minutes of CPU when it renders."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (isinstance(sequence, str | list | tuple) and isinstance(count, int)
                        and len(sequence) * count > MAX_BUILT):
                    raise SecurityError(f"`*` would build more than {MAX_BUILT:,} items")
        elif (operator == "**" and isinstance(left, int) and isinstance(right, int)
              and abs(left) > 1 and right * math.log10(abs(left)) > MAX_BUILT / 100):
            raise SecurityError(f"`**` would make a number of more than {MAX_BUILT // 100:,} "
                                "digits")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        return self._explained(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self._explained(obj, argument, super().getitem(obj, argument))

    def _explained(self, obj: Any, name: Any, value: Any) -> Any:
        if isinstance(value, Undefined) and isinstance(obj, StageOutputs):
            return _MissingOutput(why_missing(obj, str(name)), obj=obj, name=str(name))
        return value


def new_environment(**options: Any) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment with strict undefined values and iacorch's filters."""
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                   **options)
    env.filters["tojson"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    env.filters["raw"] = lambda v: shell_raw(to_text(v))
    return env
