"""The runbook format as pydantic models: the single source of truth for its schema.

Values that may hold templates stay strings here; the compiler checks their
references and the engine renders them just before a stage starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from iacorch.model.status import ActionType, FailurePolicy, StageKind

STAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
EXTENSION_KEY = re.compile(r"^x-")  # top-level keys the format ignores, as docker-compose does
MAX_FOR_EACH = 1000  # each item is a stage that runs a tool; more is a loop for the tool itself
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*(ms|s|m|h|d))+\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class RuleError(ValueError):
    """A value that breaks a rule of the format; `hint` says how to write it instead.

    The schema error mapper shows `message` and `hint` apart; `str()` joins them for
    callers that only print the error (command-line flags).
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; {hint}")
        self.message = message
        self.hint = hint


_DURATION_HINT = "write it as 30s, 15m, 4h or 1h30m (a bare number means seconds)"


def parse_duration(value: object) -> float:
    """`90`, `"90s"`, `"15m"`, `"1h30m"`, `"250ms"` -> seconds."""
    if isinstance(value, bool):
        raise RuleError(f"{str(value).lower()} is not a duration", _DURATION_HINT)
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RuleError(f"{value} is not a duration", _DURATION_HINT)
        if value < 0:
            raise RuleError("a duration cannot be negative", _DURATION_HINT)
        return float(value)
    if isinstance(value, str) and _DURATION.match(value):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    shown = repr(value) if isinstance(value, str) else "a " + type(value).__name__
    raise RuleError(f"{shown} is not a duration", _DURATION_HINT)


def duration_or_template(value: object) -> float | str:
    """A duration in seconds, or a template (`"{{ vars.rto }}"`) the compiler renders."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return value
    return parse_duration(value)


_DURATION_SCHEMA = [{"type": "number", "minimum": 0},
                    {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d))+\s*$"}]
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema({
    "anyOf": _DURATION_SCHEMA,
    "description": "seconds, or a duration such as 30s, 15m, 4h, 1h30m"})]
# Durations the compiler may compute from vars, e.g. an RTO per environment.
VarsDuration = Annotated[float | str, BeforeValidator(duration_or_template), WithJsonSchema({
    "anyOf": [*_DURATION_SCHEMA, {"type": "string", "pattern": r"\{\{|\{%"}],
    "description": "seconds, a duration such as 30s, 15m, 4h, 1h30m, or a template of "
                   "vars giving one"})]
Templated = str  # a string that may hold {{ ... }}


class Strict(BaseModel):
    """Base of every runbook model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class VarSpec(Strict):
    default: Any = None
    type: Literal["string", "str", "int", "float", "bool", "list", "map", "any"] = "any"
    required: bool = False
    description: str | None = None
    choices: list[Any] | None = None


class SecretSpec(Strict):
    env: str | None = None
    file: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSpec:
        if (self.env is None) == (self.file is None):
            raise RuleError("a secret has exactly one source: env or file",
                            "keep either `env: NAME` or `file: PATH`"
                            if self.env is not None else
                            "add `env: NAME` (an environment variable) or `file: PATH`")
        return self


class Retries(Strict):
    attempts: int = Field(default=1, ge=1, le=100)
    backoff: VarsDuration = 0.0


class Defaults(Strict):
    timeout: VarsDuration | None = None
    retries: Retries = Retries()


class TerraformAction(Strict):
    dir: str
    workspace: Templated | None = None
    vars: dict[str, Any] = {}
    var_files: list[str] = []
    backend_config: dict[str, Any] = {}
    targets: list[str] = []
    parallelism: int | None = Field(default=None, ge=1)
    env: dict[str, Any] = {}
    binary: str = "terraform"


class PulumiAction(Strict):
    dir: str
    stack: Templated = "dev"
    config: dict[str, Any] = {}
    backend: str | None = None
    env: dict[str, Any] = {}
    refresh: bool = False


class AnsibleAction(Strict):
    playbook: str
    inventory: str | dict[str, Any] | list[Any] | None = None
    extra_vars: dict[str, Any] | Templated = {}
    limit: Templated | None = None
    tags: list[str] | str | None = None
    skip_tags: list[str] | str | None = None
    forks: int | None = Field(default=None, ge=1)
    become: bool = False
    check: bool = False
    env: dict[str, Any] = {}
    vault_password: Templated | None = None


