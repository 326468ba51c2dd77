"""The Driver protocol: how the engine asks a tool to plan, apply, destroy or drift-check.

Drivers know nothing of the graph or the store. A failing tool is a failed
`StageResult`, never an exception; only bugs raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.process import CancelToken, ProcessResult, ProcessRunner


@dataclass
class StageContext:
    """One stage attempt's view of the world: its spec and the side effects it may use."""

    spec: StageSpec
    process: ProcessRunner
    masker: Masker
    cancel: CancelToken
    on_line: Callable[[str], None] = lambda line: None   # masked lines: stage log + console
    on_progress: Callable[[Mapping[str, Any]], None] = lambda event: None
    started: float = field(default_factory=time.monotonic)

    @property
    def work_dir(self) -> Path:
        return Path(self.spec.work_dir)

    @property
    def root_dir(self) -> Path:
        return Path(self.spec.root_dir)

    def resolve(self, relative: str) -> Path:
        """A path from the runbook, relative to the runbook's directory."""
        return (self.root_dir / relative).resolve()

    def remaining_timeout(self) -> float | None:
        if self.spec.timeout is None:
            return None
        return max(0.0, self.spec.timeout - (time.monotonic() - self.started))

    def log(self, line: str) -> None:
        self.on_line(self.masker.mask(line))

    def run(self, argv: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None,
            stdin: bytes | None = None) -> ProcessResult:
        """Run a program with this stage's timeout, cancellation, masking and log."""
        return self.process.run(
            argv, cwd=cwd, env=env, timeout=self.remaining_timeout(), cancel=self.cancel,
            masker=self.masker, on_line=self.on_line, stdin=stdin)


class Driver(Protocol):
    """One tool behind the four operations the engine knows.

    What the engine needs to know without running the tool (its runbook key, action
    model, default undo...) is its `DriverSpec` (iacorch.model.driver_spec).
    """

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """Programs that must be on PATH to run this action (checked before any stage runs)."""
        ...

    def install_hint(self, tool: str) -> str:
        """What to tell a user whose machine lacks `tool`, and where the driver looked."""
        ...

    def plan(self, ctx: StageContext) -> StageResult: ...

    def apply(self, ctx: StageContext) -> StageResult: ...

    def destroy(self, ctx: StageContext) -> StageResult: ...

    def drift(self, ctx: StageContext) -> StageResult: ...
