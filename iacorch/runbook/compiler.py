"""The compiler: a runbook document and its vars become a checked `Plan`.

Every problem is collected with its source location, so `validate` reports
all of them at once; the graph is built only once the stages make sense.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from iacorch.errors import Location, Problem, RunbookError
from iacorch.model.plan import (
    ApprovalGate,
    Plan,
    PlannedStage,
    RetryPolicy,
    topological_layers,
)
from iacorch.model.registry import driver_spec, driver_specs, load_plugins
from iacorch.model.results import SecretRef
from iacorch.model.runbook import MAX_FOR_EACH, STAGE_ID, Runbook, Stage, runbook_model
from iacorch.model.status import OnTimeout, StageKind
from iacorch.project import project_root
from iacorch.runbook.checks import Finding, check_env, check_paths, check_shape
from iacorch.runbook.compile_time import NOT_RENDERED, CompileTimeValues
from iacorch.runbook.references import ReferenceChecker
from iacorch.runbook.schema_errors import describe
from iacorch.runbook.sections import check_drift, check_schedules
from iacorch.runbook.source import Document, gc_paused, load_document
from iacorch.runbook.templating import (
    TemplateProblem,
    Templates,
    did_you_mean,
    is_template,
)
from iacorch.runbook.variables import check_defaults, load_var_file, resolve_vars

_MAX_ITEM_PROBLEMS = 10
_UNDO_KEYS = ("rollback", "destroy")  # actions rendered only when undoing: no dependencies
# Stage keys rendered when the runbook compiles (for_each, durations) or never (mock_outputs).
_NOT_RENDERED_AT_RUN_TIME = ("for_each", "mock_outputs", "timeout", "retries")


def compile_runbook(path: str | Path, *, cli_vars: Mapping[str, str] | None = None,
                    var_files: Sequence[str] = (), templates: Templates | None = None) -> Plan:
    """Load, validate and compile a runbook file; raises RunbookError with every problem."""
    document = load_document(path)
    file_vars: dict[str, Any] = {}
    origins: dict[str, Location] = {}
    for var_file in var_files:
        values, locations = load_var_file(var_file)
        file_vars.update(values)
        origins.update(locations)
    return compile_document(document, cli_vars=cli_vars, file_vars=file_vars,
                            file_origins=origins, templates=templates)


def validate_model(document: Document) -> Runbook:
    """The document against the schema; every schema problem at once."""
    from pydantic import ValidationError

    from iacorch.runbook.schema_errors import schema_problems

    if not isinstance(document.data, dict):
        raise RunbookError.single("a runbook is a mapping of keys such as `version` and `stages`",
                                  document.locate(()), "start with `version: 1`, `name:` and "
                                  "`stages:`")
    if _names_unknown_keys(document.data):
        load_plugins()   # one of them may be a plugin's driver
    model = runbook_model()
    try:
        return model.model_validate(document.data)
    except ValidationError as exc:
        raise RunbookError(schema_problems(document, exc, model)) from None


def _names_unknown_keys(data: Mapping[str, Any]) -> bool:
    """Whether a stage (or its undo) has a key that is neither a stage key nor a built-in
    driver's: only then are the installed packages searched for plugin drivers."""
    known = set(Stage.model_fields) | set(driver_specs())
    for section in ("stages", "finally"):
        stages = data.get(section)
        for stage in stages.values() if isinstance(stages, dict) else ():
            if not isinstance(stage, dict):
                continue
            keys = set(stage)
            for undo in ("rollback", "destroy"):
                if isinstance(stage.get(undo), dict):
                    keys |= set(stage[undo])
            if keys - known:
                return True
    return False


