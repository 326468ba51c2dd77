"""Child processes: argv only, streamed and masked line by line, timed out politely.

Every driver that starts a program goes through `ProcessRunner.run`.
(Interface fixed; implementation in progress.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from iacorch.model.masking import Masker


class CancelToken:
    """Shared by the engine and running stages: one interrupt, then perhaps a kill."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()
        self._killed = threading.Event()

    def interrupt(self) -> None:
        """Ask running children to stop: each gets exactly one SIGINT."""
        self._interrupted.set()

    def kill(self) -> None:
        """Stop now (a third Ctrl-C): SIGKILL, possible data loss."""
        self._interrupted.set()
        self._killed.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    @property
    def killed(self) -> bool:
        return self._killed.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout`, waking early on an interrupt; True when interrupted."""
        return self._interrupted.wait(timeout)


@dataclass(frozen=True, slots=True)
class ProcessResult:
    argv: tuple[str, ...]
    exit_code: int | None          # None when the process could not start
    duration: float
    tail: tuple[str, ...] = ()     # last lines of output, masked
    timed_out: bool = False
    interrupted: bool = False
    killed: bool = False
    start_error: str | None = None  # e.g. "terraform: command not found"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.interrupted)


class ProcessRunner:
    """Starts children in their own session and owns their whole life."""

    def __init__(self, *, sigint_grace: float = 10.0, sigterm_grace: float = 5.0,
                 tail_lines: int = 40) -> None:
        self.sigint_grace = sigint_grace
        self.sigterm_grace = sigterm_grace
        self.tail_lines = tail_lines

    def run(self, argv: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            cancel: CancelToken | None = None, masker: Masker | None = None,
            on_line: Callable[[str], None] | None = None,
            stdin: bytes | None = None) -> ProcessResult:
        raise NotImplementedError
