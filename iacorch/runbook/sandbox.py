"""The Jinja2 sandbox that renders runbook templates.

Kept apart from `templating` so that Jinja2 is imported only when a runbook has
a template that needs it: a run of a runbook without templates never pays for it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from iacorch.runbook.templating import shell_raw, to_text

MAX_BUILT = 1_000_000  # characters or items one `*` may build; digits one `**` may make


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


def new_environment(**options: Any) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment with strict undefined values and iacorch's filters."""
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                   **options)
    env.filters["tojson"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    env.filters["raw"] = lambda v: shell_raw(to_text(v))
    return env
