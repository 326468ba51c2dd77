"""Drift rules as tables: findings, acknowledgements, verdicts, fingerprints, history."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from iacorch.engine.drift import last_applications, recorded_inputs, stages_to_check
from iacorch.engine.drift_rules import (
    DriftStatus,
    classify,
    exit_code,
    findings_of,
    fingerprint,
    ignore_rules,
    is_new,
    parse_until,
    remediation_targets,
    stage_history,
)
from iacorch.errors import UsageError
from iacorch.model.results import StageResult
from iacorch.model.status import RunStatus, StageStatus
from iacorch.runbook.compiler import compile_runbook
from iacorch.store.base import DriftRecord, RunRecord, StageRecord
from iacorch.store.memory import MemoryStore

TODAY = date(2026, 11, 27)
TF_FINDINGS = [{"address": "terraform_data.node[2]", "action": "delete", "source": "config"},
               {"address": "output.nodes", "action": "update", "source": "config"}]


def tf_result(findings=TF_FINDINGS, drifted=True) -> StageResult:
    return StageResult(StageStatus.SUCCEEDED, drifted=drifted,
                       details={"findings": list(findings)})


def ansible_result() -> StageResult:
    return StageResult(StageStatus.SUCCEEDED, drifted=True, details={
        "changed": [{"host": "web-1", "task": "Write the home page",
                     "action": "ansible.builtin.copy", "diff": [{"after": "x"}]}]})


def rule(**fields) -> dict:
    return {"stage": "net", "reason": "known", **fields}


def test_findings_have_one_shape_whatever_the_tool():
    assert findings_of(tf_result()) == TF_FINDINGS
    assert findings_of(ansible_result()) == [{
        "host": "web-1", "task": "Write the home page", "action": "change",
        "module": "ansible.builtin.copy", "diff": [{"after": "x"}]}]
    assert findings_of(tf_result([], drifted=True)) == [
        {"address": "(stage)", "action": "changed"}]
    assert findings_of(tf_result([], drifted=False)) == []


@pytest.mark.parametrize(("result", "status"), [
    (tf_result(), DriftStatus.DRIFTED),
    (tf_result([], drifted=False), DriftStatus.IN_SYNC),
    (StageResult.failure("terraform plan exited with code 1"), DriftStatus.ERROR),
    (StageResult(StageStatus.SUCCEEDED), DriftStatus.ERROR),           # no verdict at all
    (StageResult(StageStatus.SKIPPED, details={"reason": "no desired state"}),
     DriftStatus.SKIPPED),
])
def test_classify_without_rules(result, status):
    verdict = classify("net", result, [], TODAY)
    assert verdict.status is status
    assert (verdict.error is not None) == (status is DriftStatus.ERROR)


@pytest.mark.parametrize(("entry", "acknowledged", "status"), [
    (rule(address="terraform_data.node*", until="2026-12-31"), 1, DriftStatus.DRIFTED),
    (rule(address="*", until="2026-11-27"), 2, DriftStatus.IN_SYNC),  # the last day counts
    (rule(), 2, DriftStatus.IN_SYNC),                                  # whole stage, no end
    (rule(address="*", until="2026-11-26"), 0, DriftStatus.DRIFTED),   # expired
    (rule(stage="other", address="*"), 0, DriftStatus.DRIFTED),
    (rule(address="aws_*"), 0, DriftStatus.DRIFTED),
])
def test_ignore_rules_acknowledge_matching_findings_until_their_date(entry, acknowledged,
                                                                     status):
    verdict = classify("net", tf_result(), ignore_rules([entry]), TODAY)
    assert len(verdict.acknowledged) == acknowledged
    assert len(verdict.findings) == len(TF_FINDINGS) - acknowledged
    assert verdict.status is status
    for ack in verdict.acknowledged:
        assert ack["reason"] == "known"


def test_an_expired_acknowledgement_says_so_and_changes_the_fingerprint():
    active = classify("net", tf_result(), ignore_rules([rule(address="output.*",
                                                             until="2026-12-01")]), TODAY)
    expired = classify("net", tf_result(), ignore_rules([rule(address="output.*",
                                                              until="2026-11-01")]), TODAY)
    assert [f["address"] for f in active.findings] == ["terraform_data.node[2]"]
    assert expired.findings[1]["acknowledgement_expired"] == "2026-11-01"
    assert active.fingerprint != expired.fingerprint


def test_task_rules_and_for_each_base_ids():
    rules = ignore_rules([{"stage": "web", "task": "Write the *", "reason": "hotfix"}])
    verdict = classify("web[eu]", ansible_result(), rules, TODAY)
    assert verdict.status is DriftStatus.IN_SYNC and len(verdict.acknowledged) == 1
    assert verdict.acknowledged[0]["until"] is None


def test_a_bad_date_is_a_usage_error_with_the_format():
    with pytest.raises(UsageError, match="not a date") as caught:
        parse_until("next tuesday")
    assert "YYYY-MM-DD" in (caught.value.hint or "")
    assert parse_until("2026-12-31T10:00:00") == date(2026, 12, 31)


def test_fingerprint_ignores_order_and_diff_text():
    a = {"host": "h", "task": "t", "action": "change", "diff": "one"}
    b = {"address": "x", "action": "update", "source": "refresh"}
    assert fingerprint([a, b]) == fingerprint([b, {**a, "diff": "two"}])
    assert fingerprint([a]) != fingerprint([b])
    assert fingerprint([]) == ""


@pytest.mark.parametrize(("status", "previous_status", "previous_fp", "new"), [
    (DriftStatus.DRIFTED, None, None, True),              # first check ever
    (DriftStatus.DRIFTED, "in_sync", "", True),           # drifted again
    (DriftStatus.DRIFTED, "drifted", "same", False),      # the same, already told
    (DriftStatus.DRIFTED, "drifted", "other", True),      # changed drift
    (DriftStatus.DRIFTED, "error", "", True),
    (DriftStatus.IN_SYNC, "drifted", "same", False),
    (DriftStatus.ERROR, None, None, False),
])
def test_only_new_or_changed_drift_is_news(status, previous_status, previous_fp, new):
    result = {DriftStatus.DRIFTED: tf_result(), DriftStatus.IN_SYNC: tf_result([], False),
              DriftStatus.ERROR: StageResult.failure("boom")}[status]
    current = classify("s", result, [], TODAY)
    fp = current.fingerprint if previous_fp == "same" else previous_fp
    assert is_new(current, previous_status, fp) is new


@pytest.mark.parametrize(("statuses", "code"), [
    ([], 0),
    ([DriftStatus.IN_SYNC, DriftStatus.SKIPPED], 0),
    ([DriftStatus.IN_SYNC, DriftStatus.DRIFTED], 2),
    ([DriftStatus.DRIFTED, DriftStatus.ERROR], 1),
])
def test_exit_codes(statuses, code):
    from iacorch.engine.drift_rules import StageDrift

    assert exit_code([StageDrift(f"s{i}", s) for i, s in enumerate(statuses)]) == code


def test_history_says_when_a_stage_last_drifted_and_since_when_it_is_in_sync():
    def record(status: str, at: float) -> DriftRecord:
        return DriftRecord("r", "rb", "default", "net", status, {}, "", at)

    history = stage_history([record("in_sync", 40), record("in_sync", 30),
                             record("drifted", 20), record("in_sync", 10)])
    assert history is not None
    assert (history.status, history.last_drifted_at, history.in_sync_since) == (
        "in_sync", 20, 30)
    still = stage_history([record("drifted", 50), record("drifted", 40)])
    assert still is not None and still.in_sync_since is None and still.last_drifted_at == 50
    assert stage_history([]) is None


RUNBOOK = """
version: 1
name: fleet
vars:
  regions: {default: [eu, us], type: list}
