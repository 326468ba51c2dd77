"""Events: what the engine tells the console, reports, notifications and the audit log."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"
    STAGE_STARTED = "stage_started"
    STAGE_LOG = "stage_log"
    STAGE_PROGRESS = "stage_progress"
    STAGE_RETRY = "stage_retry"
    STAGE_FINISHED = "stage_finished"
    APPROVAL_REQUESTED = "approval_requested"
    DEADLINE_BREACHED = "deadline_breached"
    ROLLBACK_STARTED = "rollback_started"
    DRIFT_DETECTED = "drift_detected"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    run_id: str
    stage_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind.value, "run": self.run_id, "stage": self.stage_id,
                "time": self.time, **self.data}
