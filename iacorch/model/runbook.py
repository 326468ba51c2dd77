"""The runbook format as pydantic models: the single source of truth for its schema.

Values that may hold templates stay strings here; the compiler checks their
references and the engine renders them just before a stage starts. The classes
here hold what every runbook has; `runbook_model()` adds one key per registered
driver (`terraform:`, `shell:`, a plugin's) to stages, rollbacks and destroys.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator

from iacorch.errors import PluginError
from iacorch.model.fields import RuleError, Strict, Templated, VarsDuration
from iacorch.model.registry import driver_names, driver_specs
from iacorch.model.status import FailurePolicy, OnTimeout, StageKind

STAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
EXTENSION_KEY = re.compile(r"^x-")  # top-level keys the format ignores, as docker-compose does
MAX_FOR_EACH = 1000  # each item is a stage that runs a tool; more is a loop for the tool itself


class VarSpec(Strict):
    default: Any = None
    type: Literal["string", "str", "int", "float", "bool", "list", "map", "any"] = "any"
    required: bool = False
    description: str | None = None
    choices: list[Any] | None = None


SECRET_SOURCES = ("env", "file", "aws_secretsmanager", "aws_ssm")


class SecretSpec(Strict):
    env: str | None = None
    file: str | None = None
    aws_secretsmanager: str | None = Field(default=None, min_length=1)
    aws_ssm: str | None = Field(default=None, min_length=1)
    key: str | None = None            # a field of a JSON secret (Secrets Manager)
    version: str | None = None        # a version id or a staging label (Secrets Manager)
    region: str | None = None         # an AWS source's region; else boto3's own chain
    description: str | None = None

    @property
    def source(self) -> str:
        """`env`, `file`, `aws_secretsmanager` or `aws_ssm`: the one source key set."""
        return next(key for key in SECRET_SOURCES if getattr(self, key) is not None)

    @model_validator(mode="after")
    def _one_source(self) -> SecretSpec:
        given = [key for key in SECRET_SOURCES if getattr(self, key) is not None]
        if len(given) != 1:
            raise RuleError("a secret has exactly one source: "
                            + ", ".join(f"`{key}`" for key in SECRET_SOURCES),
                            "keep one of " + " or ".join(f"`{key}`" for key in given) if given else
                            "add `env: NAME` (an environment variable), `file: PATH`, "
                            "`aws_secretsmanager: NAME` or `aws_ssm: /PARAMETER`")
        only_secretsmanager = [key for key in ("key", "version")
                               if getattr(self, key) is not None]
        if only_secretsmanager and given != ["aws_secretsmanager"]:
            raise RuleError(f"`{only_secretsmanager[0]}` applies to `aws_secretsmanager` "
                            "secrets only", f"remove `{only_secretsmanager[0]}`")
        if self.region is not None and not given[0].startswith("aws_"):
            raise RuleError("`region` applies to AWS secrets only", "remove `region`")
        return self


class Retries(Strict):
    attempts: int = Field(default=1, ge=1, le=100)
    backoff: VarsDuration = 0.0


class Defaults(Strict):
    timeout: VarsDuration | None = None
    retries: Retries = Retries()


class ActionFields(Strict):
    """A stage, a rollback or a destroy: one key per driver, at most one of them set."""

    @property
    def action_types(self) -> list[str]:
        """The drivers whose key is set (a valid stage has one, a gate none)."""
        return [name for name in driver_names() if getattr(self, name, None) is not None]

    @property
    def action_type(self) -> str | None:
        found = self.action_types
        return found[0] if len(found) == 1 else None

    @property
    def action(self) -> Any:
        """The action model under the one driver key, or None."""
        kind = self.action_type
        return getattr(self, kind) if kind else None


class RollbackAction(ActionFields):
    """The action that undoes a stage after a failure (`rollback:`)."""

    key: ClassVar[str] = "rollback"

    @model_validator(mode="after")
    def _exactly_one(self) -> RollbackAction:
        if len(self.action_types) != 1:
            raise RuleError(f"a {self.key} is `auto`, `none`, or exactly one action "
                            f"({', '.join(driver_names())})",
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


POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""A worker pool's name: its stages go to the Celery queue `pool-NAME`."""

APPROVAL_FIELDS = ("approvers", "require", "allow_self_approval", "message", "inputs",
                   "on_timeout")


class Stage(ActionFields):
    """A stage; `runbook_model()` adds one key per registered driver."""

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
    pool: str | None = Field(default=None, pattern=POOL_NAME)
    dry_run: bool = True
    outputs: list[str] | None = None
    mock_outputs: dict[str, Any] | None = None
    # approval gates
    approvers: list[str] | None = None
    require: int | None = Field(default=None, ge=1)
    allow_self_approval: bool | None = None
    message: Templated | None = None
    inputs: dict[str, ApprovalInput] | None = None
    on_timeout: OnTimeout | None = None

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


