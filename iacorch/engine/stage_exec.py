"""The worker side of one stage attempt: its log file, its context, its driver call."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from iacorch.drivers import execute
from iacorch.drivers.base import StageContext
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.process import CancelToken, ProcessRunner


class _StageLog:
    """The attempt's log file, created on the first line: most quiet stages never need one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def write(self, line: str) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._file.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def run_stage_attempt(spec: StageSpec, process: ProcessRunner, masker: Masker,
                      cancel: CancelToken, emit: Callable[[Event], None]) -> StageResult:
    """Run one attempt with its log at <work_dir>/attempt-N.log; every line is masked."""
    work_dir = Path(spec.work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return StageResult.failure(
            f"cannot write the stage's log in {work_dir}: {exc.strerror}; nothing was run",
            hint="free disk space and inodes there (df -h; df -i), then `iacorch resume`")
    log = _StageLog(work_dir / f"attempt-{spec.attempt}.log")

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
    except OSError as exc:  # the log itself could not be written: the disk is full
        return StageResult.failure(
            f"cannot write the stage's log {log.path}: {exc.strerror}",
            hint="free disk space and inodes there (df -h; df -i), then `iacorch resume`")
    finally:
        log.close()
    return result
