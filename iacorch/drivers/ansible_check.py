"""Ansible's check mode as iacorch runs it: a dry run that cannot change anything, the
diffs it predicts, and the tasks it could not check.

`dry_run_env` makes ansible-playbook use the `iacorch_dry_run` stdout callback
(ansible_callbacks/iacorch_dry_run.py): awx_display's job events, with every task held in
check mode, so a task with `check_mode: false` is predicted (or skipped) instead of run,
and reported with an `iacorch_not_checkable` event. The rest is pure: a task result's
diff as text, and the lines shown under its task line.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iacorch.model.results import diff_preview

CALLBACK_DIR = Path(__file__).parent / "ansible_callbacks"
DRY_RUN_CALLBACK = "iacorch_dry_run"
NOT_CHECKABLE = "iacorch_not_checkable"   # the event the callback sends for such a task
DIFF_LIMIT = 4000                         # characters of one task's diff kept in results


def dry_run_env(env: Mapping[str, str]) -> dict[str, str]:
    """ansible-runner's prepared environment with iacorch's dry-run callback as stdout.

    The callback extends awx_display, which it finds on the callback path runner set.
    """
    prepared = dict(env)
    paths = [p for p in prepared.get("ANSIBLE_CALLBACK_PLUGINS", "").split(os.pathsep) if p]
    prepared["ANSIBLE_CALLBACK_PLUGINS"] = os.pathsep.join([str(CALLBACK_DIR), *paths])
    prepared["ANSIBLE_STDOUT_CALLBACK"] = DRY_RUN_CALLBACK
    return prepared


def render_diff(diff: Any, limit: int = DIFF_LIMIT) -> str:
    """A module's `diff` result (one or a list of before/after dicts) as unified diff text."""
    chunks: list[str] = []
    for entry in diff if isinstance(diff, list) else [diff]:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("prepared"):
            chunks.append(str(entry["prepared"]).strip())
        if "before" in entry or "after" in entry:
            before, after = _diff_side(entry.get("before")), _diff_side(entry.get("after"))
            chunks.extend(difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True),
                fromfile=_header("before", entry.get("before_header")),
                tofile=_header("after", entry.get("after_header"))))
    return _cut("".join(c if c.endswith("\n") else c + "\n" for c in chunks), limit)


def result_diff(res: Mapping[str, Any], limit: int = DIFF_LIMIT) -> str:
    """The diff a task result carries: its own, or that of each changed loop item."""
    if res.get("diff"):
        return render_diff(res["diff"], limit)
    parts = []
    for item in res.get("results") or ():
        if isinstance(item, Mapping) and item.get("changed") and item.get("diff"):
            label = item.get("_ansible_item_label", item.get("item"))
            parts.append(f"item {label}:\n{render_diff(item['diff'], limit)}")
    return _cut("".join(parts), limit)


def not_checkable(event: Mapping[str, Any]) -> dict[str, str] | None:
    """Host, task and the `check_mode` it asked for, from an `iacorch_not_checkable` event."""
    if event.get("event") != NOT_CHECKABLE:
        return None
    data = event.get("event_data") or {}
    return {"host": str(data.get("host") or "?"), "task": str(data.get("task") or "?"),
            "check_mode": str(data.get("check_mode"))}


def detail_lines(event: Mapping[str, Any]) -> list[str]:
    """What a person reads about a task besides its result line: the diff of a predicted
    or made change (indented under the line, cut short), or that it was not checkable."""
    unchecked = not_checkable(event)
    if unchecked is not None:
        return [f"TASK {unchecked['task']} | {unchecked['host']} | not checkable: it asks for "
                f"check_mode {unchecked['check_mode']}; it ran in check mode"]
    res = (event.get("event_data") or {}).get("res")
    if event.get("event") != "runner_on_ok" or not isinstance(res, Mapping) \
            or not res.get("changed"):
        return []
    return diff_preview(result_diff(res))


def _diff_side(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


def _header(side: str, name: Any) -> str:
    return f"{side}: {name}" if name else side


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n... (diff truncated)\n"