class ShellAction(Strict):
    run: Templated | None = None
    argv: list[str | int | float] | None = None
    env: dict[str, Any] = {}
    cwd: str | None = None

    @field_validator("argv", mode="before")
    @classmethod
    def _plain_arguments(cls, argv: Any) -> Any:
        for item in argv if isinstance(argv, list) else ():
            if isinstance(item, bool) or item is None:
                shown = {True: "true", False: "false", None: "null"}[item]
                raise RuleError(f"an argv item reads as {shown}, not as text: YAML turned "
                                f"`{shown}` into a {'boolean' if item is not None else 'null'}",
                                f"write it in quotes: argv: [\"{shown}\"]")
        return argv

    @model_validator(mode="after")
    def _run_or_argv(self) -> ShellAction:
        if (self.run is None) == (self.argv is None):
            raise RuleError("a shell action has exactly one of `run` (a script) "
                            "or `argv` (a list)",
                            "remove one of them" if self.run is not None else
                            "add `run: make` for a script or `argv: [make, all]` for a command")
        return self


class HttpExpect(Strict):
    status: int | list[int] = 200
    body_contains: str | None = None
    json_: dict[str, Any] | None = Field(default=None, alias="json")


class HttpUntil(Strict):
    attempts: int = Field(default=1, ge=1)
    interval: Duration = 1.0


_URL_HINT = "write it as http://host[:port]/path or https://host[:port]/path"
_ENCODE_HINT = ("percent-encode it (a space is %20); a value from a template can go through "
                "`| urlencode`")


def url_problem(url: str) -> RuleError | None:
    """Why an http stage cannot request `url` (the URL itself is not quoted: it may hold a
    secret); None when it can. `user:password@` is allowed: it becomes basic auth."""
    for position, char in enumerate(url, start=1):
        if char == " ":
            return RuleError(f"the URL has a space at character {position}", _ENCODE_HINT)
        if not char.isprintable():
            return RuleError(f"the URL has the unprintable character U+{ord(char):04X} at "
                             f"character {position}", _ENCODE_HINT)
    try:
        parts = urlsplit(url)
    except ValueError:  # `[` without `]`
        return RuleError("the URL's host is not readable: an IPv6 address needs both `[` "
                         "and `]`", _URL_HINT)
    if parts.scheme.lower() not in ("http", "https"):
        found = f"`{parts.scheme}:`" if parts.scheme else "none"
        return RuleError(f"the URL's scheme must be http: or https:, found {found}", _URL_HINT)
    if not parts.hostname:
        return RuleError("the URL names no host", _URL_HINT)
    try:
        _ = parts.port  # raises ValueError unless it is a number from 0 to 65535
    except ValueError:
        return RuleError("the URL's port is not a number from 0 to 65535", _URL_HINT)
    if not (parts.path + parts.query).isascii():  # a host may be international, not a path
        return RuleError("the URL's path or query has a non-ASCII character", _ENCODE_HINT)
    return None


class HttpAction(Strict):
    url: Templated
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, Any] = {}
    body: Any = None
    expect: HttpExpect = HttpExpect()
    until: HttpUntil = HttpUntil()
    timeout: Duration = 10.0
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _requestable(cls, url: str) -> str:
        if "{{" in url or "{%" in url:
            return url  # checked once rendered, by the driver
        problem = url_problem(url)
        if problem is not None:
            raise problem
        return url


ACTION_MODELS: dict[ActionType, type[Strict]] = {
    ActionType.TERRAFORM: TerraformAction,
    ActionType.PULUMI: PulumiAction,
    ActionType.ANSIBLE: AnsibleAction,
    ActionType.SHELL: ShellAction,
    ActionType.HTTP: HttpAction,
}


class ActionFields(Strict):
    """The five actions; a stage or a rollback sets exactly one of them."""

    terraform: TerraformAction | None = None
    pulumi: PulumiAction | None = None
    ansible: AnsibleAction | None = None
    shell: ShellAction | None = None
    http: HttpAction | None = None

    @property
    def action_types(self) -> list[ActionType]:
        return [t for t in ActionType if getattr(self, t.value) is not None]

    @property
    def action_type(self) -> ActionType | None:
        found = self.action_types
        return found[0] if len(found) == 1 else None

    @property
    def action(self) -> Strict | None:
        kind = self.action_type
        return getattr(self, kind.value) if kind else None


