"""Pulumi engine events and change summaries, as log lines and iacorch's shapes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from iacorch.drivers.base import StageContext
from iacorch.model.results import ChangeSummary, ResourceChange

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_QUIET_OPS = frozenset({"same", "read", "refresh"})
_REPLACE_STEPS = {"create-replacement": "replace", "delete-replaced": "replace"}
_PROGRESS_STATUS = {"started": "started", "done": "complete", "failed": "errored"}


def op_name(value: Any) -> str:
    """An OpType or its text (summary keys come back as plain strings) -> the text."""
    return str(getattr(value, "value", value))


def change_summary(counts: Mapping[Any, int] | None,
                   resources: tuple[ResourceChange, ...] = ()) -> ChangeSummary:
    """Pulumi's op counts -> add/change/destroy/unchanged; a replace adds and destroys."""
    ops = {op_name(k): int(v) for k, v in (counts or {}).items()}
    return ChangeSummary(
        add=ops.get("create", 0) + ops.get("import", 0) + ops.get("replace", 0),
        change=ops.get("update", 0),
        destroy=ops.get("delete", 0) + ops.get("replace", 0),
        unchanged=ops.get("same", 0), resources=resources)


class EngineEventLog:
    """Engine events -> one log line per resource event, progress events, and a record."""

    def __init__(self, ctx: StageContext, total: int | None = None) -> None:
        self._ctx, self._total = ctx, total
        self.steps: dict[str, tuple[str, tuple[str, ...]]] = {}  # urn -> op, changed keys
        self.errors: list[str] = []
        self.summary: dict[str, int] | None = None
        self.completed = 0

    def __call__(self, event: Any) -> None:
        if event.summary_event is not None:
            self.summary = {op_name(k): v for k, v in event.summary_event.resource_changes.items()}
        diagnostic = event.diagnostic_event
        if diagnostic is not None and diagnostic.severity == "error":
            self.errors.append(self._ctx.masker.mask(ANSI.sub("", diagnostic.message).strip()))
        for step, state in ((event.resource_pre_event, "started"),
                            (event.res_outputs_event, "done"),
                            (event.res_op_failed_event, "failed")):
            if step is not None:
                self._step(step.metadata, state)

    def _step(self, meta: Any, state: str) -> None:
        op = _step_op(meta, finished=state != "started")
        keys = tuple(sorted({*(meta.diffs or ()), *(meta.detailed_diff or {})}))
        if state == "started":
            self.steps.setdefault(meta.urn, (op, keys))
        else:
            self.steps[meta.urn] = (op, keys)
        if op in _QUIET_OPS:
            return
        if state != "started":
            self.completed += 1
        name = self._ctx.masker.mask(meta.urn.rsplit("::", 1)[-1])
        self._ctx.log(f"{meta.type} {name}: {op}" + ("..." if state == "started" else f" {state}"))
        # The shape the Terraform driver's resource events have, plus Pulumi's type and name.
        self._ctx.on_progress({"kind": "resource", "address": self._ctx.masker.mask(meta.urn),
                               "status": _PROGRESS_STATUS[state], "action": op,
                               "type": meta.type, "name": name,
                               "completed": self.completed, "total": self._total})

    def changes(self) -> tuple[ResourceChange, ...]:
        """Resources the operation changes (or would change), in event order."""
        return tuple(ResourceChange(self._ctx.masker.mask(urn), op)
                     for urn, (op, _) in self.steps.items() if op not in _QUIET_OPS)

    def record(self) -> list[list[Any]]:
        """The changes as sorted [urn, op, changed keys]: stable across identical previews."""
        return sorted([urn, op, list(keys)] for urn, (op, keys) in self.steps.items()
                      if op not in _QUIET_OPS)


def _step_op(meta: Any, *, finished: bool) -> str:
    """The step's op; a finished refresh step says what reality did to the resource."""
    op = _REPLACE_STEPS.get(op_name(meta.op), op_name(meta.op))
    if op != "refresh" or not finished:
        return op
    if meta.old is not None and meta.new is None:
        return "delete"
    drifted = meta.old is not None and meta.new is not None and (
        meta.old.outputs != meta.new.outputs)
    return "update" if drifted or meta.diffs or meta.detailed_diff else "refresh"
