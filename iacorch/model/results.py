"""What flows between the engine and the drivers: specs in, results out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from iacorch.model.status import Operation, StageStatus

DIFF_PREVIEW_LINES = 30   # lines of a diff shown under a task or a stage; the rest is counted


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A runbook secret by name and source (`{"env": "DB_PASSWORD"}`), never by value."""

    name: str
    source: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """Everything a driver needs to run one stage once: plain, serialisable data.

    A stage's execution is a pure function of this spec. It holds secret values, so
    it stays in the process that resolved them: an executor that ships attempts
    elsewhere sends `iacorch.engine.stage_requests.to_request(spec)` instead, in
    which the secrets are `secret_refs` and the rest of what is secret is sealed.
    """

    run_id: str
    stage_id: str
    driver: str                               # a registered driver's name
    operation: Operation
    action: Mapping[str, Any]                 # rendered
    root_dir: str                             # the runbook's directory
    work_dir: str                             # .iacorch/runs/<run>/<stage>/: logs, artifacts
    state_dir: str                            # .iacorch/: shared caches such as TF plugins
    attempt: int = 1
    timeout: float | None = None
    saved_plan: str | None = None             # a plan computed earlier (approval) to apply
    secret_values: tuple[str, ...] = ()       # for masking; never logged
    secret_env: Mapping[str, str] = field(default_factory=dict)  # env-only secret values
    env: Mapping[str, str] = field(default_factory=dict)
    secret_refs: tuple[SecretRef, ...] = ()   # where the values of secret_env come from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageSpec:
        """The spec `to_dict` gave (after a JSON round trip too)."""
        fields = dict(data)
        fields["operation"] = Operation(fields["operation"])
        fields["secret_values"] = tuple(fields.get("secret_values", ()))
        fields["secret_refs"] = tuple(SecretRef(**ref) for ref in fields.get("secret_refs", ()))
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class ResourceChange:
    address: str
    action: str          # create, update, delete, replace, read, no-op; import, move, forget


@dataclass(frozen=True, slots=True)
class ChangeSummary:
    add: int = 0
    change: int = 0
    destroy: int = 0
    unchanged: int = 0
    resources: tuple[ResourceChange, ...] = ()
    outputs: tuple[str, ...] = ()             # names of outputs that would change
    # changes to what the state tracks, not to a resource (Terraform's import, moved and
    # removed blocks); each is a change, as `terraform plan -detailed-exitcode` says
    imported: int = 0
    moved: int = 0
    forgotten: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.destroy or self.outputs
                    or self.imported or self.moved or self.forgotten)

    @property
    def counts(self) -> str:
        """Resources to add, change and destroy: "+1 ~0 -0"."""
        return f"+{self.add} ~{self.change} -{self.destroy}"

    def __str__(self) -> str:
        parts = [self.counts, *state_change_words(self.imported, self.moved, self.forgotten)]
        if self.outputs:
            parts.append(f"{len(self.outputs)} output{'s' if len(self.outputs) > 1 else ''} "
                         "changed")
        return ", ".join(parts)


def state_change_words(imported: int, moved: int, forgotten: int) -> list[str]:
    """"1 to import", "2 moved", "1 to forget", for the counts that are not zero."""
    words = ((imported, "{} to import"), (moved, "{} moved"), (forgotten, "{} to forget"))
    return [text.format(count) for count, text in words if count]


@dataclass(frozen=True, slots=True)
class StageResult:
    """A stage's outcome. A failing tool is a failed result, never an exception."""

    status: StageStatus
    outputs: Mapping[str, Any] = field(default_factory=dict)
    sensitive_outputs: frozenset[str] = frozenset()
    changes: ChangeSummary | None = None
    artifacts: tuple[str, ...] = ()
    error: str | None = None
    hint: str | None = None
    exit_code: int | None = None
    output_tail: tuple[str, ...] = ()
    drifted: bool | None = None               # drift: True when reality differs from code
    details: Mapping[str, Any] = field(default_factory=dict)  # tool-specific, already masked
    saved_plan: str | None = None             # plan operations: the saved plan to apply later
    interrupted: bool = False
    # plan operations: outputs whose value only an apply will tell (a value in `outputs` for
    # one of them is its last applied value); None when the tool cannot say which outputs
    # the stage will have, so that any output may still appear
    unknown_outputs: frozenset[str] | None = None

    @property
    def ok(self) -> bool:
        return self.status is StageStatus.SUCCEEDED

    @classmethod
    def failure(cls, error: str, *, hint: str | None = None, exit_code: int | None = None,
                output_tail: tuple[str, ...] = (), interrupted: bool = False) -> StageResult:
        status = StageStatus.INTERRUPTED if interrupted else StageStatus.FAILED
        return cls(status=status, error=error, hint=hint, exit_code=exit_code,
                   output_tail=output_tail, interrupted=interrupted)


def diff_preview(diff: str, indent: str = "    ", limit: int = DIFF_PREVIEW_LINES) -> list[str]:
    """A diff as indented lines for a person: the first `limit`, then "... N more lines"."""
    lines = diff.rstrip("\n").splitlines()
    shown = [f"{indent}{line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"{indent}... {len(lines) - limit} more lines")
    return shown
