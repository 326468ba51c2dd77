"""Pure parsing of what Terraform prints: `-json` UI streams, `show -json`, `output -json`.

Nothing here starts a process or touches the disk, so every function is tested
against output recorded from a real Terraform (tests/unit/data/terraform/).
Formats: https://developer.hashicorp.com/terraform/internals/machine-readable-ui
and https://developer.hashicorp.com/terraform/internals/json-format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from iacorch.model.results import ChangeSummary, ResourceChange
from iacorch.process import ProcessResult

STALE_APPROVED_PLAN = ("the plan approved at the gate no longer matches the state; nothing was "
                       "applied; re-run plan and approve again")
_INSTALL_URLS = {
    "terraform": "https://developer.hashicorp.com/terraform/install",
    "tofu": "https://opentofu.org/docs/intro/install/",
}

# Hook messages that describe one resource moving through an operation.
_PROGRESS_TYPES = {
    "apply_start": "started", "apply_progress": "progress", "apply_complete": "complete",
    "apply_errored": "errored", "provision_start": "provisioning",
    "provision_progress": "provisioning", "provision_complete": "provisioned",
    "provision_errored": "errored", "refresh_start": "refreshing",
    "refresh_complete": "refreshed",
}
_LOCK_ID = re.compile(r"^\s*ID:\s*(\S+)", re.MULTILINE)
_LOCK_FIELD = re.compile(r"^\s*(Path|Operation|Who|Created):\s*(.+?)\s*$", re.MULTILINE)
_TEXT_ERROR = re.compile(r"^[\s│]*Error: (.+?)\s*$")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One Terraform error or warning, from a `diagnostic` message or plain text."""

    severity: str
    summary: str
    detail: str = ""
    filename: str | None = None
    line: int | None = None
    column: int | None = None

    @property
    def location(self) -> str | None:
        if not self.filename:
            return None
        return f"{self.filename}:{self.line or 0}:{self.column or 0}"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Diagnostic:
        start = (data.get("range") or {}).get("start") or {}
        return cls(severity=str(data.get("severity", "error")),
                   summary=str(data.get("summary", "")).strip(),
                   detail=str(data.get("detail", "") or "").strip(),
                   filename=(data.get("range") or {}).get("filename"),
                   line=start.get("line"), column=start.get("column"))


@dataclass
class UiStream:
    """Accumulates what matters from one command's `-json` UI stream, fed line by line."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    planned: list[ResourceChange] = field(default_factory=list)
    drifted: list[ResourceChange] = field(default_factory=list)
    output_actions: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # by operation
    version: str | None = None

    def feed(self, message: Mapping[str, Any]) -> None:
        """Record one parsed UI message; unknown types are ignored, as the format asks."""
        kind = message.get("type")
        if kind == "version":
            self.version = message.get("terraform") or message.get("tofu")
        elif kind == "diagnostic":
            self.diagnostics.append(Diagnostic.from_json(message.get("diagnostic") or {}))
        elif kind in ("planned_change", "resource_drift"):
            change = message.get("change") or {}
            address = (change.get("resource") or {}).get("addr")
            if address:
                target = self.planned if kind == "planned_change" else self.drifted
                target.append(ResourceChange(address, _normal_action(change.get("action"))))
        elif kind == "change_summary":
            changes = message.get("changes") or {}
            self.summaries[str(changes.get("operation", "plan"))] = changes
        elif kind == "outputs":
            for name, value in (message.get("outputs") or {}).items():
                if isinstance(value, Mapping) and "action" in value:
                    self.output_actions[name] = str(value["action"])

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def summary(self, operation: str = "plan") -> ChangeSummary:
        """Counts from the stream's `change_summary` plus the planned resource changes."""
        changes = self.summaries.get(operation) or {}
        return ChangeSummary(add=int(changes.get("add", 0)), change=int(changes.get("change", 0)),
                             destroy=int(changes.get("remove", 0)),
                             imported=int(changes.get("import", 0)),
                             resources=tuple(self.planned))

    @property
    def changed_outputs(self) -> dict[str, str]:
        return {name: action for name, action in self.output_actions.items()
                if action not in ("noop", "no-op")}


