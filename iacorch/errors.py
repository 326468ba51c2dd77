"""The error tree: every error a user can cause, with where and how to fix it.

This module imports nothing else from iacorch, so every layer can raise these.
The CLI is the one place that turns them into messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class IacorchError(Exception):
    """Base of every error a user can cause; carries the exit code the CLI uses."""

    exit_code = 70

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

    exit_code = 64


class RunbookError(IacorchError):
    """The runbook is invalid. Carries every problem found, not only the first."""

    exit_code = 65

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

    exit_code = 1


class LockedError(IacorchError):
    """Another run holds the lock for this runbook and workspace."""

    exit_code = 5


class ToolMissingError(IacorchError):
    """A tool the runbook needs (terraform, pulumi, ...) is not installed."""

    exit_code = 1


class RunNotFoundError(UsageError):
    """A run id that the store does not know."""


class ApprovalError(IacorchError):
    """An approval or rejection that is not allowed: wrong identity, expired, reused."""

    exit_code = 1
