"""Pure engine rules, by table: selection, readiness, blocking, retries, undo order, gates,
what a plan found."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from iacorch.engine import policies, rollback, scheduler
from iacorch.engine.approvals import GateDecision, check_decider, check_inputs, evaluate_gate
from iacorch.engine.plan_report import (
    PlanVerdict,
    StagePlan,
    has_pending_changes,
    plan_counts,
    stage_plans,
)
from iacorch.errors import ApprovalError, Location
from iacorch.model.plan import ApprovalGate, Plan, PlannedStage, RetryPolicy
from iacorch.model.results import StageResult
from iacorch.model.status import FailurePolicy, StageKind, StageStatus
from iacorch.store.base import ApprovalRecord, StageRecord

S = StageStatus


def stage(sid, *needs, kind=StageKind.PROVISION, action="shell", **extra):
    return PlannedStage(id=sid, base_id=sid.split("[")[0], kind=kind, action_type=action,
                        action={}, needs=tuple(needs), location=Location("x.yaml", 1, 1),
                        **extra)


def plan_of(*stages, on_failure=FailurePolicy.STOP):
    by_id = {s.id: s for s in stages}
    expansions: dict[str, tuple[str, ...]] = {}
    for s in stages:
        expansions.setdefault(s.base_id, ())
        expansions[s.base_id] += (s.id,)
    return Plan(name="t", path=None, root=None, vars={}, secret_names=frozenset(),
                stages=by_id, finally_stages={}, layers=(), expansions=expansions,
                plan_hash="h", concurrency=2, on_failure=on_failure, deadline=None,
                workspace="default")


def ready_stages(plan: Plan, statuses: Mapping[str, StageStatus],
                 selected: set[str]) -> list[str]:
    """The rule ReadyQueue keeps incrementally, written plainly: pending selected stages
    whose needs are done (or unselected), in plan order."""
    ready = []
    for stage_id, stage in plan.stages.items():
        if statuses.get(stage_id, StageStatus.PENDING) is not StageStatus.PENDING:
            continue
        if stage_id not in selected:
            continue
        if all(need not in selected or statuses.get(need, StageStatus.PENDING).is_done
               for need in stage.needs):
            ready.append(stage_id)
    return ready


DIAMOND = plan_of(stage("a"), stage("b", "a", kind=StageKind.CONFIGURE),
                  stage("c", "a", kind=StageKind.CONFIGURE),
                  stage("d", "b", "c", kind=StageKind.VERIFY))


@pytest.mark.parametrize(("statuses", "ready"), [
    ({}, ["a"]),
    ({"a": S.RUNNING}, []),
    ({"a": S.SUCCEEDED}, ["b", "c"]),
    ({"a": S.SKIPPED}, ["b", "c"]),            # a skipped need counts as met
    ({"a": S.SUCCEEDED, "b": S.SUCCEEDED}, ["c"]),
    ({"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.FAILED}, []),
    ({"a": S.SUCCEEDED, "b": S.MARKED_DONE, "c": S.SUCCEEDED}, ["d"]),
])
def test_ready_stages(statuses, ready):
    assert ready_stages(DIAMOND, statuses, set(DIAMOND.stages)) == ready


def test_selection_by_target_and_kind():
    assert scheduler.select_stages(DIAMOND, targets=["b"]) == {"a", "b"}
    assert scheduler.select_stages(DIAMOND, only=["configure"]) == {"b", "c"}
    assert scheduler.select_stages(DIAMOND, targets=["d"], only=["verify"]) == {"d"}
    # an unselected need does not hold a stage back
    assert ready_stages(DIAMOND, {}, {"b", "c"}) == ["b", "c"]


def test_blocking_propagates_with_the_first_culprit():
    blocked = scheduler.blocked_stages(DIAMOND, {"a": S.SUCCEEDED, "b": S.FAILED},
                                       set(DIAMOND.stages))
    assert blocked == {"d": "b"}
    assert scheduler.blocked_stages(DIAMOND, {"a": S.FAILED}, set(DIAMOND.stages)) == {
        "b": "a", "c": "a", "d": "a"}


@pytest.mark.parametrize(("attempt", "result", "retry", "delay"), [
    (1, StageResult.failure("x"), True, 2.0),
    (2, StageResult.failure("x"), True, 4.0),      # backoff doubles
    (3, StageResult.failure("x"), False, 0.0),     # attempts spent
    (1, StageResult.failure("x", interrupted=True), False, 0.0),
    (1, StageResult(S.SUCCEEDED), False, 0.0),
])
def test_retry_decisions(attempt, result, retry, delay):
    flaky = stage("f", retry=RetryPolicy(attempts=3, backoff=2.0))
    decision = policies.after_attempt(flaky, attempt, result)
    assert (decision.retry, decision.delay) == (retry, delay)


def test_failure_policy_stage_overrides_runbook():
    plan = plan_of(stage("a", on_failure=FailurePolicy.CONTINUE), stage("b"),
                   on_failure=FailurePolicy.ROLLBACK)
    assert policies.failure_policy(plan, plan.stages["a"]) is FailurePolicy.CONTINUE
    assert policies.failure_policy(plan, plan.stages["b"]) is FailurePolicy.ROLLBACK


def undo_layers(plan, stage_ids):
    """Layers of stages that may be undone in parallel, by ready_to_undo."""
    done: set[str] = set()
    layers = []
    while len(done) < len(stage_ids):
        layer = rollback.ready_to_undo(plan, [s for s in stage_ids if s not in done], done)
        assert layer, "no progress: a cycle"
        layers.append(layer)
        done.update(layer)
    return layers


def test_undo_is_reverse_and_parallel():
    assert undo_layers(DIAMOND, ["a", "b", "c", "d"]) == [["d"], ["b", "c"], ["a"]]
    assert undo_layers(DIAMOND, ["a", "c"]) == [["c"], ["a"]]


@pytest.mark.parametrize(("action", "existed", "previous", "kind"), [
    ("terraform", False, True, rollback.UndoKind.DESTROY),
    ("terraform", True, True, rollback.UndoKind.REAPPLY),
    ("terraform", True, False, rollback.UndoKind.NOTHING),
    ("pulumi", False, False, rollback.UndoKind.DESTROY),
    ("ansible", False, False, rollback.UndoKind.NOTHING),
    ("shell", False, False, rollback.UndoKind.NOTHING),
])
def test_default_undo_rules(action, existed, previous, kind):
    step = rollback.undo_step(stage("s", action=action), stack_existed=existed,
                              has_previous=previous)
    assert step.kind is kind


@pytest.mark.parametrize(("details", "why"), [
    ({}, None),
    ({"stack_existed": False}, None),
    ({rollback.TOOL_NOT_STARTED: True}, "it failed before its tool started: nothing to undo"),
    ({rollback.NOTHING_APPLIED: True}, "it failed before changing anything"),
])
def test_an_attempt_that_changed_nothing_needs_no_undo(details, why):
    assert rollback.nothing_to_undo(details) == why


def test_explicit_and_disabled_rollback():
    own = stage("s", rollback={"shell": {"run": "undo"}})
    assert rollback.undo_step(own, stack_existed=None, has_previous=False).kind \
        is rollback.UndoKind.ACTION
    off = stage("s", action="terraform", rollback="none")
    assert rollback.undo_step(off, stack_existed=False, has_previous=False).kind \
        is rollback.UndoKind.NOTHING


UNDO = rollback.UndoKind
TF = "terraform"
CLEAN = {"shell": {"run": "make clean"}}


@pytest.mark.parametrize(("rules", "on_failure", "on_destroy"), [
    ({}, UNDO.DESTROY, UNDO.DESTROY),                                     # destroy follows
    ({"rollback": "none"}, UNDO.NOTHING, UNDO.NOTHING),                   # rollback when unset
    ({"rollback": "none", "destroy": "auto"}, UNDO.NOTHING, UNDO.DESTROY),
    ({"destroy": "none"}, UNDO.DESTROY, UNDO.NOTHING),
    ({"rollback": "none", "destroy": CLEAN}, UNDO.NOTHING, UNDO.ACTION),
    ({"rollback": CLEAN, "destroy": "auto"}, UNDO.ACTION, UNDO.DESTROY),
])
def test_destroy_is_its_own_rule_and_follows_rollback_when_unset(rules, on_failure, on_destroy):
    planned = stage("s", action=TF, **rules)
    assert rollback.undo_step(planned, stack_existed=False, has_previous=False).kind \
        is on_failure
    taken_down = rollback.undo_step(planned, stack_existed=True, has_previous=True,
                                    destroy=True)
    assert taken_down.kind is on_destroy
    if "destroy" in rules and on_destroy is not UNDO.DESTROY:
        assert "`destroy:" in taken_down.note


def approval(identity, decision="approve", plan_hash="H", **inputs):
    return ApprovalRecord("r", "g", identity, decision, plan_hash, 0.0, None, inputs)


QUORUM = ApprovalGate(approvers=("alice", "bob", "carol"), require=2, allow_self_approval=False,
                      inputs={"region": {"type": "choice", "choices": ["eu", "us"],
                                         "default": "eu"}})


@pytest.mark.parametrize(("records", "decision"), [
    ([], GateDecision.PENDING),
    ([approval("alice")], GateDecision.PENDING),
    ([approval("alice"), approval("alice")], GateDecision.PENDING),   # one person counts once
    ([approval("alice"), approval("bob")], GateDecision.APPROVED),
    ([approval("alice"), approval("bob", plan_hash="OTHER")], GateDecision.PENDING),
    ([approval("alice"), approval("bob", "reject")], GateDecision.REJECTED),
])
def test_gate_evaluation(records, decision):
    assert evaluate_gate(QUORUM, records, "H").decision is decision


def test_first_answer_stands_and_defaults_fill_in():
    state = evaluate_gate(QUORUM, [approval("alice", region="us"), approval("bob", region="eu")],
                          "H")
    assert state.inputs == {"region": "us"}
    assert evaluate_gate(QUORUM, [approval("a"), approval("b")], "H").inputs == {"region": "eu"}


def test_who_may_decide():
    with pytest.raises(ApprovalError, match="not an approver"):
        check_decider(QUORUM, "mallory", "dave", [], "H")
    with pytest.raises(ApprovalError, match="started this run"):
        check_decider(QUORUM, "alice", "alice", [], "H")
    with pytest.raises(ApprovalError, match="already decided"):
        check_decider(QUORUM, "alice", "dave", [approval("alice")], "H")
    check_decider(QUORUM, "alice", "dave", [approval("alice", plan_hash="OLD")], "H")
    anyone = ApprovalGate()
    check_decider(anyone, "whoever", "whoever", [], "H")      # a plain confirmation


def test_inputs_are_validated():
    assert check_inputs(QUORUM, {"region": "us"}) == {"region": "us"}
    assert check_inputs(QUORUM, {}) == {}
    with pytest.raises(ApprovalError, match="must be one of"):
        check_inputs(QUORUM, {"region": "mars"})
    with pytest.raises(ApprovalError, match="unknown input"):
        check_inputs(QUORUM, {"zone": "a"})


def test_ready_queue_matches_the_pure_rule_through_a_run():
    statuses: dict[str, StageStatus] = {}
    selected = set(DIAMOND.stages)
    queue = scheduler.ReadyQueue(DIAMOND, statuses, selected)
    order = []
    while True:
        ready = list(queue.ready())
        assert ready == ready_stages(DIAMOND, statuses, selected)
        if not ready:
            break
        stage_id = ready[0]
        queue.started(stage_id)
        statuses[stage_id] = S.SUCCEEDED
        queue.done(stage_id)
        order.append(stage_id)
    assert order == ["a", "b", "c", "d"]


def test_ready_queue_keeps_what_was_not_started_and_requeues_retries():
    queue = scheduler.ReadyQueue(DIAMOND, {"a": S.SUCCEEDED}, set(DIAMOND.stages))
    for _first in queue.ready():
        break                                      # stop early: nothing is lost
    assert list(queue.ready()) == ["b", "c"]
    queue.started("b")
    assert list(queue.ready()) == ["c"]
    queue.requeue("b")
    assert list(queue.ready()) == ["b", "c"]


def record(status, changes=None, error=None, **details):
    return StageRecord("r", "s", 1, status, changes=changes, error=error, details=details)


NO_CHANGE = {"add": 0, "change": 0, "destroy": 0, "outputs": []}


@pytest.mark.parametrize(("stage_record", "verdict", "line"), [
    (record(S.SUCCEEDED, {**NO_CHANGE, "outputs": ["service"]}), PlanVerdict.WOULD_CHANGE,
     "would change: +0 ~0 -0, outputs service"),
    (record(S.SUCCEEDED, {**NO_CHANGE, "add": 1}, outputs_after_apply=["id"]),
     PlanVerdict.WOULD_CHANGE, "would change: +1 ~0 -0; known only after apply: id (the last "
     "applied values stand in, where there are any)"),
    (record(S.SUCCEEDED, NO_CHANGE), PlanVerdict.NO_CHANGES, "no changes"),
    # a moved, import or removed block changes no resource, yet Terraform's plan exits 2
    (record(S.SUCCEEDED, {**NO_CHANGE, "moved": 1}), PlanVerdict.WOULD_CHANGE,
     "would change: +0 ~0 -0, 1 moved"),
    (record(S.SUCCEEDED, {**NO_CHANGE, "imported": 2, "forgotten": 1, "outputs": ["id"]}),
     PlanVerdict.WOULD_CHANGE, "would change: +0 ~0 -0, 2 to import, 1 to forget, outputs id"),
    (record(S.SKIPPED, error="not fully planned: x", not_fully_planned=True),
     PlanVerdict.NOT_FULLY_PLANNED, "not fully planned: x"),
    (record(S.SKIPPED, error="`when` is false"), PlanVerdict.SKIPPED, "`when` is false"),
    (record(S.SUCCEEDED, would_run="echo"), PlanVerdict.WOULD_RUN, "would run"),
    (record(S.FAILED, error="boom"), PlanVerdict.FAILED, "plan failed: boom"),
])
def test_plan_verdicts(stage_record, verdict, line):
    assert stage_plans({"s": stage_record})["s"] == StagePlan(verdict, line)


@pytest.mark.parametrize(("records", "pending", "counts"), [
    ({"a": record(S.SUCCEEDED, NO_CHANGE)}, False,
     "0 would change, 0 not fully planned, 1 no changes"),
    ({"a": record(S.SUCCEEDED, {**NO_CHANGE, "outputs": ["n"]}),
      "b": record(S.SUCCEEDED, NO_CHANGE)}, True,
     "1 would change, 0 not fully planned, 1 no changes"),
    # before a first apply: what could not be planned is no "no changes" (exit 2, not 0)
    ({"a": record(S.SUCCEEDED, NO_CHANGE),
      "b": record(S.SKIPPED, error="not fully planned", not_fully_planned=True),
      "c": record(S.SUCCEEDED, would_check="http://x")}, True,
     "0 would change, 1 not fully planned, 1 no changes, 1 would run"),
])
def test_plan_exit_2_when_a_stage_would_change_or_was_not_fully_planned(records, pending,
                                                                        counts):
    plans = stage_plans(records)
    assert has_pending_changes(plans) is pending
    assert plan_counts(plans) == counts
