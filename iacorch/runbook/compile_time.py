"""Values computed when the runbook compiles: templates that may use `vars` only.

`for_each` lists and durations (`deadline`, `timeout`, `retries.backoff`: an RTO per
environment) are known before anything runs, so their templates are rendered here,
and a problem is located at the template, like every other compile error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from iacorch.model.fields import RuleError, parse_duration
from iacorch.model.plan import RetryPolicy
from iacorch.model.runbook import Retries
from iacorch.runbook.references import ReferenceChecker
from iacorch.runbook.schema_errors import describe
from iacorch.runbook.templating import TemplateProblem, Templates

NOT_RENDERED = object()  # what a template gives once the reason it cannot be rendered is reported


class CompileTimeValues:
    """Renders compile-time templates with the runbook's vars; reports through `problem`."""

    def __init__(self, refs: ReferenceChecker, templates: Templates, values: Mapping[str, Any],
                 problem: Callable[[str, Sequence[Any], str], None]) -> None:
        self._refs, self._templates, self._vars, self._problem = refs, templates, values, problem

    def render(self, source: str, where: tuple[Any, ...], what: str, hint: str) -> Any:
        """The value of the template at `where`, or NOT_RENDERED after reporting why.

        `what` names the value in the message ("`for_each` is expanded"), `hint` says how
        to get a value that uses more than vars.
        """
        refs = self._refs.template(source, where)
        if refs is None:
            return NOT_RENDERED
        if any(r.root != "vars" for r in refs.items):
            self._problem(f"{what} when the runbook compiles, so it can only use `vars`", where,
                          hint)
            return NOT_RENDERED
        if not all([self._refs.declared("vars", r.path[0], where) for r in refs.items if r.path]):
            return NOT_RENDERED
        try:
            return self._templates.render(source, {"vars": self._vars})
        except TemplateProblem as exc:
            self._problem(f"`{where[-1]}` cannot be computed: {exc.message}", where,
                          exc.hint or "check the vars it uses")
            return NOT_RENDERED

    def duration(self, value: float | str | None, where: tuple[Any, ...]) -> float | None:
        """Seconds; None when unset, or after reporting why the template gives no duration."""
        if not isinstance(value, str):
            return value
        rendered = self.render(value, where, f"`{where[-1]}` is computed",
                               'use a var for it, e.g. `timeout: "{{ vars.rto }}"`')
        if rendered is NOT_RENDERED:
            return None
        try:
            return parse_duration(rendered)
        except RuleError as exc:
            self._problem(f"`{where[-1]}` renders to {describe(rendered)}, which is not a "
                          "duration", where, f"{exc.hint}; check the vars it uses")
            return None

    def retry(self, retries: Retries | None, where: tuple[Any, ...],
              inherited: RetryPolicy) -> RetryPolicy:
        """The retry policy written at `where`, else the `inherited` one."""
        if retries is None:
            return inherited
        backoff = self.duration(retries.backoff, (*where, "backoff"))
        return RetryPolicy(retries.attempts, backoff or 0.0)