class RollbackAction(ActionFields):
    """The action that undoes a stage after a failure (`rollback:`)."""

    key: ClassVar[str] = "rollback"

    @model_validator(mode="after")
    def _exactly_one(self) -> RollbackAction:
        if len(self.action_types) != 1:
            raise RuleError(f"a {self.key} is `auto`, `none`, or exactly one action "
                            "(terraform, pulumi, ansible, shell, http)",
                            "keep one action here; put other undo steps in their own stage"
                            if self.action_types else "add one action, e.g. "
                            f"`{self.key}: {{shell: {{run: make clean}}}}`")
        return self


class DestroyAction(RollbackAction):
    """The action that takes a stage down for `iacorch destroy` (`destroy:`)."""

    key: ClassVar[str] = "destroy"


class ApprovalInput(Strict):
    type: Literal["string", "int", "bool", "choice"] = "string"
    choices: list[Any] | None = None
    default: Any = None
    description: str | None = None

    @model_validator(mode="after")
    def _choices_for_choice(self) -> ApprovalInput:
        if self.type == "choice" and not self.choices:
            raise RuleError("an input of `type: choice` needs a non-empty list of `choices`",
                            "list what the approver may pick, e.g. `choices: [eu, us]`")
        return self


APPROVAL_FIELDS = ("approvers", "require", "allow_self_approval", "message", "inputs",
                   "on_timeout")


class Stage(ActionFields):
    kind: StageKind | None = None
    description: str | None = None
    needs: list[str] = []
    when: Templated | bool | None = None
    for_each: Templated | list[Any] | dict[str, Any] | None = None
    timeout: VarsDuration | None = None
    retries: Retries | None = None
    rollback: Literal["auto", "none"] | RollbackAction = "auto"
    destroy: Literal["auto", "none"] | DestroyAction | None = None  # None: as `rollback`
    on_failure: FailurePolicy | None = None
    idempotent: bool | None = None
    dry_run: bool = True
    outputs: list[str] | None = None
    mock_outputs: dict[str, Any] | None = None
    # approval gates
    approvers: list[str] | None = None
    require: int | None = Field(default=None, ge=1)
    allow_self_approval: bool | None = None
    message: Templated | None = None
    inputs: dict[str, ApprovalInput] | None = None
    on_timeout: Literal["reject", "cancel", "approve"] | None = None

    @property
    def is_approval(self) -> bool:
        return self.kind is StageKind.APPROVAL


class Schedule(Strict):
    cron: str
    timezone: str | None = None
    action: Literal["drift", "plan", "apply"] = "drift"
    vars: dict[str, Any] = {}
    notify: list[str] = []
    remediate: bool = False


class NotifyChannel(Strict):
    webhook: Templated | None = None
    command: list[str] | str | None = None
    on: list[Literal["succeeded", "failed", "rollback_failed", "approval_requested",
                     "drift", "schedule_failed", "deadline_breached"]] = [
        "failed", "rollback_failed", "drift"]

    @model_validator(mode="after")
    def _one_target(self) -> NotifyChannel:
        if (self.webhook is None) == (self.command is None):
            raise RuleError("a notify channel has exactly one of `webhook` or `command`",
                            "keep one of them" if self.webhook is not None else
                            "add `webhook: URL` or `command: [notify-send, iacorch]`")
        return self


class DriftIgnore(Strict):
    stage: str
    address: str | None = None
    task: str | None = None
    reason: str
    until: str | None = None


class DriftSettings(Strict):
    ignore: list[DriftIgnore] = []


class Runbook(Strict):
    version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    vars: dict[str, VarSpec] = {}
    secrets: dict[str, SecretSpec] = {}
    concurrency: int = Field(default=4, ge=1, le=1024)
    defaults: Defaults = Defaults()
    on_failure: FailurePolicy = FailurePolicy.STOP
    deadline: VarsDuration | None = None
    workspace: Templated | None = None
    allow_env: list[str] = []
    stages: dict[str, Stage]
    finally_: dict[str, Stage] = Field(default={}, alias="finally")
    schedules: dict[str, Schedule] = {}
    notify: dict[str, NotifyChannel] = {}
    drift: DriftSettings = DriftSettings()

    @model_validator(mode="before")
    @classmethod
    def _ignore_extensions(cls, data: Any) -> Any:
        """Top-level `x-*` keys are the runbook author's (YAML anchors to reuse), not ours."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not is_extension(k)}
        return data


def is_extension(key: object) -> bool:
    """`x-defaults`: a top-level key the format ignores (EXTENSION_KEY)."""
    return isinstance(key, str) and EXTENSION_KEY.match(key) is not None