def parse_ui_line(line: str) -> dict[str, Any] | None:
    """A UI message from one line of a `-json` stream, or None for any other text."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "type" in message else None


def human_lines(message: Mapping[str, Any]) -> list[str]:
    """What a person should read for one UI message (several lines for a diagnostic)."""
    if message.get("type") == "version":
        return [str(message.get("@message", ""))]
    lines = str(message.get("@message", "")).strip("\n").splitlines()
    if message.get("type") == "diagnostic":
        diagnostic = Diagnostic.from_json(message.get("diagnostic") or {})
        if diagnostic.location:
            lines.append(f"  on {diagnostic.location}")
        lines += [f"  {line}" if line else "" for line in diagnostic.detail.splitlines()]
    return lines


def progress_event(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """A resource-level progress event for the console, or None for other messages."""
    kind = str(message.get("type", ""))
    if kind in _PROGRESS_TYPES:
        hook = message.get("hook") or {}
        event: dict[str, Any] = {
            "kind": "resource", "address": (hook.get("resource") or {}).get("addr"),
            "status": _PROGRESS_TYPES[kind]}
        if hook.get("action"):
            event["action"] = _normal_action(hook["action"])
        if hook.get("provisioner"):
            event["provisioner"] = hook["provisioner"]
        if "elapsed_seconds" in hook:
            event["elapsed"] = hook["elapsed_seconds"]
        return event
    if kind == "change_summary":
        changes = message.get("changes") or {}
        return {"kind": "summary", "operation": changes.get("operation"),
                "add": changes.get("add", 0), "change": changes.get("change", 0),
                "destroy": changes.get("remove", 0)}
    return None


def text_diagnostics(lines: Iterable[str]) -> list[Diagnostic]:
    """Errors from plain-text output (`init`, `workspace`), where `-json` is not used."""
    found = []
    for line in lines:
        match = _TEXT_ERROR.match(line)
        if match:
            found.append(Diagnostic("error", match.group(1)))
    return found


def extract_json_document(lines: Iterable[str]) -> Any:
    """The one JSON document a command printed, ignoring stray text around it.

    Lines are joined without separators: newlines are insignificant between JSON
    tokens and impossible inside strings, and the process runner may cut a very
    long line (a big `show -json`) into pieces. Warnings Terraform writes to
    stderr (an unreadable CLI config file, say) arrive as whole lines around it.
    """
    collected = [line.rstrip("\r\n") for line in lines]
    try:
        return json.loads("".join(collected))
    except ValueError:
        pass
    for start, line in enumerate(collected):
        if not line.startswith(("{", "[")):
            continue
        closer = "}" if line.startswith("{") else "]"
        for end in range(len(collected) - 1, start - 1, -1):
            if collected[end].rstrip().endswith(closer):
                try:
                    return json.loads("".join(collected[start:end + 1]))
                except ValueError:
                    break
    raise ValueError("no JSON document found in the command's output")


def plan_changes(plan: Mapping[str, Any]) -> ChangeSummary:
    """Change counts, the resource list and the changed outputs from `show -json <planfile>`.

    An output that would change is a change, as `terraform plan -detailed-exitcode` says
    with exit 2: a module of only locals and outputs changes nothing else. So is a change
    to what the state tracks that leaves every attribute as it is: an import (`importing`),
    a move (`previous_address`) and a forget (a `removed` block keeping the object).
    """
    add = change = destroy = unchanged = imported = moved = forgotten = 0
    resources = []
    for entry in plan.get("resource_changes") or []:
        planned = entry.get("change") or {}
        actions = tuple(planned.get("actions") or ())
        action = _plan_action(actions)
        if action == "read":
            continue
        address = str(entry.get("address"))
        importing = bool(planned.get("importing"))
        moving = entry.get("previous_address") not in (None, address)
        if "forget" in actions:
            forgotten += 1
            action = "create" if "create" in actions else "forget"
        imported += importing
        moved += moving
        if action == "no-op":
            if importing or moving:
                resources.append(ResourceChange(address, "import" if importing else "move"))
            else:
                unchanged += 1
            continue
        add += action in ("create", "replace")
        change += action == "update"
        destroy += action in ("delete", "replace")
        resources.append(ResourceChange(address, action))
    outputs = tuple(sorted(name for name, entry in (plan.get("output_changes") or {}).items()
                           if _plan_action(tuple(entry.get("actions") or ())) != "no-op"))
    return ChangeSummary(add=add, change=change, destroy=destroy, unchanged=unchanged,
                         resources=tuple(resources), outputs=outputs, imported=imported,
                         moved=moved, forgotten=forgotten)


@dataclass(frozen=True, slots=True)
class PlannedOutputs:
    """The outputs a stack will have after applying a plan."""

    values: dict[str, Any]            # known now
    unknown: frozenset[str]           # known only after apply, in whole or in part
    sensitive: frozenset[str]         # of `values`


def planned_outputs(plan: Mapping[str, Any]) -> PlannedOutputs:
    """The root outputs of `show -json <planfile>` as they will be after the apply.

    From `output_changes`: `after` is the planned value and `after_unknown` says which
    parts of it only the apply will tell (true, or a structure with true at those
    parts); an output with any unknown part counts as unknown. A deleted output will
    not exist. https://developer.hashicorp.com/terraform/internals/json-format#change-representation
    """
    values: dict[str, Any] = {}
    unknown: set[str] = set()
    sensitive: set[str] = set()
    for name, entry in (plan.get("output_changes") or {}).items():
        if tuple(entry.get("actions") or ()) == ("delete",):
            continue
        if _has_true(entry.get("after_unknown")):
            unknown.add(name)
            continue
        values[name] = entry.get("after")
        if _has_true(entry.get("after_sensitive")):
            sensitive.add(name)
    return PlannedOutputs(values, frozenset(unknown), frozenset(sensitive))


def prior_state_has_resources(plan: Mapping[str, Any]) -> bool:
    """Whether the state the plan starts from holds any managed resource."""
    values = (plan.get("prior_state") or {}).get("values") or {}
    return _module_has_resources(values.get("root_module") or {})


def parse_outputs(document: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """`output -json` -> (name -> value, names of sensitive outputs)."""
    values = {name: entry.get("value") for name, entry in document.items()
              if isinstance(entry, Mapping)}
    sensitive = frozenset(name for name, entry in document.items()
                          if isinstance(entry, Mapping) and entry.get("sensitive"))
    return values, sensitive


def secret_strings(value: Any) -> list[str]:
    """Every form in which a sensitive value may show up later: itself and its leaves."""
    if isinstance(value, str):
        return [value]
    found = [json.dumps(value, sort_keys=True), json.dumps(value)]
    if isinstance(value, Mapping):
        for item in value.values():
            found += secret_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += secret_strings(item)
    elif value is not None and not isinstance(value, bool):
        found.append(str(value))
    return found


@dataclass(frozen=True, slots=True)
class LockInfo:
    """The holder of a Terraform state lock, as printed in "Error acquiring the state lock"."""

    lock_id: str | None
    fields: Mapping[str, str]


def lock_info(diagnostics: Iterable[Diagnostic]) -> LockInfo | None:
    """The lock holder when one of the errors is Terraform's state-lock error."""
    for diagnostic in diagnostics:
        if "state lock" not in diagnostic.summary.lower():
            continue
        match = _LOCK_ID.search(diagnostic.detail)
        fields = dict(_LOCK_FIELD.findall(diagnostic.detail))
        return LockInfo(match.group(1) if match else None, fields)
    return None


