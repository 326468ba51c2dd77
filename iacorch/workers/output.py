"""Tool output of attempts running on workers, shown on the coordinator as it is written.

A worker writes each attempt's log under the shared directory (docs/workers.md). Every
`interval` seconds the coordinator reads what was added to the logs of its attempts in
flight and emits each line as a STAGE_LOG event, as a stage run here does. Without a
shared directory the file never appears here, and the console shows only the start and
the end of the stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from iacorch.engine.stage_log import LogTail, log_path, without_time
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.results import StageSpec


@dataclass(frozen=True)
class _Followed:
    spec: StageSpec
    masker: Masker
    tail: LogTail


class AttemptOutput:
    """Follows the logs of attempts in flight, from a thread of its own."""

    def __init__(self, emit: Callable[[Event], None], interval: float = 0.25) -> None:
        self._emit, self._interval = emit, interval
        self._following: dict[str, _Followed] = {}
        self._lock = threading.Lock()  # one reader of each log at a time
        threading.Thread(target=self._loop, name="attempt-output", daemon=True).start()

    def follow(self, attempt_id: str, spec: StageSpec, masker: Masker) -> None:
        """Show the attempt's log lines from now on."""
        tail = LogTail(log_path(spec.work_dir, spec.attempt))
        with self._lock:
            self._following[attempt_id] = _Followed(spec, masker, tail)

    def done(self, attempt_id: str) -> None:
        """Show the attempt's last lines and stop following it."""
        with self._lock:
            followed = self._following.pop(attempt_id, None)
            if followed is not None:
                self._show(followed, final=True)

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                for followed in self._following.values():
                    self._show(followed)

    def _show(self, followed: _Followed, final: bool = False) -> None:
        spec = followed.spec
        for line in followed.tail.new_lines(final=final):
            self._emit(Event(EventKind.STAGE_LOG, spec.run_id, spec.stage_id,
                             {"line": followed.masker.mask(without_time(line))}))
