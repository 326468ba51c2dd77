"""Pure scheduling rules: which stages are selected, ready, or blocked by a failure."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping

from iacorch.model.plan import Plan
from iacorch.model.status import StageKind, StageStatus

_BLOCKING = (StageStatus.FAILED, StageStatus.CANCELLED, StageStatus.ROLLED_BACK,
             StageStatus.ROLLBACK_FAILED)


def select_stages(plan: Plan, *, only: Iterable[str] = (), targets: Iterable[str] = ()) -> set[str]:
    """Stage ids to run: `--target` stages with everything they need, filtered by `--only` kinds.

    A target may name a base id (`web`) to take all its for_each expansions.
    """
    selected = set(plan.stages)
    target_list = list(targets)
    if target_list:
        wanted: set[str] = set()
        pending = [e for t in target_list for e in plan.expansions.get(t, (t,))]
        while pending:
            stage_id = pending.pop()
            if stage_id in wanted:
                continue
            wanted.add(stage_id)
            pending.extend(plan.stages[stage_id].needs)
        selected &= wanted
    kinds = {StageKind(k) for k in only}
    if kinds:
        selected = {sid for sid in selected if plan.stages[sid].kind in kinds}
    return selected


def blocked_stages(plan: Plan, statuses: Mapping[str, StageStatus],
                   selected: set[str]) -> dict[str, str]:
    """Pending stages that can never run because a need failed -> the upstream culprit.

    Used with `on_failure: continue`: these are marked skipped while independent
    branches finish. Blocking propagates along the plan's topological order.
    """
    culprit: dict[str, str] = {}
    for stage_id, stage in plan.stages.items():
        if stage_id not in selected or statuses.get(stage_id) not in (None, StageStatus.PENDING):
            continue
        for need in stage.needs:
            if need in culprit:
                culprit[stage_id] = culprit[need]
                break
            if statuses.get(need) in _BLOCKING:
                culprit[stage_id] = need
                break
    return culprit


class ReadyQueue:
    """The ready stages (pending, selected, every selected need done), kept incrementally:
    O(log n) per change instead of O(stages).

    Pure bookkeeping with no I/O; the run loop tells it what settled and asks what
    may start. A need outside the selection never holds a stage back.
    """

    def __init__(self, plan: Plan, statuses: Mapping[str, StageStatus],
                 selected: set[str]) -> None:
        self._order = {sid: index for index, sid in enumerate(plan.stages)}
        self._dependents = plan.dependents()
        self._unmet: dict[str, int] = {}
        self._ready: set[str] = set()
        self._heap: list[tuple[int, str]] = []   # may hold stale entries; _ready decides
        for stage_id, stage in plan.stages.items():
            if stage_id not in selected or statuses.get(
                    stage_id, StageStatus.PENDING) is not StageStatus.PENDING:
                continue
            unmet = sum(1 for need in stage.needs if need in selected
                        and not statuses.get(need, StageStatus.PENDING).is_done)
            self._unmet[stage_id] = unmet
            if unmet == 0:
                self._push(stage_id)

    def _push(self, stage_id: str) -> None:
        self._ready.add(stage_id)
        heapq.heappush(self._heap, (self._order[stage_id], stage_id))

    def ready(self) -> Iterator[str]:
        """Stages that may start now, in plan order, produced lazily.

        Stop iterating whenever you like: stages not started stay ready.
        """
        taken: set[tuple[int, str]] = set()
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                if entry[1] in self._ready and entry not in taken:
                    taken.add(entry)
                    yield entry[1]
        finally:
            for entry in taken:
                if entry[1] in self._ready:
                    heapq.heappush(self._heap, entry)

    def ready_count(self) -> int:
        """How many stages may start now (or once their retry delay is over)."""
        return len(self._ready)

    def started(self, stage_id: str) -> None:
        self._ready.discard(stage_id)
        self._unmet.pop(stage_id, None)

    def requeue(self, stage_id: str) -> None:
        """A stage going back to pending (a retry): its needs are still met."""
        self._unmet[stage_id] = 0
        self._push(stage_id)

    def done(self, stage_id: str) -> None:
        """`stage_id` finished for good (succeeded, skipped, marked done)."""
        self.started(stage_id)
        for child in self._dependents.get(stage_id, ()):
            if child in self._unmet:
                self._unmet[child] -= 1
                if self._unmet[child] == 0:
                    self._push(child)