def compile_document(document: Document, *, cli_vars: Mapping[str, str] | None = None,
                     file_vars: Mapping[str, Any] | None = None,
                     file_origins: Mapping[str, Location] | None = None,
                     templates: Templates | None = None) -> Plan:
    """Compile an already loaded document (see `compile_runbook`)."""
    runbook = validate_model(document)
    bad_defaults = [_locate(document, finding) for finding in check_defaults(runbook.vars)]
    if bad_defaults:
        raise RunbookError(bad_defaults)
    values = resolve_vars(runbook.vars, cli_vars=cli_vars, file_vars=file_vars,
                          file_origins=file_origins,
                          declared_at=lambda name: document.locate(("vars", name), key=True))
    with gc_paused():
        return _Compiler(document, runbook, values, templates or Templates()).compile()


def _locate(document: Document, finding: Finding) -> Problem:
    return Problem(finding.message, document.locate(finding.path, key=finding.key),
                   finding.hint)


class _Compiler:
    def __init__(self, document: Document, runbook: Runbook, values: dict[str, Any],
                 templates: Templates) -> None:
        self.document = document
        self.runbook = runbook
        self.vars = values
        self.templates = templates
        self.problems: list[Problem] = []
        self.root = Path(document.path).resolve().parent
        self.project = project_root(Path(document.path))
        self.refs = ReferenceChecker(runbook, templates, self.problem)
        self.now = CompileTimeValues(self.refs, templates, values, self.problem)
        self.default_timeout: float | None = None
        self.default_retry = RetryPolicy()

    def problem(self, message: str, path: Sequence[Any], hint: str, *,
                key: bool = False) -> None:
        self.problems.append(Problem(message, self.document.locate(path, key=key), hint))

    def sorted_problems(self) -> list[Problem]:
        """In the order a person reads the file, whichever check found them."""
        return sorted(self.problems, key=lambda p: (p.location.line, p.location.column)
                      if p.location else (0, 0))

    def report(self, findings: Iterable[Finding]) -> None:
        self.problems.extend(_locate(self.document, finding) for finding in findings)

    def compile(self) -> Plan:
        sections = {"stages": self.runbook.stages, "finally": self.runbook.finally_}
        for section, stages in sections.items():
            for stage_id, stage in stages.items():
                self._check_stage(section, stage_id, stage)
        self.report(check_schedules(self.runbook))
        self.report(check_drift(self.runbook))
        self.refs.notify()
        defaults = self.runbook.defaults
        self.default_timeout = self.now.duration(defaults.timeout, ("defaults", "timeout"))
        self.default_retry = self.now.retry(defaults.retries, ("defaults", "retries"),
                                            RetryPolicy())
        deadline = self.now.duration(self.runbook.deadline, ("deadline",))
        for stage_id in self.runbook.finally_:
            if stage_id in self.runbook.stages:
                self.problem(f"stage id `{stage_id}` is used in both `stages` and `finally`",
                             ("finally", stage_id), "give one of them another name", key=True)
        expansions = {sid: self._expand(sid, st) for sid, st in self.runbook.stages.items()}
        forward = self._plan_stages("stages", self.runbook.stages, expansions)
        finals = self._plan_stages("finally", self.runbook.finally_, expansions)
        if self.problems:
            raise RunbookError(self.sorted_problems())
        order, layers = self._order(forward)
        ordered = {sid: forward[sid] for sid in order}
        workspace = self._workspace()
        if self.problems:
            raise RunbookError(self.sorted_problems())
        return Plan(
            name=self.runbook.name, path=Path(self.document.path), root=self.root,
            vars=self.vars, secret_names=frozenset(self.runbook.secrets), stages=ordered,
            finally_stages=finals, layers=layers,
            expansions={sid: tuple(k for k, _ in items) for sid, items in expansions.items()},
            plan_hash=_plan_hash(self.runbook, self.vars, ordered, finals),
            concurrency=self.runbook.concurrency, on_failure=self.runbook.on_failure,
            deadline=deadline, workspace=workspace, runbook=self.runbook,
            secret_locations={name: self.document.locate(("secrets", name), key=True)
                              for name in self.runbook.secrets},
            secret_refs=tuple(SecretRef(name, spec.model_dump(exclude_none=True,
                                                              exclude={"description"}))
                              for name, spec in self.runbook.secrets.items()))

    # -- per-stage shape -------------------------------------------------
    def _check_stage(self, section: str, stage_id: str, stage: Stage) -> None:
        self.report(check_shape(section, stage_id, stage))
        actions: list[tuple[tuple[str, ...], str | None]] = [
            ((section, stage_id), stage.action_type)]
        for key in _UNDO_KEYS:
            undo = getattr(stage, key)
            if undo is not None and not isinstance(undo, str):
                actions.append(((section, stage_id, key), undo.action_type))
        for where, action in actions:
            if action is None or stage.is_approval:
                continue
            action_path = (*where, action)
            settings = self._raw(action_path)
            self.report(check_env(action_path, settings.get("env"), self.runbook.allow_env))
            self.report(check_paths(action_path, action, settings, self.root, self.project))

    def _raw(self, path: Sequence[Any]) -> Any:
        value: Any = self.document.data
        for part in path:
            value = value[part]
        return value

    # -- for_each ---------------------------------------------------------
    def _expand(self, stage_id: str, stage: Stage) -> list[tuple[str, Any]]:
        """[(expanded id, item)]; a stage without for_each is [(id, None)]."""
        if stage.for_each is None:
            return [(stage_id, None)]
        where = ("stages", stage_id, "for_each")
        literal = not isinstance(stage.for_each, str) or not is_template(stage.for_each)
        items = self._render_for_each(stage.for_each, where) \
            if isinstance(stage.for_each, str) and not literal else stage.for_each
        if isinstance(items, dict):
            pairs = [(str(k), {"key": k, "value": v}, k) for k, v in items.items()]
        elif isinstance(items, list):
            pairs = [(_item_key(item, index), item, index) for index, item in enumerate(items)]
        else:
            if items is not None:
                self.problem(f"`for_each` must give a list or a mapping, got {describe(items)}",
                             where, 'give it a list, e.g. `for_each: [eu, us]`, or a list var: '
                             '`for_each: "{{ vars.regions }}"`')
            return [(stage_id, None)]
        if len(pairs) > MAX_FOR_EACH:
            self.problem(f"`for_each` gives {len(pairs):,} items; a stage expands to at most "
                         f"{MAX_FOR_EACH:,}", where,
                         "split the list across stages, or loop inside the action")
            return [(stage_id, None)]
        expanded: dict[str, Any] = {}
        before, repeated = len(self.problems), set()
        for key, item, index in pairs:
            at = (*where, index) if literal else where
            if len(self.problems) >= _MAX_ITEM_PROBLEMS + before:
                break  # enough to show what is wrong with these items
            if not STAGE_ID.match(key):
                self.problem(f"for_each item {key!r} cannot name a stage", at,
                             "items must be short names: letters, digits, `_`, `-`; give "
                             "mapping items a `name:`", key=literal and isinstance(items, dict))
            elif key in expanded:
                if key not in repeated:
                    self.problem(f"`for_each` gives the item `{key}` twice", at,
                                 "remove the repeated item; each item names one stage, like "
                                 f"`{stage_id}[{key}]`")
                repeated.add(key)
            else:
                expanded[key] = item
        return [(f"{stage_id}[{key}]", item) for key, item in expanded.items()]

    def _render_for_each(self, source: str, where: tuple[Any, ...]) -> Any:
        """The items of a templated for_each, or None after reporting why there are none."""
        items = self.now.render(source, where, "`for_each` is expanded",
                                "compute the list in a var, or pass it with --var")
        return None if items is NOT_RENDERED else items

    # -- references and dependencies -------------------------------------
    def _plan_stages(self, section: str, stages: Mapping[str, Stage],
                     expansions: Mapping[str, list[tuple[str, Any]]]) -> dict[str, PlannedStage]:
        planned: dict[str, PlannedStage] = {}
        for stage_id, stage in stages.items():
            raw = self.document.data[section][stage_id]
            deps, places = self._dependencies(section, stage_id, stage, raw, expansions)
            timeout = self.now.duration(stage.timeout, (section, stage_id, "timeout"))
            retry = self.now.retry(stage.retries, (section, stage_id, "retries"),
                                   self.default_retry)
            for expanded_id, item in expansions.get(stage_id, [(stage_id, None)]):
                planned[expanded_id] = self._planned(section, stage_id, expanded_id, item,
                                                     stage, raw, deps, places, (timeout, retry))
        return planned

    def _dependencies(self, section: str, stage_id: str, stage: Stage, raw: Mapping[str, Any],
                      expansions: Mapping[str, list[tuple[str, Any]]]
                      ) -> tuple[tuple[str, ...], dict[str, Location]]:
        """The expanded ids the stage waits for, and where its stage references are written."""
        needs: list[str] = []
        places: dict[str, Location] = {}
        for index, need in enumerate(stage.needs):
            if need not in self.runbook.stages:
                self.problem(f"stage `{stage_id}` needs `{need}`, which is not a stage",
                             (section, stage_id, "needs", index),
                             did_you_mean(need, list(self.runbook.stages))
                             or f"stages: {', '.join(list(self.runbook.stages)[:10])}")
            elif need == stage_id:
                self.problem(f"stage `{stage_id}` needs itself",
                             (section, stage_id, "needs", index),
                             f"remove `{stage_id}` from its own `needs`")
            else:
                needs.append(need)
        for path, source in _template_strings(raw, (section, stage_id)):
            refs = self.refs.template(source, path)
            if refs is None:
                continue
            self.refs.script_secrets(refs, path)
            undoing = len(path) > 2 and path[2] in _UNDO_KEYS
            for ref in sorted(refs.items, key=lambda r: (r.root, r.path)):  # a stable hash
                target = self.refs.stage_reference(section, stage_id, stage, ref, path)
                if target and section == "stages" and not undoing:
                    needs.append(target)
                if target and len(ref.path) > 2:
                    places.setdefault(".".join(ref.path), self.document.locate(path))
        ordered = dict.fromkeys(needs)
        return tuple(e for need in ordered
                     for e, _ in expansions.get(need, [(need, None)])), places

    def _planned(self, section: str, base_id: str, stage_id: str, item: Any, stage: Stage,
                 raw: Mapping[str, Any], deps: tuple[str, ...],
                 places: Mapping[str, Location],
                 timing: tuple[float | None, RetryPolicy]) -> PlannedStage:
        action_type = stage.action_type
        timeout, retry = timing
        approval = None
        if stage.is_approval:
            approval = ApprovalGate(
                approvers=tuple(stage.approvers or ()), require=stage.require or 1,
                allow_self_approval=(stage.allow_self_approval if stage.allow_self_approval
                                     is not None else not stage.approvers),
                message=stage.message,
                inputs={k: v.model_dump() for k, v in (stage.inputs or {}).items()},
                timeout=timeout, on_timeout=stage.on_timeout or OnTimeout.REJECT)
        rollback: Any = stage.rollback if isinstance(stage.rollback, str) else dict(
            raw["rollback"])
        destroy: Any = stage.destroy if stage.destroy is None or isinstance(
            stage.destroy, str) else dict(raw["destroy"])
        return PlannedStage(
            id=stage_id, base_id=base_id,
            kind=StageKind.FINALLY if section == "finally" else StageKind(
                stage.kind or StageKind.DEPLOY),  # a missing kind is already a problem
            action_type=action_type,
            action=raw[action_type] if action_type else {},
            needs=deps, location=self.document.locate((section, base_id), key=True),
            item=item, item_key=stage_id[len(base_id) + 1:-1] if item is not None else None,
            when=stage.when, timeout=timeout if stage.timeout is not None
            else self.default_timeout,
            retry=retry, on_failure=stage.on_failure, rollback=rollback, destroy=destroy,
            idempotent=_idempotent(stage), approval=approval,
            is_finally=section == "finally",
            mock_outputs=stage.mock_outputs, reference_locations=places,
            dry_run=stage.dry_run,
            pool=None if stage.is_approval else stage.pool or self.runbook.pool)

    # -- graph --------------------------------------------------------------
    def _order(self, stages: Mapping[str, PlannedStage]
               ) -> tuple[list[str], tuple[tuple[str, ...], ...]]:
        """A topological order and its layers (each stage in the first layer it can run in)."""
        from graphlib import CycleError

        try:
            layers = topological_layers({sid: st.needs for sid, st in stages.items()})
        except CycleError as exc:
            cycle = exc.args[1][:-1]  # graphlib repeats the first stage at the end
            start = cycle.index(min(cycle, key=list(stages).index))
            cycle = cycle[start:] + cycle[:start]
            shown = " -> ".join([*cycle, cycle[0]])
            self.problems.append(Problem(f"the stages form a cycle: {shown}",
                                         stages[cycle[0]].location,
                                         "remove one of these `needs` or stage references"))
            return list(stages), ()
        return [sid for layer in layers for sid in layer], layers

    def _workspace(self) -> str:
        source = self.runbook.workspace
        if source is None:
            env = self.vars.get("env")
            return str(env) if isinstance(env, str | int) and env != "" else "default"
        try:
            return str(self.templates.render(source, {"vars": self.vars}))
        except TemplateProblem as exc:
            self.problem(f"`workspace` cannot be computed: {exc.message}", ("workspace",),
                         exc.hint or "the workspace can only use vars")
            return "default"


