"""The notifications a run end, a drift check or a failed scheduled job produces.

Pure: outcomes in, `Notification`s out (texts in Slack's mrkdwn, fields for machines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iacorch.model.status import RunStatus, StageStatus

from .notify import Notification

if TYPE_CHECKING:
    from .drift import DriftReport

_RUN_EVENTS = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.ROLLED_BACK: "failed",
    RunStatus.DIED: "failed",
    RunStatus.ROLLBACK_FAILED: "rollback_failed",
    RunStatus.ROLLING_BACK: "rollback_failed",
    RunStatus.WAITING_APPROVAL: "approval_requested",
}
_MAX_LISTED = 5


def run_notifications(*, runbook: str, workspace: str, operation: str, run_id: str,
                      status: RunStatus, errors: Mapping[str, str],
                      statuses: Mapping[str, StageStatus], elapsed: float,
                      deadline: float | None = None, deadline_breached: bool = False,
                      waiting_gates: Sequence[str] = ()) -> list[Notification]:
    """What a finished (or suspended) run tells the channels; an interrupt tells nothing.

    `deadline_breached`: this process found the run over its deadline. The engine says
    that once per run, so a run suspended at a gate and resumed is not reported twice.
    """
    found: list[Notification] = []
    where = f"`{runbook}` ({workspace})"
    if deadline is not None and deadline_breached:
        found.append(Notification(
            "deadline_breached", runbook, workspace,
            f":hourglass: {where} {operation} took {elapsed:.0f}s, over its deadline of "
            f"{deadline:.0f}s (run {run_id})", run_id,
            {"operation": operation, "elapsed": round(elapsed, 3), "deadline": deadline}))
    event = _RUN_EVENTS.get(status)
    if event is None:
        return found
    failed = {sid: err for sid, err in errors.items()
              if statuses.get(sid) in (StageStatus.FAILED, StageStatus.INTERRUPTED)}
    data: dict[str, Any] = {"operation": operation, "status": status.value,
                            "elapsed": round(elapsed, 3), "failed_stages": failed,
                            "stages": {sid: s.value for sid, s in statuses.items()}}
    if event == "succeeded":
        text = f":white_check_mark: {where} {operation} succeeded in {elapsed:.0f}s (run {run_id})"
    elif event == "failed":
        text = (f":x: {where} {operation} {status.value}: {_listed(failed) or 'see the log'} "
                f"(run {run_id}; `iacorch show {run_id}`)")
    elif event == "rollback_failed":
        text = (f":rotating_light: {where} {operation}: rollback FAILED, a human must look: "
                f"`iacorch show {run_id}`, then `iacorch rollback {run_id}`")
    else:
        data["gates"] = list(waiting_gates)
        gates = ", ".join(f"`{g}`" for g in waiting_gates) or "a gate"
        first = waiting_gates[0] if waiting_gates else "GATE"
        text = (f":raised_hand: {where} {operation} waits for approval at {gates}: "
                f"`iacorch approve {run_id} {first} --resume`")
    found.append(Notification(event, runbook, workspace, text, run_id, data))
    return found


def drift_notifications(report: DriftReport) -> list[Notification]:
    """`drift` when some stage drifted anew (or differently); `failed` when some stage
    could not be checked. Unchanged drift that was already reported tells nothing."""
    from .drift_rules import DriftStatus  # here: a run's notifications need no drift code

    found: list[Notification] = []
    where = f"`{report.runbook}` ({report.workspace})"
    stages = [s.to_dict() for s in report.stages if s.status is not DriftStatus.SKIPPED]
    new = report.new_drift
    if new:
        parts = []
        for verdict in new[:_MAX_LISTED]:
            names = [_finding_name(f) for f in verdict.findings]
            parts.append(f"*{verdict.stage_id}*: {_listed(dict.fromkeys(names))}")
        more = f" and {len(new) - _MAX_LISTED} more" if len(new) > _MAX_LISTED else ""
        text = (f":warning: drift in {where}: {'; '.join(parts)}{more} "
                f"(run {report.run_id}; fix with `iacorch drift --remediate`)")
        found.append(Notification("drift", report.runbook, report.workspace, text,
                                  report.run_id, {"operation": "drift",
                                                  "drifted": report.drifted,
                                                  "new": [s.stage_id for s in new],
                                                  "stages": stages}))
    errors = report.by_status(DriftStatus.ERROR)
    if errors:
        text = (f":x: drift check of {where} failed: "
                f"{_listed({s.stage_id: s.error or '' for s in errors})} (run {report.run_id})")
        found.append(Notification("failed", report.runbook, report.workspace, text,
                                  report.run_id, {"operation": "drift", "stages": stages}))
    return found


def schedule_failed(*, runbook: str, workspace: str, schedule: str, action: str,
                    exit_code: int | None, run_id: str | None, log_tail: Sequence[str],
                    log_path: str) -> Notification:
    """A scheduled job that ended badly (not drift, not waiting for approval)."""
    how = f"exited with code {exit_code}" if exit_code is not None else "could not start"
    text = (f":x: scheduled `{schedule}` ({action}) of `{runbook}` ({workspace}) {how}"
            + (f" (run {run_id})" if run_id else "") + f"; log: {log_path}")
    return Notification("schedule_failed", runbook, workspace, text, run_id,
                        {"schedule": schedule, "action": action, "exit_code": exit_code,
                         "log": log_path, "log_tail": list(log_tail)})


def _finding_name(finding: Mapping[str, Any]) -> str:
    if finding.get("address"):
        return f"{finding['address']} ({finding.get('action', 'change')})"
    host = f"{finding['host']}: " if finding.get("host") else ""
    return f"{host}{finding.get('task', '?')}"


def _listed(items: Mapping[str, str] | Mapping[str, None]) -> str:
    shown = [f"{k}: {v}" if v else k for k, v in list(items.items())[:_MAX_LISTED]]
    rest = len(items) - _MAX_LISTED
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")