stages:
  net:
    kind: provision
    shell: {run: "true"}
  web:
    kind: configure
    for_each: "{{ vars.regions }}"
    shell: {run: "echo {{ item }} {{ stages.net.outputs.id }}"}
  smoke:
    kind: verify
    needs: [web]
    http: {url: "http://127.0.0.1:1/"}
"""


@pytest.fixture
def plan(tmp_path: Path):
    (tmp_path / ".git").mkdir()
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(RUNBOOK))
    return compile_runbook(path)


def test_provision_and_configure_stages_are_checked_unless_named(plan):
    assert [s.id for s in stages_to_check(plan)] == ["net", "web[eu]", "web[us]"]
    assert [s.id for s in stages_to_check(plan, ["web"])] == ["web[eu]", "web[us]"]
    assert [s.id for s in stages_to_check(plan, ["smoke", "web[us]"])] == ["web[us]", "smoke"]
    with pytest.raises(UsageError, match="--stage nope"):
        stages_to_check(plan, ["nope"])


def _apply(store: MemoryStore, run_id: str, at: float, stages: dict[str, StageStatus],
           *, operation: str = "apply", status: RunStatus = RunStatus.SUCCEEDED,
           env: str = "dev") -> None:
    store.create_run(RunRecord(run_id, "fleet", "/x", "default", "h", {"env": env}, status,
                               operation, at))
    for stage_id, stage_status in stages.items():
        store.record_stage(StageRecord(run_id, stage_id, 1, stage_status,
                                       outputs={"from": run_id}))


def test_each_stage_keeps_the_inputs_of_the_run_that_last_applied_it(plan):
    store = MemoryStore()
    _apply(store, "r1", 10, {"net": StageStatus.SUCCEEDED, "web[eu]": StageStatus.SUCCEEDED,
                             "web[us]": StageStatus.SUCCEEDED}, env="old")
    _apply(store, "r2", 20, {"net": StageStatus.SUCCEEDED, "web[eu]": StageStatus.SUCCEEDED},
           env="new")                                           # apply --target web[eu]
    _apply(store, "r3", 30, {"net": StageStatus.SUCCEEDED, "web[us]": StageStatus.SUCCEEDED},
           status=RunStatus.FAILED)                             # failed runs do not count
    found = last_applications(store, plan)
    assert {sid: (a.run_id, a.vars["env"]) for sid, a in found.items()} == {
        "net": ("r2", "new"), "web[eu]": ("r2", "new"), "web[us]": ("r1", "old")}
    _apply(store, "d1", 40, {}, operation="destroy")
    assert last_applications(store, plan) == {}


def test_a_stage_is_judged_with_the_upstream_outputs_its_last_apply_used(plan):
    store = MemoryStore()
    _apply(store, "r1", 10, {"net": StageStatus.SUCCEEDED, "web[eu]": StageStatus.SUCCEEDED,
                             "web[us]": StageStatus.SUCCEEDED})
    _apply(store, "r2", 20, {"net": StageStatus.SUCCEEDED})    # apply --target net (remediation)
    found = last_applications(store, plan)
    assert recorded_inputs(found, "web[eu]")["net"] == {"from": "r1"}, \
        "net's new outputs are not what web[eu] was made with"
    assert recorded_inputs(found, "net")["net"] == {"from": "r2"}
    _apply(store, "r3", 30, {"web[us]": StageStatus.SUCCEEDED})   # net not finished in r3
    assert recorded_inputs(last_applications(store, plan), "web[us]")["net"] == {"from": "r2"}


REMEDIATED = """
version: 1
name: chain
stages:
  net: {kind: provision, shell: {run: "true"}}
  hosts: {kind: provision, shell: {run: "echo {{ stages.net.outputs.id }}"}}
  gate: {kind: approval, needs: [hosts]}
  config: {kind: configure, needs: [gate], shell: {run: "true"}}
  smoke: {kind: verify, needs: [config], http: {url: "http://127.0.0.1:1/"}}
  late: {kind: configure, needs: [smoke], shell: {run: "true"}}
  other: {kind: configure, shell: {run: "true"}}
