"""Reports of a drift check: console lines, JUnit XML, Markdown and JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from iacorch.engine.drift import DriftReport
from iacorch.engine.drift_rules import DriftStatus
from iacorch.errors import UsageError

_SHOWN_FINDINGS = 20
_MARK = {DriftStatus.IN_SYNC: "in sync", DriftStatus.DRIFTED: "DRIFTED",
         DriftStatus.ERROR: "ERROR", DriftStatus.SKIPPED: "not checked"}


def finding_text(finding: Mapping[str, Any]) -> str:
    """One finding in one line: `terraform_data.a: update (refresh)` or `host: task`."""
    if finding.get("address"):
        source = f" ({finding['source']})" if finding.get("source") else ""
        text = f"{finding['address']}: {finding.get('action', 'change')}{source}"
    else:
        host = f"{finding['host']}: " if finding.get("host") else ""
        module = f" ({finding['module']})" if finding.get("module") else ""
        text = f"{host}task `{finding.get('task', '?')}` would {finding.get('action', 'change')}"
        text += module
    if finding.get("acknowledgement_expired"):
        text += f" (acknowledgement expired {finding['acknowledgement_expired']})"
    return text


def not_checkable_text(task: Mapping[str, Any]) -> str:
    """An Ansible task a dry run could not check as written: it asks for check_mode false."""
    return (f"{task.get('host', '?')}: task `{task.get('task', '?')}` not checkable (it asks "
            f"for check_mode {task.get('check_mode')}; it ran in check mode)")


def acknowledged_text(finding: Mapping[str, Any]) -> str:
    until = f" until {finding['until']}" if finding.get("until") else ""
    return f"{finding_text(finding)} - acknowledged{until}: {finding.get('reason', '')}"


def console_lines(report: DriftReport, runbook_path: str = "RUNBOOK") -> list[str]:
    """The closing summary a person reads after `iacorch drift`."""
    counts = {s: len(report.by_status(s)) for s in DriftStatus}
    shown = ", ".join(f"{n} {s.value.replace('_', ' ')}" for s, n in counts.items() if n)
    lines = [f"drift check {report.run_id} of {report.runbook} ({report.workspace}): "
             f"{shown or 'nothing to check'}"]
    for stage in report.stages:
        new = " (new)" if stage.new else ""
        lines.append(f"  {stage.stage_id:24} {_MARK[stage.status]}{new}")
        lines += [f"      {finding_text(f)}" for f in stage.findings[:_SHOWN_FINDINGS]]
        if len(stage.findings) > _SHOWN_FINDINGS:
            lines.append(f"      ... and {len(stage.findings) - _SHOWN_FINDINGS} more")
        lines += [f"      {acknowledged_text(f)}" for f in stage.acknowledged]
        lines += [f"      {not_checkable_text(t)}" for t in stage.not_checkable]
        if stage.error:
            lines.append(f"      {stage.error}")
        if stage.hint and stage.status is not DriftStatus.IN_SYNC:
            lines.append(f"      hint: {stage.hint}")
    if report.drifted:
        targets = " ".join("--target " + _quoted(s) for s in report.drifted)
        lines.append(f"  to bring reality back to the code: iacorch apply {runbook_path} "
                     f"{targets} (or iacorch drift {runbook_path} --remediate)")
    return lines


def junit_xml(report: DriftReport) -> str:
    """One testcase per stage: drift is a failure, a check that failed is an error."""
    stages = report.stages
    suite = ElementTree.Element("testsuite", {
        "name": f"iacorch.drift.{report.runbook}", "tests": str(len(stages)),
        "failures": str(len(report.by_status(DriftStatus.DRIFTED))),
        "errors": str(len(report.by_status(DriftStatus.ERROR))),
        "skipped": str(len(report.by_status(DriftStatus.SKIPPED))),
        "time": f"{report.finished_at - report.started_at:.3f}"})
    for stage in stages:
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"{report.runbook}.{report.workspace}.drift", "name": stage.stage_id})
        if stage.status is DriftStatus.DRIFTED:
            failure = ElementTree.SubElement(case, "failure", {
                "message": f"{len(stage.findings)} finding(s)", "type": "drift"})
            failure.text = "\n".join(finding_text(f) for f in stage.findings)
        elif stage.status is DriftStatus.ERROR:
            error = ElementTree.SubElement(case, "error", {"message": stage.error or "error"})
            error.text = stage.hint or ""
        elif stage.status is DriftStatus.SKIPPED:
            ElementTree.SubElement(case, "skipped", {"message": stage.hint or "not checked"})
        if stage.acknowledged or stage.not_checkable:
            out = ElementTree.SubElement(case, "system-out")
            out.text = "\n".join([*map(acknowledged_text, stage.acknowledged),
                                  *map(not_checkable_text, stage.not_checkable)])
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True)


def markdown(report: DriftReport) -> str:
    """A table for a CI job summary, with the findings under it."""
    verdict = "drift" if report.drifted else "in sync"
    if report.by_status(DriftStatus.ERROR):
        verdict = "check failed"
    lines = [f"### iacorch drift `{report.runbook}` ({report.workspace}): {verdict}", "",
             f"Run `{report.run_id}`", "", "| stage | status | findings | acknowledged |",
             "| --- | --- | --- | --- |"]
    for stage in report.stages:
        note = stage.error or ""
        lines.append(f"| {stage.stage_id} | {stage.status.value}{' (new)' if stage.new else ''}"
                     f" | {len(stage.findings) or ''} {_cell(note)} | "
                     f"{len(stage.acknowledged) or ''} |")
    for stage in report.stages:
        if stage.findings or stage.acknowledged or stage.not_checkable:
            lines += ["", f"**{stage.stage_id}**", ""]
            lines += [f"- {_cell(finding_text(f))}" for f in stage.findings]
            lines += [f"- _{_cell(acknowledged_text(f))}_" for f in stage.acknowledged]
            lines += [f"- {_cell(not_checkable_text(t))}" for t in stage.not_checkable]
    return "\n".join(lines) + "\n"


def write_reports(report: DriftReport, reports: Sequence[str], summary: str | None) -> None:
    """--report FILE (.xml JUnit, .json) and --summary FILE ($GITHUB_STEP_SUMMARY if set)."""
    for target in reports:
        if target.endswith(".xml"):
            _write(target, junit_xml(report))
        elif target.endswith(".json"):
            _write(target, json.dumps(report.to_dict(), indent=2, default=str))
        else:
            raise UsageError(f"--report {target}: use a .xml (JUnit) or .json file name")
    summary_path = summary or os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        _write(summary_path, markdown(report), "w" if summary else "a")


def check_report_names(reports: Sequence[str]) -> None:
    """Refuse a bad --report name before the check runs, not after."""
    for target in reports:
        if not target.endswith((".xml", ".json")):
            raise UsageError(f"--report {target}: use a .xml (JUnit) or .json file name")


def history_lines(history: Sequence[Any], when: Any) -> list[str]:
    """`show`/`runs`: per stage, its last verdict, when it last drifted, in sync since."""
    lines = []
    for item in history:
        parts = [f"{item.status} (checked {when(item.checked_at)})"]
        if item.last_drifted_at is not None:
            parts.append(f"last drifted {when(item.last_drifted_at)}")
        if item.in_sync_since is not None and item.last_drifted_at is not None:
            parts.append(f"in sync since {when(item.in_sync_since)}")
        lines.append(f"  {item.stage_id:24} {', '.join(parts)}")
    return lines


def _write(path: str, text: str, mode: str = "w") -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, mode, encoding="utf-8") as handle:
        handle.write(text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def _quoted(stage_id: str) -> str:
    return f"'{stage_id}'" if "[" in stage_id else stage_id