def is_stale_plan(diagnostics: Iterable[Diagnostic]) -> bool:
    return any("saved plan is stale" in d.summary.lower() for d in diagnostics)


def _has_true(marks: Any) -> bool:
    """Whether a `after_unknown`/`after_sensitive` structure marks any part."""
    if isinstance(marks, Mapping):
        return any(_has_true(v) for v in marks.values())
    if isinstance(marks, list):
        return any(_has_true(v) for v in marks)
    return marks is True


def _module_has_resources(module: Mapping[str, Any]) -> bool:
    if any(r.get("mode", "managed") == "managed" for r in module.get("resources") or []):
        return True
    return any(_module_has_resources(child) for child in module.get("child_modules") or [])


def _plan_action(actions: tuple[str, ...]) -> str:
    if len(actions) == 2 and set(actions) == {"create", "delete"}:
        return "replace"
    if not actions:
        return "no-op"
    return actions[0]


def _normal_action(action: object) -> str:
    return "no-op" if action in ("noop", None) else str(action)


@dataclass(frozen=True, slots=True)
class FailedStep:
    """Where a command failed: what the error message and hint must name."""

    stage: str
    step: str                          # "init", "plan", "apply", ...
    binary: str
    stack_dir: str
    workspace: str | None = None
    timeout: float | None = None
    approved_plan: bool = False        # applying a plan approved at a gate


