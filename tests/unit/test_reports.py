"""The JSON run report: valid against its own schema, and every key in docs/reports.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema

from iacorch.model.status import Operation, RunStatus, StageStatus
from iacorch.report import RUN_REPORT_SCHEMA, run_report
from iacorch.store.base import RunRecord, StageRecord

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reports.md"


def report() -> dict[str, Any]:
    run = RunRecord(id="r1", runbook="web", runbook_path="/p/web.yaml", workspace="prod",
                    plan_hash="ph", vars={"env": "prod", "token": "***"},
                    status=RunStatus.FAILED, operation=Operation.APPLY, started_at=10.0,
                    finished_at=20.0, user="alice", error="db: exit 1")
    stages = {
        "net": StageRecord("r1", "net", 1, StageStatus.SUCCEEDED, 10.0, 12.5,
                           outputs={"vpc": "vpc-1"},
                           changes={"add": 1, "change": 0, "destroy": 0}),
        "hosts": StageRecord("r1", "hosts", 1, StageStatus.SUCCEEDED, 12.5, 14.0,
                             details={"changed": [{"host": "web1", "task": "nginx",
                                                   "diff": "-a\n+b\n"}]}),
        "db": StageRecord("r1", "db", 2, StageStatus.FAILED, 14.0, 15.0, exit_code=1,
                          error="exit 1"),
    }
    return run_report(run, stages)


def test_a_report_is_valid_against_its_schema() -> None:
    made = report()
    jsonschema.validate(made, RUN_REPORT_SCHEMA)
    assert made["run"]["vars"] == {"env": "prod", "token": "***"}
    assert made["stages"][1]["diffs"] == [{"host": "web1", "task": "nginx", "diff": "-a\n+b\n"}]
    assert made["stages"][2]["duration"] == 1.0


def test_docs_describe_every_key_of_the_report() -> None:
    documented = set(re.findall(r"^\| `([a-z_.\[\]]+)` \|", DOCS.read_text(), re.M))
    properties = RUN_REPORT_SCHEMA["properties"]
    keys = {"schema_version"}
    keys |= {f"run.{k}" for k in properties["run"]["properties"]}
    keys |= {f"stages[].{k}" for k in properties["stages"]["items"]["properties"]}
    assert keys == documented
