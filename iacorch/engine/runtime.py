"""The Runtime: the one bundle of side effects the engine uses, built by the CLI."""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from iacorch.model.events import Event
from iacorch.process import CancelToken, ProcessRunner

if TYPE_CHECKING:
    from iacorch.policy.guard import PolicyGuard
    from iacorch.store.base import Store

    from .executor import Executor


class EventSink(Protocol):
    """Console views, JSON streams and report collectors all receive every event."""

    def handle(self, event: Event) -> None: ...


def current_identity() -> str:
    """Who is acting: $IACORCH_USER, else the login name."""
    explicit = os.environ.get("IACORCH_USER")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


@dataclass
class Runtime:
    store: Store
    state_dir: Path
    process: ProcessRunner = field(default_factory=ProcessRunner)
    sinks: list[EventSink] = field(default_factory=list)
    cancel: CancelToken = field(default_factory=CancelToken)
    clock: Callable[[], float] = time.time
    identity: str = field(default_factory=current_identity)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    interactive: bool = False
    interrupt_signal: int | None = None  # set by the CLI's signal handler
    prompt: Callable[[Any], Any] | None = None  # asks a person at a terminal (gates.Prompt)
    executor: Executor = field(default=None)  # type: ignore[assignment]  # set in post-init
    policy: PolicyGuard | None = None         # the organisation's policy, when one is set

    def __post_init__(self) -> None:
        if self.executor is None:
            from .executor import LocalExecutor

            self.executor = LocalExecutor(self.process, self.cancel, self.emit)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.handle(event)

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    def stage_dir(self, run_id: str, stage_id: str) -> Path:
        return self.run_dir(run_id) / stage_id
