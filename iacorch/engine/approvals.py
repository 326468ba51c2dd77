"""Approval gates: who may decide, how many must agree, and what a decision binds to."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from iacorch.errors import ApprovalError, GateConflictError
from iacorch.model.plan import ApprovalGate
from iacorch.model.status import Choice
from iacorch.store.base import ApprovalRecord, Store


class GateDecision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class GateState:
    decision: GateDecision
    approved_by: tuple[str, ...] = ()
    rejected_by: str | None = None
    missing: int = 0
    inputs: dict[str, Any] | None = None


def evaluate_gate(gate: ApprovalGate, records: Sequence[ApprovalRecord],
                  plan_hash: str) -> GateState:
    """Decide a gate from the recorded decisions that are bound to this plan hash."""
    current = [r for r in records if r.plan_hash == plan_hash]
    for record in current:
        if record.decision == Choice.REJECT:
            return GateState(GateDecision.REJECTED, rejected_by=record.identity)
    approvers: list[str] = []
    inputs: dict[str, Any] = {}
    for record in current:
        if record.decision == Choice.APPROVE and record.identity not in approvers:
            approvers.append(record.identity)
            for name, value in record.inputs.items():
                inputs.setdefault(name, value)  # the first approver's answer stands
    missing = max(0, gate.require - len(approvers))
    if missing:
        return GateState(GateDecision.PENDING, tuple(approvers), missing=missing)
    for name, spec in gate.inputs.items():
        inputs.setdefault(name, spec.get("default"))
    return GateState(GateDecision.APPROVED, tuple(approvers), inputs=inputs)


def check_decider(gate: ApprovalGate, identity: str, started_by: str,
                  records: Sequence[ApprovalRecord], plan_hash: str) -> None:
    """Raise ApprovalError unless `identity` may decide this gate now."""
    if gate.approvers and identity not in gate.approvers:
        raise ApprovalError(f"{identity} is not an approver of this gate",
                            hint=f"allowed: {', '.join(gate.approvers)} (identity comes from "
                                 "$IACORCH_USER, else the login name)")
    if identity == started_by and not gate.allow_self_approval:
        raise ApprovalError(f"{identity} started this run and cannot approve it",
                            hint="ask another approver; the gate does not allow self-approval")
    if any(r.identity == identity and r.plan_hash == plan_hash for r in records):
        raise ApprovalError(f"{identity} has already decided this gate",
                            hint=f"the gate needs {gate.require} distinct approvers")


@dataclass(frozen=True, slots=True)
class Decision:
    """One person's answer at a gate, and how their identity was proven (`via`)."""

    identity: str
    decision: Choice
    comment: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    via: str = "command line"               # terminal, command line, api token, ...
    seen_gate_hash: str | None = None       # the gate hash the decider was shown, if any


@dataclass(frozen=True, slots=True)
class OpenGate:
    """A gate as it waits: what it binds to, when it opened, who started the run."""

    run_id: str
    gate_id: str
    gate: ApprovalGate
    gate_hash: str
    opened_at: float | None
    started_by: str


def record_decision(store: Store, opened: OpenGate, decision: Decision, now: float) -> None:
    """Every rule of deciding a gate, for every front door: expiry, who may decide,
    typed inputs; then the decision and its audit entry in one durable commit."""
    gate = opened.gate
    if gate.timeout and opened.opened_at and now - opened.opened_at > gate.timeout:
        raise ApprovalError(f"the gate `{opened.gate_id}` expired (timeout {gate.timeout:.0f}s)",
                            hint=f"`iacorch resume {opened.run_id}` applies its on_timeout "
                                 f"({gate.on_timeout})")
    if decision.seen_gate_hash is not None and decision.seen_gate_hash != opened.gate_hash:
        raise GateConflictError(
            f"the gate `{opened.gate_id}` now binds to plan {opened.gate_hash[:12]}, not the "
            f"{decision.seen_gate_hash[:12]} you were shown",
            hint="look at the gate's plan again before deciding")
    values = (check_inputs(gate, dict(decision.inputs)) if decision.decision is Choice.APPROVE
              else {})
    # Checked and written in one transaction: of two deciders at once, one sees the other.
    with store.transaction(durable=True):
        existing = store.approvals(opened.run_id, opened.gate_id)
        check_decider(gate, decision.identity, opened.started_by, existing, opened.gate_hash)
        state = evaluate_gate(gate, existing, opened.gate_hash)
        if state.decision is not GateDecision.PENDING:
            by = state.rejected_by or ", ".join(state.approved_by)
            raise GateConflictError(f"the gate `{opened.gate_id}` was already {state.decision} "
                                    f"by {by}", hint=f"resume the run: `iacorch resume "
                                                     f"{opened.run_id}`")
        store.record_approval(ApprovalRecord(
            opened.run_id, opened.gate_id, decision.identity, decision.decision,
            opened.gate_hash, now, decision.comment, values))
        store.append_audit(f"approval_{decision.decision}", run_id=opened.run_id,
                           stage_id=opened.gate_id, actor=decision.identity,
                           data={"gate_hash": opened.gate_hash, "comment": decision.comment or "",
                                 "via": decision.via})


def check_inputs(gate: ApprovalGate, given: dict[str, str]) -> dict[str, Any]:
    """Validate the answers an approver gave; defaults are filled when the gate opens."""
    values: dict[str, Any] = {}
    for name, spec in gate.inputs.items():
        raw = given.get(name)
        if raw is None:
            if spec.get("default") is None:
                raise ApprovalError(f"input `{name}` is required",
                                    hint=f"pass --input {name}=VALUE")
            continue
        kind = spec.get("type", "string")
        try:
            value = _CONVERTERS.get(kind, str)(raw)
        except ValueError:
            raise ApprovalError(f"input `{name}` must be {kind}, got {raw!r}") from None
        choices = spec.get("choices")
        if choices and value not in choices:
            raise ApprovalError(f"input `{name}` must be one of {choices}, got {value!r}")
        values[name] = value
    unknown = set(given) - set(gate.inputs)
    if unknown:
        raise ApprovalError(f"unknown input `{sorted(unknown)[0]}`",
                            hint=f"this gate takes: {', '.join(gate.inputs) or 'no inputs'}")
    return values


def _to_bool(raw: Any) -> bool:
    """Yes/no answers as typed at a prompt or on the command line."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "y", "1"):
        return True
    if text in ("false", "no", "n", "0"):
        return False
    raise ValueError(raw)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {"int": int, "bool": _to_bool}
