"""The worker side of one stage attempt: its log file, its context, its driver call."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

from iacorch.drivers import execute
from iacorch.drivers.base import StageContext
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.process import CancelToken, ProcessRunner

LOG_ERROR = "log_error"   # in StageResult.details: the attempt's log could not be written


class _StageLog:
    """The attempt's log file, created with its directory on the first line: most quiet
    stages never need either. A log that cannot be written is remembered, not raised, so
    the driver's output loop goes on; the attempt then fails saying so."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.error: OSError | None = None
        self._file: TextIO | None = None

    def write(self, line: str) -> None:
        if self.error is not None:
            return
        try:
            if self._file is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.error = self.error or exc


def run_stage_attempt(spec: StageSpec, process: ProcessRunner, masker: Masker,
                      cancel: CancelToken, emit: Callable[[Event], None]) -> StageResult:
    """Run one attempt with its log at <work_dir>/attempt-N.log; every line is masked."""
    log = _StageLog(os.path.join(spec.work_dir, f"attempt-{spec.attempt}.log"))

    def on_line(line: str) -> None:
        log.write(line)
        emit(Event(EventKind.STAGE_LOG, spec.run_id, spec.stage_id, {"line": line}))

    def on_progress(progress: Any) -> None:
        emit(Event(EventKind.STAGE_PROGRESS, spec.run_id, spec.stage_id,
                   {"progress": masker.mask_value(dict(progress))}))

    ctx = StageContext(spec=spec, process=process, masker=masker, cancel=cancel,
                       on_line=on_line, on_progress=on_progress)
    try:
        result = execute(ctx)
        if result.error:
            log.write(f"error: {masker.mask(result.error)}")
    finally:
        log.close()
    if log.error is not None:  # typically a full disk: the output is lost, the outcome is not
        warning = (f"its log {log.path} could not be written ({log.error.strerror}): "
                   "its output is only in what the console showed")
        emit(Event(EventKind.STAGE_LOG, spec.run_id, spec.stage_id,
                   {"line": f"warning: {warning}"}))
        return dataclasses.replace(result, details={**result.details, LOG_ERROR: warning})
    return result
