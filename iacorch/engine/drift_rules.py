"""Pure drift rules: findings from a driver result, `drift.ignore` acknowledgements,
classification, fingerprints, and the "new or changed" test behind notifications.

Everything here is a function of plain data and a date, tested by tables.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.plan import Plan
from iacorch.model.results import StageResult
from iacorch.model.status import StageKind, StageStatus

# The keys that say *what* drifted; a diff's text may differ between checks of the same
# unchanged finding (timestamps, ordering), so it never goes into the fingerprint.
_IDENTITY_KEYS = ("address", "host", "task", "action")
CHECKED_KINDS = (StageKind.PROVISION, StageKind.CONFIGURE)   # the stages drift checks


class DriftStatus(StrEnum):
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    ERROR = "error"
    SKIPPED = "skipped"          # the tool declares no desired state (shell, http)


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """One `drift.ignore` entry with its date parsed."""

    stage: str
    address: str | None
    task: str | None
    reason: str
    until: date | None

    def covers_stage(self, stage_id: str) -> bool:
        base = stage_id.split("[", 1)[0]
        return fnmatch.fnmatchcase(stage_id, self.stage) or fnmatch.fnmatchcase(base, self.stage)

    def covers(self, finding: Mapping[str, Any]) -> bool:
        """Whether this rule matches one finding of a stage it covers (globs allowed)."""
        if self.address is not None:
            return fnmatch.fnmatchcase(str(finding.get("address", "")), self.address)
        if self.task is not None:
            return fnmatch.fnmatchcase(str(finding.get("task", "")), self.task)
        return True

    def active(self, today: date) -> bool:
        return self.until is None or today <= self.until


@dataclass(frozen=True)
class StageDrift:
    """The verdict for one stage after the ignore rules."""

    stage_id: str
    status: DriftStatus
    findings: tuple[Mapping[str, Any], ...] = ()         # unacknowledged
    acknowledged: tuple[Mapping[str, Any], ...] = ()     # each with `reason` and `until`
    error: str | None = None
    hint: str | None = None
    fingerprint: str = ""
    new: bool = False                                     # new or changed since last check
    details: Mapping[str, Any] = field(default_factory=dict)
    not_checkable: tuple[Mapping[str, Any], ...] = ()     # tasks held in check mode (Ansible)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage_id, "status": self.status.value,
                "findings": [dict(f) for f in self.findings],
                "acknowledged": [dict(f) for f in self.acknowledged],
                "error": self.error, "hint": self.hint, "fingerprint": self.fingerprint,
                "new": self.new, "not_checkable": [dict(t) for t in self.not_checkable]}


def parse_until(text: str | None) -> date | None:
    """`2026-12-31` (or an ISO date-time) -> date; UsageError for anything else."""
    if text is None:
        return None
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(str(text)).date()
    except ValueError:
        raise UsageError(f"drift.ignore: `until: {text}` is not a date",
                         hint="write it as YYYY-MM-DD, e.g. until: 2026-12-31") from None


def ignore_rules(entries: Iterable[Any]) -> list[IgnoreRule]:
    """The runbook's `drift.ignore` entries (DriftIgnore models or dicts) as rules."""
    rules = []
    for entry in entries:
        get = entry.get if isinstance(entry, Mapping) else lambda k, e=entry: getattr(e, k)
        rules.append(IgnoreRule(stage=str(get("stage")), address=get("address"),
                                task=get("task"), reason=str(get("reason") or ""),
                                until=parse_until(get("until"))))
    return rules


def findings_of(result: StageResult) -> list[dict[str, Any]]:
    """A drift result's findings in one shape, whatever the tool.

    Terraform and Pulumi give `details["findings"]` (address, action, source);
    Ansible lists the task results that would change under `details["changed"]`.
    A result that says drifted but names nothing still gets one finding, so an
    address- or task-level acknowledgement cannot hide it by accident.
    """
    details = result.details or {}
    found: list[dict[str, Any]] = [dict(f) for f in details.get("findings") or []]
    if not found:
        for change in details.get("changed") or []:
            finding = {"host": change.get("host"), "task": change.get("task"),
                       "action": "change", "module": change.get("action")}
            if change.get("diff"):
                finding["diff"] = change["diff"]
            found.append(finding)
    if result.drifted and not found:
        found.append({"address": "(stage)", "action": "changed"})
    return found