"""


@pytest.mark.parametrize(("drifted", "applied", "targets"), [
    (["net"], {"net", "hosts", "config", "late", "other"}, ("net", "hosts", "config", "late")),
    (["hosts"], {"net", "hosts", "config", "late", "other"}, ("hosts", "config", "late")),
    (["net"], {"net", "hosts"}, ("net", "hosts")),              # config was never applied
    (["config", "other"], {"config", "other"}, ("other", "config")),   # plan order
    (["late"], {"net", "late"}, ("late",)),
])
def test_remediation_follows_the_change_downstream(tmp_path, drifted, applied, targets):
    (tmp_path / ".git").mkdir()
    path = tmp_path / "chain.yaml"
    path.write_text(textwrap.dedent(REMEDIATED))
    assert remediation_targets(compile_runbook(path), drifted, applied) == targets


def test_not_checkable_tasks_are_listed_with_the_verdict():
    result = StageResult(StageStatus.SUCCEEDED, drifted=False, details={
        "changed": [], "not_checkable": [
            {"host": "web-1", "task": "Restart", "check_mode": "False"}]})
    verdict = classify("page", result, [], TODAY)
    assert verdict.status is DriftStatus.IN_SYNC
    assert verdict.to_dict()["not_checkable"] == [
        {"host": "web-1", "task": "Restart", "check_mode": "False"}]