@dataclass(frozen=True, slots=True)
class Explanation:
    error: str
    hint: str
    interrupted: bool = False


def explain_failure(where: FailedStep, result: ProcessResult,
                    diagnostics: Sequence[Diagnostic]) -> Explanation:
    """The most useful one-line error and hint for a failed Terraform command."""
    stage, binary = where.stage, where.binary
    if result.exit_code is None and not (result.interrupted or result.timed_out):
        return Explanation(
            f"stage {stage}: {binary} not found on PATH; install it from {install_url(binary)}",
            result.start_error or f"or set `binary:` in stage {stage} to the program's full path")
    if result.timed_out:
        return Explanation(
            f"stage {stage}: terraform {where.step} timed out after {where.timeout or 0:g}s",
            "raise the stage's `timeout:`; Terraform was sent SIGINT first so it could release "
            "its state lock")
    if result.interrupted:
        return interrupted(where)
    lock = lock_info(diagnostics)
    if lock is not None:
        holder = ", ".join(f"{k.lower()} {v}" for k, v in lock.fields.items())
        workspace = f" (workspace {where.workspace})" if where.workspace else ""
        return Explanation(
            f"stage {stage}: the Terraform state is locked by another operation"
            + (f" ({holder})" if holder else ""),
            f"wait for that operation to end; if it died, run `{binary} force-unlock "
            f"{lock.lock_id or '<LOCK ID>'}` in {where.stack_dir}{workspace}")
    if where.approved_plan and is_stale_plan(diagnostics):
        return Explanation(f"stage {stage}: {STALE_APPROVED_PLAN}",
                           "run `iacorch plan` again and approve the new plan")
    errors = [d for d in diagnostics if d.severity == "error"] or list(diagnostics)
    what = errors[0].summary if errors else f"exited with code {result.exit_code}"
    at = f" at {errors[0].location}" if errors and errors[0].location else ""
    hints = {
        "init": f"check the backend settings and provider requirements; run `{binary} init` "
                f"in {where.stack_dir} to see every error",
        "workspace select": "check the workspace name: letters, digits, - and _ only",
    }
    hint = hints.get(where.step, f"the stage log has Terraform's full diagnostics; run "
                                 f"`{binary} {where.step}` in {where.stack_dir} to reproduce")
    return Explanation(f"stage {stage}: terraform {where.step} failed{at}: {what}", hint)


def interrupted(where: FailedStep) -> Explanation:
    return Explanation(
        f"stage {where.stage}: interrupted during terraform {where.step}",
        f"resume the run; if Terraform then reports a held state lock, run "
        f"`{where.binary} force-unlock <ID>` in {where.stack_dir}", interrupted=True)


def install_url(binary: str) -> str:
    """Where to get the tool a stage names."""
    return _INSTALL_URLS.get(PurePath(binary).name, _INSTALL_URLS["terraform"])


def drift_findings(refresh: UiStream, config: UiStream) -> list[dict[str, str]]:
    """Per-address differences: "refresh" when reality moved, "config" when the code did.

    A resource changed outside Terraform also shows up as a planned change in the
    normal plan; it is reported once, as reality having moved. A refresh-only plan also
    evaluates outputs with the current code and inputs: when no resource moved but the
    code would change some, its output changes are put down to the code too.
    """
    # a refresh-only plan reports a `moved` block as drift too; a move is the code's doing
    findings = [{"address": c.address, "action": c.action, "source": "refresh"}
                for c in refresh.drifted if c.action != "move"]
    code_moved = not findings and any(c.action != "no-op" for c in config.planned)
    findings += [{"address": f"output.{name}", "action": action,
                  "source": "config" if code_moved else "refresh"}
                 for name, action in refresh.changed_outputs.items()]
    seen = {f["address"] for f in findings}
    findings += [{"address": c.address, "action": c.action, "source": "config"}
                 for c in config.planned if c.action != "no-op" and c.address not in seen]
    findings += [{"address": f"output.{name}", "action": action, "source": "config"}
                 for name, action in config.changed_outputs.items()
                 if f"output.{name}" not in seen]
    return findings
