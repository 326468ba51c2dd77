"""A run's options, its state while it runs, and its outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iacorch.model.events import Event, EventKind
from iacorch.model.status import Operation, RunStatus, StageStatus

if TYPE_CHECKING:
    from .undo_runner import UndoOutcome


@dataclass
class RunOptions:
    operation: Operation = Operation.APPLY
    only: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    concurrency: int | None = None
    mock: bool = False          # plan only: mock_outputs stand in for outputs never produced


@dataclass
class RunState:
    """What the loop knows about each stage; seeded from the store on resume."""

    statuses: dict[str, StageStatus] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    gate_details: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: RunStatus
    statuses: Mapping[str, StageStatus]
    errors: Mapping[str, str]
    elapsed: float
    deadline: float | None
    waiting_gates: tuple[str, ...] = ()
    undo: UndoOutcome | None = None
    warnings: Mapping[str, str] = field(default_factory=dict)   # stage -> what went wrong
    deadline_breached_now: bool = False   # this process found the run over its deadline

    def finished_event(self, operation: str) -> Event:
        """RUN_FINISHED: everything a sink needs to tell how the run ended (errors masked)."""
        return Event(EventKind.RUN_FINISHED, self.run_id, data={
            "status": self.status.value, "operation": operation,
            "elapsed": round(self.elapsed, 3), "deadline": self.deadline,
            "deadline_breached": self.deadline_breached_now,
            "errors": dict(self.errors), "waiting_gates": list(self.waiting_gates),
            "stages": {sid: status.value for sid, status in self.statuses.items()}})
