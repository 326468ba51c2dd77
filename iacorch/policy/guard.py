"""The policy guard: one loaded policy set asked at each point where something is allowed.

validate/graph/plan/apply (`enforce`), the executing side before each stage
(`stage_refusal`) and every approval (`approval_refusal`). The interpreter is built
once and reused; verdicts are cached per plan hash, operation and concurrency.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from iacorch.errors import PolicyViolation
from iacorch.model.plan import Plan
from iacorch.model.status import StageStatus

from .enforce import add_required_gates, requirement_checks, violations
from .facts import policy_input
from .policy_set import PolicySet, load_policy_set, policy_directory
from .rego import RegoEngine
from .verdict import GateRequirement, Verdict, evaluate

Required = tuple[GateRequirement, str | None]   # a requirement, and the gate meeting it


class PolicyGuard:
    """A policy set and its interpreter; safe to share between stage worker threads."""

    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self._engine: RegoEngine | None = None
        self._lock = threading.Lock()
        self._verdicts: dict[tuple[str, str, int | None], Verdict] = {}
        self._required: dict[tuple[str, str, int | None], dict[str, list[Required]]] = {}

    @property
    def digest(self) -> str:
        return self.policy.digest

    def evaluate(self, input_doc: Mapping[str, Any]) -> Verdict:
        """The verdict for an input document (policy.facts.policy_input)."""
        with self._lock:
            return evaluate(self._loaded(), input_doc)

    def _loaded(self) -> RegoEngine:
        if self._engine is None:
            self._engine = RegoEngine(self.policy.rules, self.policy.data,
                                      self.policy.directory)
        return self._engine

    def verdict(self, plan: Plan, *, operation: str = "validate",
                concurrency: int | None = None) -> Verdict:
        key = (plan.plan_hash, operation, concurrency)
        if key not in self._verdicts:
            self._verdicts[key] = self.evaluate(
                policy_input(plan, operation=operation, concurrency=concurrency))
        return self._verdicts[key]

    def enforce(self, plan: Plan, *, operation: str = "validate",
                concurrency: int | None = None) -> Plan:
        """The plan with the gates policy adds; raises PolicyViolation with every problem.

        The policy is asked again about the plan with its gates, so a rule that looks at
        gates sees the ones the policy added.
        """
        first = self.verdict(plan, operation=operation, concurrency=concurrency)
        gated = add_required_gates(plan, first, self.policy)
        final = first if gated.plan_hash == plan.plan_hash else self.verdict(
            gated, operation=operation, concurrency=concurrency)
        problems = violations(gated, final, self.policy)
        if problems:
            raise PolicyViolation(problems)
        return gated

    def stage_refusal(self, plan: Plan, stage_id: str, statuses: Mapping[str, StageStatus],
                      *, operation: str, concurrency: int | None = None) -> str | None:
        """Why the executing side must not start `stage_id` now, or None.

        Denials for the stage (or the runbook), and every gate policy requires before it:
        one that satisfies the requirement must have been approved in this run (a
        `--target`, `--only` or a plan compiled under another policy cannot skip it).
        """
        verdict = self.verdict(plan, operation=operation, concurrency=concurrency)
        for denial in verdict.denials:
            if denial.stage in (None, stage_id):
                return f"policy: {denial.message}"
        key = (plan.plan_hash, operation, concurrency)
        if key not in self._required:   # once per run, not once per stage
            self._required[key] = _required_gates(plan, verdict)
        for requirement, gate in self._required[key].get(stage_id, ()):
            if gate is None:
                return (f"policy `{requirement.name}` requires a gate approved by "
                        f"{requirement.who} before this stage, and this plan has none")
            if statuses.get(gate) is not StageStatus.SUCCEEDED:
                return (f"policy `{requirement.name}` requires gate `{gate}` to be "
                        "approved in this run before this stage")
        return None

    def approval_refusal(self, plan: Plan, gate_id: str, *, identity: str, requester: str,
                         decision: str) -> str | None:
        """Why policy refuses this person's decision at this gate, or None."""
        verdict = self.evaluate(policy_input(plan, operation="approve", approval={
            "gate": gate_id, "identity": identity, "requester": requester,
            "decision": decision}))
        messages = [d.message for d in verdict.denials if d.stage in (None, gate_id)]
        return "; ".join(messages) or None


def _required_gates(plan: Plan, verdict: Verdict) -> dict[str, list[Required]]:
    """Stage -> each requirement covering it and the gate before it that meets it (None:
    no gate does). Gates and `finally` stages are not covered."""
    found: dict[str, list[Required]] = {}
    for check in requirement_checks(plan, verdict):
        for stage_id in check.requirement.stages:
            stage = plan.stages.get(stage_id)
            if stage is not None and stage.approval is None:
                found.setdefault(stage_id, []).append(
                    (check.requirement, check.met_by.get(stage_id)))
    return found


def guard_for(flag: str | None) -> PolicyGuard | None:
    """The guard of `--policy DIR` or $IACORCH_POLICY_DIR; None when neither is set
    (then nothing about policy is loaded or imported)."""
    directory = policy_directory(flag)
    if directory is None:
        return None
    guard = PolicyGuard(load_policy_set(directory))
    guard._loaded()   # a module that does not parse is an error now, before anything runs
    return guard