def fingerprint(findings: Sequence[Mapping[str, Any]]) -> str:
    """Same findings (by what drifted and how, in any order) -> same fingerprint."""
    identities = sorted(json.dumps({k: f.get(k) for k in _IDENTITY_KEYS if f.get(k) is not None},
                                   sort_keys=True, default=str) for f in findings)
    if not identities:
        return ""
    return hashlib.sha256("\n".join(identities).encode()).hexdigest()[:16]


def classify(stage_id: str, result: StageResult, rules: Sequence[IgnoreRule],
             today: date) -> StageDrift:
    """One stage's drift result -> in_sync, drifted or error, with acknowledged findings."""
    if result.status is StageStatus.SKIPPED:
        reason = (result.details or {}).get("reason") or result.hint or "not checked"
        return StageDrift(stage_id, DriftStatus.SKIPPED, error=None, hint=str(reason))
    if not result.ok or result.drifted is None:
        return StageDrift(stage_id, DriftStatus.ERROR,
                          error=result.error or "the drift check gave no verdict",
                          hint=result.hint)
    active: list[Mapping[str, Any]] = []
    acknowledged: list[Mapping[str, Any]] = []
    stage_rules = [r for r in rules if r.covers_stage(stage_id)]
    for finding in findings_of(result) if result.drifted else []:
        rule = next((r for r in stage_rules if r.covers(finding)), None)
        if rule is None:
            active.append(finding)
        elif rule.active(today):
            acknowledged.append({**finding, "reason": rule.reason,
                                 "until": rule.until.isoformat() if rule.until else None})
        else:
            active.append({**finding, "acknowledgement_expired": rule.until.isoformat()
                           if rule.until else None})
    status = DriftStatus.DRIFTED if active else DriftStatus.IN_SYNC
    unchecked = tuple(dict(t) for t in (result.details or {}).get("not_checkable") or ())
    return StageDrift(stage_id, status, tuple(active), tuple(acknowledged),
                      fingerprint=fingerprint(active), not_checkable=unchecked)


def is_new(current: StageDrift, previous_status: str | None,
           previous_fingerprint: str | None) -> bool:
    """Drift worth a notification: drifted now, and not with the same findings last time."""
    if current.status is not DriftStatus.DRIFTED:
        return False
    return previous_status != DriftStatus.DRIFTED.value or \
        previous_fingerprint != current.fingerprint


def remediation_targets(plan: Plan, drifted: Iterable[str],
                        applied: Collection[str]) -> tuple[str, ...]:
    """What `--remediate` applies, in plan order: the drifted stages, and every provision or
    configure stage downstream of them that was applied before.

    Re-applying a drifted stage may change its outputs, and the stages after it were made
    with the old ones; a later drift check judges them with the inputs they were applied
    with, so it would not see that they are behind. One apply takes the change all the way
    down. A stage never applied is left for a plain `apply`.
    """
    dependents = plan.dependents()
    chosen = set(drifted)
    seen, pending = set(chosen), list(chosen)
    while pending:
        for child in dependents.get(pending.pop(), ()):
            if child in seen:
                continue
            seen.add(child)
            pending.append(child)
            if child in applied and plan.stages[child].kind in CHECKED_KINDS:
                chosen.add(child)
    return tuple(sid for sid in plan.stages if sid in chosen)


def exit_code(verdicts: Iterable[StageDrift]) -> int:
    """0 in sync, 2 drift, 1 when any stage could not be checked (an incomplete check
    must not pass for a clean one, nor for plain drift)."""
    statuses = {v.status for v in verdicts}
    if DriftStatus.ERROR in statuses:
        return 1
    return 2 if DriftStatus.DRIFTED in statuses else 0


@dataclass(frozen=True)
class StageHistory:
    """What the drift records say about one stage: last seen drifted, in sync since."""

    stage_id: str
    status: str
    checked_at: float
    last_drifted_at: float | None
    in_sync_since: float | None


def stage_history(records: Sequence[Any]) -> StageHistory | None:
    """Summarise one stage's DriftRecords (newest first) for `runs` and `show`."""
    if not records:
        return None
    latest = records[0]
    last_drifted = next((r.time for r in records if r.status == DriftStatus.DRIFTED.value), None)
    in_sync_since = None
    if latest.status == DriftStatus.IN_SYNC.value:
        for record in records:
            if record.status != DriftStatus.IN_SYNC.value:
                break
            in_sync_since = record.time
    return StageHistory(latest.stage_id, latest.status, latest.time, last_drifted, in_sync_since)