class WebhookSource(Strict):
    """`POST /hooks/<runbook>/<trigger>`, signed with HMAC-SHA256 (`X-Hub-Signature-256`)."""

    secret: SecretSpec


class SqsSource(Strict):
    """Messages on an SQS queue (a URL or a name); each message starts one run."""

    queue: str
    max_receives: int = Field(default=5, ge=1, le=1000)  # then the message is moved aside


class S3Source(Strict):
    """Objects landing in a bucket, told through the bucket's notification to `queue`."""

    bucket: str
    queue: str
    prefix: str = ""
    events: list[Literal["created", "removed"]] = ["created"]
    max_receives: int = Field(default=5, ge=1, le=1000)


TRIGGER_SOURCES = ("webhook", "sqs", "s3")


class Trigger(Strict):
    """An event that starts a run. `vars` are templates over `event` (data, never code)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    description: str | None = None
    action: Literal["apply", "plan", "drift"] = "apply"
    webhook: WebhookSource | None = None
    sqs: SqsSource | None = None
    s3: S3Source | None = None
    vars: dict[str, Any] = {}

    @property
    def source(self) -> str:
        """`webhook`, `sqs` or `s3`: the one source key set."""
        return next(key for key in TRIGGER_SOURCES if getattr(self, key) is not None)

    @model_validator(mode="after")
    def _one_source(self) -> Trigger:
        given = [key for key in TRIGGER_SOURCES if getattr(self, key) is not None]
        if len(given) != 1:
            raise RuleError("a trigger has exactly one source: "
                            + ", ".join(f"`{key}`" for key in TRIGGER_SOURCES),
                            "keep one source per trigger; add another trigger for the other"
                            if given else "add e.g. `webhook: {secret: {env: HOOK_SECRET}}`")
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
    """A runbook; `runbook_model()` is the class that validates one (with driver keys)."""

    version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    vars: dict[str, VarSpec] = {}
    secrets: dict[str, SecretSpec] = {}
    concurrency: int = Field(default=4, ge=1, le=1024)
    pool: str | None = Field(default=None, pattern=POOL_NAME)
    defaults: Defaults = Defaults()
    on_failure: FailurePolicy = FailurePolicy.STOP
    deadline: VarsDuration | None = None
    workspace: Templated | None = None
    allow_env: list[str] = []
    stages: dict[str, Stage]
    finally_: dict[str, Stage] = Field(default={}, alias="finally")
    schedules: dict[str, Schedule] = {}
    notify: dict[str, NotifyChannel] = {}
    triggers: list[Trigger] = []
    drift: DriftSettings = DriftSettings()

    @model_validator(mode="after")
    def _unique_trigger_names(self) -> Runbook:
        names = [trigger.name for trigger in self.triggers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise RuleError(f"trigger name `{twice[0]}` is used twice",
                            "give each trigger its own name: it is part of its URL")
        return self

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):   # YAML's `true` would pass as 1
            raise RuleError(f"`version: {str(value).lower()}` is not a format version",
                            "write `version: 1`")
        return value

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


def runbook_model() -> type[Runbook]:
    """The Runbook class with every driver's action the registry knows now."""
    return _runbook_model(tuple(driver_specs()))


@cache
def _runbook_model(names: tuple[str, ...]) -> type[Runbook]:
    """Built once per set of drivers."""
    actions: dict[str, Any] = {}
    for spec in driver_specs().values():
        if spec.name in Stage.model_fields:
            raise PluginError(f"the driver `{spec.name}` has the name of a stage key",
                              hint="rename the driver in its package's DriverSpec")
        actions[spec.name] = (spec.action_model | None, None)
    rollback = create_model("RollbackAction", __base__=RollbackAction, __module__=__name__,
                            **actions)
    destroy = create_model("DestroyAction", __base__=DestroyAction, __module__=__name__,
                           **actions)
    undo: dict[str, Any] = {"rollback": (Literal["auto", "none"] | rollback, "auto"),
                            "destroy": (Literal["auto", "none"] | destroy | None, None)}
    stage = create_model("Stage", __base__=Stage, __module__=__name__, **actions, **undo)
    return create_model("Runbook", __base__=Runbook, __module__=__name__,
                        stages=(dict[str, stage], ...),  # type: ignore[valid-type]
                        finally_=(dict[str, stage],  # type: ignore[valid-type]
                                  Field(default={}, alias="finally")))
