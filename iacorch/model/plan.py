"""The compiled plan: stages with resolved dependencies, ready for the engine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iacorch.errors import Location
from iacorch.model.results import SecretRef
from iacorch.model.status import FailurePolicy, OnTimeout, StageKind

# Why plan and drift skip a stage the runbook marks `dry_run: false`.
NOT_SAFE_TO_DRY_RUN = "not safe to dry-run (runbook says so)"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 1
    backoff: float = 0.0


@dataclass(frozen=True, slots=True)
class ApprovalGate:
    approvers: tuple[str, ...] = ()
    require: int = 1
    allow_self_approval: bool = True
    message: str | None = None
    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timeout: float | None = None
    on_timeout: OnTimeout = OnTimeout.REJECT


@dataclass(frozen=True, slots=True)
class PlannedStage:
    """One node of the graph: a stage after `for_each` expansion."""

    id: str                                   # "web[eu]" for an expanded stage
    base_id: str                              # "web"
    kind: StageKind
    action_type: str | None                   # the driver; None for an approval gate
    action: Mapping[str, Any]                 # unrendered: templates are rendered at run time
    needs: tuple[str, ...]                    # expanded ids this stage waits for
    location: Location
    item: Any = None                          # the for_each item, `item` in templates
    item_key: str | None = None
    when: str | bool | None = None
    timeout: float | None = None
    retry: RetryPolicy = RetryPolicy()
    on_failure: FailurePolicy | None = None
    rollback: str | Mapping[str, Any] = "auto"  # "auto", "none" or {driver: action}
    destroy: str | Mapping[str, Any] | None = None  # as `rollback`; None: follow `rollback`
    idempotent: bool = True
    approval: ApprovalGate | None = None
    is_finally: bool = False
    mock_outputs: Mapping[str, Any] | None = None
    # where each `stages.X.outputs...` reference of its templates is written, keyed by the
    # path after `stages.` ("net.outputs.cidr"): run-time errors point there
    reference_locations: Mapping[str, Location] = field(default_factory=dict)
    dry_run: bool = True                      # false: plan and drift skip it, and say why
    pool: str | None = None                   # worker pool its attempts run on; None: here


@dataclass(frozen=True, slots=True)
class Plan:
    """A runbook compiled against a set of vars: the graph the engine runs."""

    name: str
    path: Path
    root: Path                                # directory the runbook's relative paths start from
    vars: Mapping[str, Any]
    secret_names: frozenset[str]
    stages: Mapping[str, PlannedStage]        # forward stages, in a topological order
    finally_stages: Mapping[str, PlannedStage]
    layers: tuple[tuple[str, ...], ...]
    expansions: Mapping[str, tuple[str, ...]]  # base id -> expanded ids
    plan_hash: str
    concurrency: int
    on_failure: FailurePolicy
    deadline: float | None
    workspace: str
    runbook: Any = None                       # the validated Runbook model
    policy_hash: str | None = None            # sha256 of the policy set it was checked against
    secret_locations: Mapping[str, Location] = field(default_factory=dict)  # name -> its key
    secret_refs: tuple[SecretRef, ...] = ()   # each secret by name and source (no value)

    def dependents(self) -> dict[str, list[str]]:
        """Stage id -> ids of the stages that need it."""
        found: dict[str, list[str]] = {sid: [] for sid in self.stages}
        for stage in self.stages.values():
            for need in stage.needs:
                found[need].append(stage.id)
        return found


def topological_layers(needs: Mapping[str, Iterable[str]]) -> tuple[tuple[str, ...], ...]:
    """Each stage in the first layer it can run in; raises graphlib.CycleError on a cycle."""
    from graphlib import TopologicalSorter

    sorter = TopologicalSorter(needs)
    sorter.prepare()
    layers: list[tuple[str, ...]] = []
    while sorter.is_active():
        layer = sorter.get_ready()
        layers.append(layer)
        sorter.done(*layer)
    return tuple(layers)
