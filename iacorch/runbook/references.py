"""What templates refer to: known names, filters and tests; declared vars and secrets;
stages that exist, with the outputs they declare.

The compiler hands each template string here with its document path; problems go back
through the `problem` callback, which locates them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from iacorch.model.driver_spec import DriverSpec
from iacorch.model.registry import driver_specs
from iacorch.model.runbook import Runbook, Stage
from iacorch.runbook.templating import (
    ROOTS,
    Reference,
    References,
    TemplateProblem,
    Templates,
    did_you_mean,
    is_template,
    missing_output,
    secret_env_name,
)

ProblemSink = Callable[[str, Sequence[Any], str], None]
_SYNTAX_HINT = "check the {{ }} and {% %} pairs"
_NOTIFY_ROOTS = ("vars", "secrets", "env", "runbook")


class ReferenceChecker:
    """Checks the templates of one runbook; reports through `problem(message, path, hint)`."""

    def __init__(self, runbook: Runbook, templates: Templates, problem: ProblemSink) -> None:
        self._runbook = runbook
        self._templates = templates
        self._sink = problem
        self._reported = 0

    def _problem(self, message: str, path: Sequence[Any], hint: str) -> None:
        self._reported += 1
        self._sink(message, path, hint)

    def notify(self) -> None:
        """Webhook templates render when a run ends, with vars, secrets, env and runbook."""
        for name, channel in self._runbook.notify.items():
            if not is_template(channel.webhook):
                continue
            where = ("notify", name, "webhook")
            refs = self.template(str(channel.webhook), where)
            for ref in refs.items if refs is not None else ():
                if ref.root not in _NOTIFY_ROOTS:
                    self._problem(f"a notify webhook cannot use `{ref.root}`", where,
                                  f"it can use {', '.join(_NOTIFY_ROOTS)}")
                elif ref.root in ("vars", "secrets") and ref.path:
                    self.declared(ref.root, ref.path[0], where)

    def template(self, source: str, path: Sequence[Any]) -> References | None:
        """What the template at `path` uses; None after reporting why it cannot be used."""
        try:
            refs = self._templates.references(source)
        except TemplateProblem as exc:
            self._problem(exc.message, path, exc.hint or _SYNTAX_HINT)
            return None
        count = self._reported
        for name in refs.unknown_names:
            dashed = self._dashed_stage(refs, name)
            if dashed is not None:
                head, _, tail = dashed.partition("-")
                self._problem(f"`stages.{dashed}` in a template reads as `stages.{head}` minus "
                              f"`{tail}`", path, f"write ids with `-` as stages['{dashed}']")
                continue
            self._problem(f"`{name}` is not defined in templates", path,
                          did_you_mean(name, ROOTS) or "templates can use "
                          f"{', '.join(sorted(ROOTS))}; quote `{{{{` meant as text with "
                          "{% raw %}...{% endraw %}")
        for kind, names in (("filter", refs.unknown_filters), ("test", refs.unknown_tests)):
            for name in names:
                known = self._templates.known(kind)
                self._problem(f"template uses `{name}`, which is not a known {kind}", path,
                              did_you_mean(name, known)
                              or f"known {kind}s: {', '.join(known[:12])}, ...")
        if refs.unsafe_attributes:
            self._problem(f"template uses the private attribute `{refs.unsafe_attributes[0]}`",
                          path, "the template sandbox refuses names starting with `_`")
        return refs if self._reported == count else None

    def script_secrets(self, refs: References, path: Sequence[Any]) -> None:
        """In a script (`shell.run`) a secret is an environment reference: only
        `{{ secrets.X }}` works."""
        script = _driver_field(path[-2:], "script_field")
        if script is None:
            return
        for use in refs.secret_uses:
            name = use.expression.partition(".")[2]
            variable = secret_env_name(name) if name else "IACORCH_SECRET_<NAME>"
            self._problem(f"`{script.name}.{script.script_field}` applies {use.how} to "
                          f"`{use.expression}`, but in a script a secret is the reference "
                          f"\"${{{variable}}}\", not its value", path,
                          f"apply the transformation in the shell, to \"${variable}\", or "
                          "pass it through env: put this template in the stage's `env:` "
                          "(e.g. as TOKEN) and use \"$TOKEN\" in the script")

    def stage_reference(self, section: str, stage_id: str, stage: Stage, ref: Reference,
                         path: Sequence[Any]) -> str | None:
        name = ref.path[0] if ref.path else None
        argv = _in_argv(path)
        if ref.root == "secrets" and argv is not None:
            script = f", or use `{argv.script_field}:`" if argv.script_field else ""
            self._problem(f"`secrets.{name}` in `{argv.name}.{argv.argv_field}` would put the "
                          "secret on a command line, where `ps` and /proc show it", path,
                          f"pass it in `env:` (e.g. TOKEN: \"{{{{ secrets.{name} }}}}\") and "
                          f"read $TOKEN{script}, where secrets arrive as environment "
                          "variables")
        elif ref.root in ("vars", "secrets") and name is not None:
            self.declared(ref.root, name, path)
        elif ref.root == "item" and stage.for_each is None \
                and path[2:3] not in (("rollback",), ("destroy",)):
            self._problem("`item` is only defined in stages with `for_each`", path,
                          "add `for_each:` to this stage, or use a var instead of `item`")
        elif ref.root == "stages" and name is not None:
            if name not in self._runbook.stages:
                self._problem(f"template refers to stage `{name}`, which does not exist", path,
                              self._stage_hint(name))
                return None
            if name == stage_id and section == "stages":
                self._problem(f"stage `{stage_id}` refers to its own outputs", path,
                              "a stage's outputs exist only after it ran; use a var, or split "
                              "the stage in two")
                return None
            self._output_name(name, ref.path[1:], path)
            return name
        return None

    def declared(self, root: str, name: str, path: Sequence[Any]) -> bool:
        """Whether `vars.<name>` or `secrets.<name>` is declared; reports it when not."""
        known = self._runbook.vars if root == "vars" else self._runbook.secrets
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            self._problem(f"`{root}.{name}` is not declared", path,
                          f"did you mean `{root}.{close[0]}`?" if close else
                          f"declare it under `{root}:` at the top of the runbook")
        return name in known

    def _dashed_stage(self, refs: References, name: str) -> str | None:
        """The stage id `a-b` when a template wrote `stages.a-b` (`stages.a` minus `b`)."""
        for head in refs.stage_ids:
            for stage_id in self._runbook.stages:
                if stage_id.startswith(f"{head}-") and f"-{name}" in stage_id:
                    return stage_id
        return None

    def _stage_hint(self, name: str) -> str:
        stages = list(self._runbook.stages)
        dashed = next((s for s in stages if s.startswith(f"{name}-")), None)
        if dashed is not None:  # `stages.go-live` reads as `stages.go - live`
            return f"write ids with `-` as stages['{dashed}'], not stages.{dashed}"
        close = difflib.get_close_matches(name, stages, n=1)
        return f"did you mean `stages.{close[0]}`?" if close else \
            f"stages: {', '.join(stages[:10])}"

    def _output_name(self, target: str, rest: tuple[str, ...], path: Sequence[Any]) -> None:
        stage = self._runbook.stages[target]
        if not rest or rest[0] not in ("outputs", "status"):
            if rest:
                self._problem(f"`stages.{target}.{rest[0]}` does not exist", path,
                              "a stage has `outputs` and `status`")
            return
        if rest[0] != "outputs" or len(rest) < 2:
            return
        known = (list(stage.inputs or {}) if stage.is_approval else stage.outputs)
        if stage.for_each is not None or known is None or rest[1] in known:
            return
        problem = missing_output(target, rest[1], known)
        self._problem(problem.message, path, problem.hint or "")



def _driver_field(pair: Sequence[Any], declared: str) -> DriverSpec | None:
    """The driver when `pair` is (driver name, the field it declares as `declared`)."""
    specs = driver_specs()
    if len(pair) != 2 or pair[0] not in specs:
        return None
    spec = specs[pair[0]]
    return spec if getattr(spec, declared) == pair[1] else None


def _in_argv(path: Sequence[Any]) -> DriverSpec | None:
    """The driver when `path` is in its argv field (`stages.X.shell.argv[i]`), also inside a
    rollback action."""
    parts = list(path)
    for i in range(len(parts) - 1):
        spec = _driver_field(parts[i:i + 2], "argv_field")
        if spec is not None:
            return spec
    return None
