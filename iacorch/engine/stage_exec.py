"""The worker side of one stage attempt: its log, its context, its driver call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from iacorch.drivers import execute
from iacorch.drivers.base import StageContext
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.process import CancelToken, ProcessRunner

from .stage_log import StageLog, log_path

LOG_ERROR = "log_error"   # in StageResult.details: the attempt's log could not be written


def run_stage_attempt(spec: StageSpec, process: ProcessRunner, masker: Masker,
                      cancel: CancelToken, emit: Callable[[Event], None]) -> StageResult:
    """Run one attempt with its log at <work_dir>/attempt-N.log; every line is masked."""
    log = StageLog(log_path(spec.work_dir, spec.attempt))

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
