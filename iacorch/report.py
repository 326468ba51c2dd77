"""Reports of a finished run, built from the store: JUnit XML, JSON, Markdown."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.status import StageStatus
from iacorch.store.base import RunRecord, StageRecord, Store

REPORT_SCHEMA_VERSION = 1

# The JSON run report's own schema (`--report run.json`), documented in docs/reports.md.
RUN_REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "iacorch run report",
    "type": "object",
    "required": ["schema_version", "run", "stages"],
    "properties": {
        "schema_version": {"const": REPORT_SCHEMA_VERSION},
        "run": {"type": "object", "required": ["id", "runbook", "status", "started_at"],
                "properties": {"id": {"type": "string"}, "runbook": {"type": "string"},
                               "workspace": {"type": "string"},
                               "operation": {"type": "string"},
                               "status": {"type": "string"}, "plan_hash": {"type": "string"},
                               "started_at": {"type": "number"},
                               "finished_at": {"type": ["number", "null"]},
                               "user": {"type": "string"}, "error": {"type": ["string", "null"]},
                               "vars": {"type": "object"}}},
        "stages": {"type": "array", "items": {
            "type": "object", "required": ["id", "status", "attempt"],
            "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                           "attempt": {"type": "integer"},
                           "duration": {"type": ["number", "null"]},
                           "error": {"type": ["string", "null"]},
                           "exit_code": {"type": ["integer", "null"]},
                           "changes": {"type": ["object", "null"]},
                           "diffs": {"type": "array", "items": {
                               "type": "object", "required": ["diff"],
                               "properties": {"host": {"type": "string"},
                                              "task": {"type": "string"},
                                              "diff": {"type": "string"}}}},
                           "outputs": {"type": "object"}}}},
    },
}


def _duration(record: StageRecord) -> float | None:
    if record.started_at is None or record.finished_at is None:
        return None
    return round(record.finished_at - record.started_at, 3)


def _diffs(record: StageRecord) -> list[dict[str, Any]]:
    """The diffs a stage showed (Ansible's `--diff` of a plan or drift), one per task and host."""
    return [{"host": str(c.get("host")), "task": str(c.get("task")), "diff": str(c["diff"])}
            for c in record.details.get("changed") or () if isinstance(c, dict) and c.get("diff")]


def run_report(run: RunRecord, stages: dict[str, StageRecord]) -> dict[str, Any]:
    """The JSON run report (stored outputs are already masked and free of sensitive values)."""
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": {"id": run.id, "runbook": run.runbook, "workspace": run.workspace,
                "operation": run.operation, "status": run.status.value,
                "plan_hash": run.plan_hash, "started_at": run.started_at,
                "finished_at": run.finished_at, "user": run.user, "error": run.error,
                "vars": dict(run.vars)},
        "stages": [{"id": sid, "status": rec.status.value, "attempt": rec.attempt,
                    "duration": _duration(rec), "error": rec.error, "exit_code": rec.exit_code,
                    "changes": dict(rec.changes) if rec.changes else None,
                    "diffs": _diffs(rec), "outputs": dict(rec.outputs)}
                   for sid, rec in stages.items()],
    }


def junit_xml(run: RunRecord, stages: dict[str, StageRecord]) -> str:
    """The run as a JUnit report: one test case per stage."""
    from xml.etree import ElementTree  # here: only --report *.xml needs it

    suite = ElementTree.Element("testsuite", {
        "name": f"iacorch.{run.runbook}", "tests": str(len(stages)),
        "failures": str(sum(r.status is StageStatus.FAILED for r in stages.values())),
        "skipped": str(sum(r.status in (StageStatus.SKIPPED, StageStatus.PENDING)
                           for r in stages.values())),
        "time": f"{(run.finished_at or run.started_at) - run.started_at:.3f}"})
    for stage_id, record in stages.items():
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"{run.runbook}.{run.workspace}", "name": stage_id,
            "time": f"{_duration(record) or 0:.3f}"})
        if record.status in (StageStatus.FAILED, StageStatus.INTERRUPTED):
            failure = ElementTree.SubElement(case, "failure",
                                             {"message": record.error or record.status.value})
            failure.text = "\n".join(record.details.get("output_tail", []))
        elif record.status in (StageStatus.SKIPPED, StageStatus.PENDING,
                               StageStatus.WAITING_APPROVAL):
            ElementTree.SubElement(case, "skipped", {"message": record.error or
                                                     record.status.value})
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True)


def markdown_summary(run: RunRecord, stages: dict[str, StageRecord]) -> str:
    lines = [f"### iacorch `{run.runbook}` ({run.workspace}): {run.status.value}", "",
             f"Run `{run.id}`, plan `{run.plan_hash[:12]}`, started by {run.user or '?'}", "",
             "| stage | status | attempt | time | changes | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for stage_id, record in stages.items():
        changes = record.changes or {}
        shown = (f"+{changes.get('add', 0)} ~{changes.get('change', 0)} "
                 f"-{changes.get('destroy', 0)}") if changes else ""
        duration = _duration(record)
        note = (record.error or "").replace("|", "\\|").replace("\n", " ")[:120]
        lines.append(f"| {stage_id} | {record.status.value} | {record.attempt} | "
                     f"{'' if duration is None else f'{duration:.1f}s'} | {shown} | {note} |")
    return "\n".join(lines) + "\n"


def write_reports(store: Store, run_id: str, reports: Sequence[str],
                  summary: str | None) -> None:
    """Write every requested report; the summary goes to $GITHUB_STEP_SUMMARY when set."""
    summary_path = summary or os.environ.get("GITHUB_STEP_SUMMARY")
    if not reports and not summary_path:
        return
    run = store.get_run(run_id)
    stages = store.stage_records(run_id)
    for target in reports:
        if target.endswith(".xml"):
            _write(target, junit_xml(run, stages))
        elif target.endswith(".json"):
            _write(target, json.dumps(run_report(run, stages), indent=2, default=str))
        else:
            raise UsageError(f"--report {target}: use a .xml (JUnit) or .json file name")
    if summary_path:
        mode = "a" if summary is None else "w"
        _write(summary_path, markdown_summary(run, stages), mode)


def _write(path: str, text: str, mode: str = "w") -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, mode, encoding="utf-8") as handle:
        handle.write(text)