def _template_strings(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    stack: list[tuple[tuple[Any, ...], Any]] = [(path, value)]
    while stack:
        where, current = stack.pop()
        if isinstance(current, str):
            if is_template(current):
                yield where, current
        elif isinstance(current, dict):
            stack.extend(((*where, k), v) for k, v in current.items()
                         if not (len(where) == 2 and k in _NOT_RENDERED_AT_RUN_TIME))
        elif isinstance(current, list):
            stack.extend(((*where, i), v) for i, v in enumerate(current))


def _item_key(item: Any, index: int) -> str:
    if isinstance(item, str | int) and not isinstance(item, bool):
        return str(item)
    if isinstance(item, dict):
        for key in ("name", "id", "key"):
            if isinstance(item.get(key), str | int):
                return str(item[key])
    return str(index)


def _idempotent(stage: Stage) -> bool:
    """The stage's `idempotent:`, else what its driver declares (a gate may run again)."""
    if stage.idempotent is not None:
        return stage.idempotent
    if stage.action_type is None:
        return True
    return driver_spec(stage.action_type).is_idempotent(stage.action)


def _plan_hash(runbook: Runbook, values: Mapping[str, Any], stages: Mapping[str, PlannedStage],
               finals: Mapping[str, PlannedStage]) -> str:
    """Same runbook content + vars -> same hash; comments and key order do not count.

    What an apply does counts; `destroy` and `dry_run` do not, so editing them does not
    block a `resume`.
    """

    def describe(stage: PlannedStage) -> dict[str, Any]:
        return {"id": stage.id, "kind": stage.kind, "action_type": stage.action_type,
                "action": stage.action, "needs": stage.needs, "when": stage.when,
                "item": stage.item, "timeout": stage.timeout, "retry": stage.retry,
                "rollback": stage.rollback, "on_failure": stage.on_failure,
                "idempotent": stage.idempotent, "approval": stage.approval}

    payload = {
        "name": runbook.name, "vars": values, "on_failure": runbook.on_failure,
        "secrets": {k: v.model_dump() for k, v in runbook.secrets.items()},
        "stages": [describe(s) for s in stages.values()],
        "finally": [describe(s) for s in finals.values()],
    }
    text = json.dumps(payload, sort_keys=True, default=_jsonable, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)
