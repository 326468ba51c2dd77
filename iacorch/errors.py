"""The error tree: every error a user can cause, with where and how to fix it.

This module imports nothing else from iacorch, so every layer can raise these.
The CLI is the one place that turns them into messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a source file; line and column are 1-based."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a runbook: where, what, and what to do about it."""

    message: str
    location: Location | None = None
    hint: str | None = None
    related: tuple[Location, ...] = ()

    def render(self) -> str:
        """Format as `file:line:col: error: message` plus hint and related places."""
        prefix = f"{self.location}: " if self.location else ""
        lines = [f"{prefix}error: {self.message}"]
        lines += [f"  {loc}: note: first defined here" for loc in self.related]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class ExitCode(IntEnum):
    """The one table of exit codes (README, `iacorch --help`, DESIGN.md §4).

    Run outcomes use 0-5; a command that could not do its work at all uses the
    sysexits codes, so a pipeline can tell "the deployment failed" (1) from
    "iacorch could not run here" (69, 74) or "you may not do that" (77).
    """

    SUCCESS = 0
    RUN_FAILED = 1              # failed, rolled back, rejected at a gate
    CHANGES_PRESENT = 2         # drift, or plan --detailed-exitcode
    WAITING_APPROVAL = 3
    ROLLBACK_FAILED = 4
    LOCKED = 5
    BAD_INVOCATION = 64
    INVALID_RUNBOOK = 65
    TOOL_MISSING = 69           # a program the runbook needs is not installed
    INTERNAL_ERROR = 70
    STORE_UNUSABLE = 74         # state.db damaged, foreign, read-only, full, locked
    NOT_ALLOWED = 77            # an approval refused: not an approver, expired, decided
    INTERRUPTED = 130
    TERMINATED = 143


class IacorchError(Exception):
    """Base of every error a user can cause; carries the exit code the CLI uses."""

    exit_code = ExitCode.INTERNAL_ERROR

    def __init__(self, message: str, *, hint: str | None = None,
                 location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location

    @property
    def problems(self) -> tuple[Problem, ...]:
        return (Problem(self.message, self.location, self.hint),)

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)


class UsageError(IacorchError):
    """Bad invocation: a missing file, an unknown flag value, a malformed --var."""

    exit_code = ExitCode.BAD_INVOCATION


class RunbookError(IacorchError):
    """The runbook is invalid. Carries every problem found, not only the first."""

    exit_code = ExitCode.INVALID_RUNBOOK

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        first = problems[0]
        super().__init__(first.message, hint=first.hint, location=first.location)
        self._problems = tuple(problems)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self._problems

    @classmethod
    def single(cls, message: str, location: Location | None = None,
               hint: str | None = None,
               related: tuple[Location, ...] = ()) -> RunbookError:
        return cls([Problem(message, location, hint, related)])


class StoreError(IacorchError):
    """The state store is unreadable, corrupt, too new, read-only or full."""

    exit_code = ExitCode.STORE_UNUSABLE


class LockedError(IacorchError):
    """Another run holds the lock for this runbook and workspace."""

    exit_code = ExitCode.LOCKED


class ToolMissingError(IacorchError):
    """A tool the runbook needs (terraform, pulumi, ...) is not installed."""

    exit_code = ExitCode.TOOL_MISSING


class PluginError(IacorchError):
    """A driver package that is installed but broken, or a driver nobody installed."""

    exit_code = ExitCode.TOOL_MISSING   # like a missing program: this machine lacks it


class RunNotFoundError(UsageError):
    """A run id that the store does not know."""


class ApprovalError(IacorchError):
    """An approval or rejection that is not allowed: wrong identity, expired, reused."""

    exit_code = ExitCode.NOT_ALLOWED


class GateConflictError(ApprovalError):
    """A decision that came too late: the gate was decided, or its plan changed, meanwhile."""


class AuthenticationError(IacorchError):
    """A request whose identity could not be proven: no, unknown, expired or revoked token."""

    exit_code = ExitCode.NOT_ALLOWED
