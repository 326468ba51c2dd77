#!/usr/bin/env python3
"""Write the key reference of docs/runbook.md from the runbook's JSON Schema
(`iacorch.model.runbook_schema.json_schema()`).

  python scripts/gen_runbook_docs.py            rewrite the generated part of docs/runbook.md
  python scripts/gen_runbook_docs.py --check    exit 1 when it is out of date (tests, CI)

Only the part between the BEGIN and END markers is generated; the rest of
docs/runbook.md is prose. Keys, types, defaults and required-ness come from the
schema; what each key means comes from DESCRIPTIONS below, keyed by the schema's
definition name and the key. A key added to the runbook models without a
description here is written as "(not described yet)", and
tests/unit/test_docs_reference.py fails until someone describes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "runbook.md"
BEGIN = "<!-- BEGIN GENERATED KEY REFERENCE: python scripts/gen_runbook_docs.py -->"
END = "<!-- END GENERATED KEY REFERENCE -->"
ROOT_DEF = "Runbook"
UNDESCRIBED = "(not described yet)"

# What stands for a user-chosen name in a path: `stages.<id>`, `vars.<name>`...
PLACEHOLDERS = {"vars": "<name>", "secrets": "<name>", "stages": "<id>", "finally": "<id>",
                "schedules": "<name>", "notify": "<channel>", "inputs": "<name>"}

DESCRIPTIONS: dict[str, str] = {
    # -- the top level -------------------------------------------------------------
    "Runbook.version": "Version of the runbook format; always `1`.",
    "Runbook.name": "Name of the runbook: with the workspace, the key of its lock and of "
                    "its history (`iacorch runs`, the last successful run used by rollback, "
                    "plan and drift).",
    "Runbook.description": "One line shown by `validate`, `graph` and in reports.",
    "Runbook.vars": "Inputs of the runbook. Values come from the declared `default`, then "
                    "`--var-file FILE` (YAML), then `--var NAME=VALUE`; each is checked "
                    "against its `type`. An undeclared `--var` or `vars.x` is an error.",
    "Runbook.secrets": "Secret values, read when a run starts (a missing one stops the run "
                       "before anything runs), masked in every log, report and event, never "
                       "stored. In `shell.run` a secret reaches the script as an environment "
                       "variable, never as text in the script.",
    "Runbook.concurrency": "How many stages run at once; `--concurrency` overrides it.",
    "Runbook.pool": "Default worker pool of every stage: with `$IACORCH_BROKER` set, its "
                    "attempts run on `iacorch worker --pool NAME` (see docs/workers.md).",
    "Runbook.defaults": "`timeout` and `retries` for every stage that does not set its own.",
    "Runbook.on_failure": "What a stage's final failure does to the run: `stop` starts "
                          "nothing new, `rollback` also undoes what the run did, `continue` "
                          "runs everything that does not depend on the failure. A stage's "
                          "own `on_failure` wins.",
    "Runbook.deadline": "How long the run should take (an RTO), counted from its start "
                        "across `resume`. Breaching it is reported on the console, in the "
                        "summary, the audit log and to `notify` channels that want "
                        "`deadline_breached`; the run goes on.",
    "Runbook.workspace": "Workspace of the run (environment, region...). Default: "
                         "`vars.env` when that var exists, else `default`. May use `vars` "
                         "only. Runs of one runbook in different workspaces do not lock each "
                         "other. Available to templates as `runbook.workspace`.",
    "Runbook.allow_env": "Environment variable names that stage `env:` blocks may set even "
                         "though they can make a tool load code or take flags (`PATH`, "
                         "`TF_CLI_ARGS*`, `LD_PRELOAD`, `ANSIBLE_*_PLUGINS`...).",
    "Runbook.stages": "The stages, by id (letters, digits, `_`, `-`). Order in the file "
                      "does not matter: dependencies do.",
    "Runbook.finally": "Stages run when the run ends (apply only; after a failure too, "
                       "once the rollback is done; not when the run stops to wait for an "
                       "approval or is interrupted). They need no `kind`, see the outcome "
                       "as `run.status`, and their failure does not change it.",
    "Runbook.schedules": "Cron jobs for `iacorch schedule run|list|once|export`.",
    "Runbook.notify": "Notification channels, by name.",
    "Runbook.drift": "Settings of `iacorch drift`.",
    # -- vars, secrets, defaults -----------------------------------------------------
    "VarSpec.default": "Value when neither `--var-file` nor `--var` gives one.",
    "VarSpec.type": "`string` (`str`), `int`, `float`, `bool` (true/false, yes/no, on/off, "
                    "1/0), `list`, `map` or `any`. A `--var` value of a list or map is "
                    "written in YAML flow syntax: `--var 'regions=[eu, us]'`.",
    "VarSpec.required": "The run refuses to start without a value.",
    "VarSpec.description": "What the var is for; shown in errors.",
    "VarSpec.choices": "The only values allowed.",
    "SecretSpec.env": "Name of the environment variable holding the secret.",
    "SecretSpec.file": "Path of a file holding the secret (trailing newline removed), "
                       "relative to the runbook's directory; `~` is expanded.",
    "SecretSpec.aws_secretsmanager": "Name or ARN of an AWS Secrets Manager secret (the "
                                     "`[aws]` extra; docs/aws.md). Credentials and region "
                                     "come from boto3's chain; `AWS_ENDPOINT_URL` is honoured.",
    "SecretSpec.aws_ssm": "Name of an SSM Parameter Store parameter; a `SecureString` is "
                          "decrypted (docs/aws.md).",
    "SecretSpec.key": "With `aws_secretsmanager`: the field of a JSON secret to use (a "
                      "non-text value becomes its JSON).",
    "SecretSpec.version": "With `aws_secretsmanager`: a version id (a UUID) or a staging label "
                          "such as `AWSPREVIOUS`. Default: `AWSCURRENT`.",
    "SecretSpec.region": "With an AWS source: the region to read it from, instead of "
                         "`AWS_REGION` or the profile's.",
    "SecretSpec.description": "What the secret is for.",
    "Defaults.timeout": "Default stage timeout; none when unset.",
    "Defaults.retries": "Default retry policy.",
    "Retries.attempts": "Attempts in all, the first included (`1` = no retry).",
    "Retries.backoff": "Wait before the second attempt; it doubles before each further one.",
    # -- stages -------------------------------------------------------------------------
    "Stage.terraform": "Run Terraform (or OpenTofu) on a stack directory.",
    "Stage.pulumi": "Run a Pulumi program.",
    "Stage.ansible": "Run an Ansible playbook.",
    "Stage.shell": "Run a bash script or a program.",
    "Stage.http": "Request a URL until the answer meets the expectations.",
    "Stage.kind": "The phase people see and filter on (`--only`): `provision`, `configure`, "
                  "`deploy`, `verify` or `approval`. Required in `stages:`; not used in "
                  "`finally:`. `iacorch drift` checks `provision` and `configure` stages.",
    "Stage.description": "One line shown in `graph` and reports.",
    "Stage.needs": "Stages that must be done first, in addition to every stage whose "
                   "`stages.<id>...` the stage's templates use.",
    "Stage.when": "Skip the stage unless this is true (a template, rendered when the stage "
                  "is ready, or a boolean). A skipped stage counts as done for its "
                  "dependents.",
    "Stage.for_each": "Make one stage per item of a list or mapping, when the runbook "
                      "compiles (so it may use `vars` only): `web[eu]`, `web[us]`... Each "
                      "sees its item as `item` (`item.key`/`item.value` for a mapping).",
    "Stage.timeout": "Time limit of one attempt. The tool gets SIGINT, then SIGTERM after "
                     "10 s, then SIGKILL after 5 s more, so Terraform can release its lock.",
    "Stage.retries": "Retry policy of this stage (else `defaults.retries`).",
    "Stage.rollback": "How to undo the stage after a failure: `auto` (Terraform and Pulumi "
                      "stacks: destroy if this run created them, else re-apply the last "
                      "successful inputs; nothing for other tools), `none`, or an action of "
                      "its own (same keys as a stage's action).",
    "Stage.destroy": "How `iacorch destroy` takes the stage down: `auto` (Terraform and "
                     "Pulumi stacks are destroyed; nothing for other tools), `none` (left "
                     "standing), or an action of its own. Unset: as `rollback`, so "
                     "`rollback: none` alone also keeps the stage up on destroy.",
    "Stage.on_failure": "This stage's failure policy (else the runbook's).",
    "Stage.pool": "Worker pool this stage's attempts run on (Celery queue `pool-NAME`) "
                  "when `$IACORCH_BROKER` is set; runs here otherwise. Overrides the "
                  "runbook's `pool`.",
    "Stage.idempotent": "Whether running it twice is safe. Default: true for Terraform, "
                        "Pulumi, Ansible and GET/HEAD/OPTIONS checks, false for shell. "
                        "`resume` runs an interrupted non-idempotent stage again only with "
                        "`--rerun-interrupted`.",
    "Stage.dry_run": "Whether `iacorch plan` and `iacorch drift` may run the tool's dry run "
                     "(terraform plan, pulumi preview, ansible check mode) for this stage. "
                     "`false` for a stage whose dry run is not safe (a playbook whose tasks "
                     "act even in check mode, a data source with side effects): plan and "
                     "drift skip it and say `not safe to dry-run (runbook says so)`.",
    "Stage.outputs": "The outputs the stage will have. Lets the compiler reject a reference "
                     "to an output that does not exist.",
    "Stage.mock_outputs": "Stand-in outputs for `iacorch plan --mock` while no run has "
                          "produced real ones, so stages downstream can be planned.",
    "Stage.approvers": "Approval gates: who may decide (identities: `$IACORCH_USER`, else "
                       "the login name). Unset: anyone.",
    "Stage.require": "Approval gates: distinct approvals needed (default 1). One rejection "
                     "rejects.",
    "Stage.allow_self_approval": "Approval gates: whether the person who started the run "
                                 "may approve it. Default: true without `approvers`, false "
                                 "with them.",
    "Stage.message": "Approval gates: the question asked (a template).",
    "Stage.inputs": "Approval gates: answers the approver gives (`--input NAME=VALUE`), "
                    "which become the gate's outputs: `stages.<gate>.outputs.<name>`.",
    "Stage.on_timeout": "Approval gates: what happens when `timeout` passes without a "
                        "decision: `reject` (default; the run fails), `cancel` (the run "
                        "stops, resumable) or `approve`.",
    # -- actions --------------------------------------------------------------------------
    "TerraformAction.dir": "The stack directory, relative to the runbook.",
    "TerraformAction.workspace": "Terraform workspace to select (created if missing).",
    "TerraformAction.vars": "Input variables. Values go to a private tfvars file (or, when "
                            "they contain a secret, to `TF_VAR_*` in the environment), never "
                            "to the command line.",
    "TerraformAction.var_files": "tfvars files, relative to the runbook; `vars` win over "
                                 "them.",
    "TerraformAction.backend_config": "Backend settings passed to `terraform init "
                                      "-backend-config` (through a private file).",
    "TerraformAction.targets": "Resource addresses for `-target`.",
    "TerraformAction.parallelism": "Terraform's `-parallelism`.",
    "TerraformAction.env": "Environment variables for Terraform.",
    "TerraformAction.binary": "The program to run: `terraform`, `tofu` or a full path.",
    "PulumiAction.dir": "The Pulumi project directory, relative to the runbook.",
    "PulumiAction.stack": "Stack name (created if missing).",
    "PulumiAction.config": "Stack configuration; values holding a secret are set as Pulumi "
                           "secrets, passed to the CLI on its stdin, never on a command line.",
    "PulumiAction.backend": "Backend URL. Default: `$PULUMI_BACKEND_URL`, else a file "
                            "backend under the state directory.",
    "PulumiAction.env": "Environment variables for Pulumi.",
    "PulumiAction.refresh": "Refresh the stack's state before updating.",
    "AnsibleAction.playbook": "The playbook, relative to the runbook.",
    "AnsibleAction.inventory": "An inventory path, a list of hosts, `\"a,b\"`, or an inline "
                               "inventory mapping. None: localhost. Local host names use the "
                               "local connection.",
    "AnsibleAction.extra_vars": "Extra variables (a mapping, or a template giving one).",
    "AnsibleAction.limit": "Ansible's `--limit`.",
    "AnsibleAction.tags": "Only tasks with these tags.",
    "AnsibleAction.skip_tags": "Skip tasks with these tags.",
    "AnsibleAction.forks": "Ansible's `--forks`.",
    "AnsibleAction.become": "Ansible's `--become`.",
    "AnsibleAction.check": "Always run in check mode (never change anything).",
    "AnsibleAction.env": "Environment variables for ansible-playbook.",
    "AnsibleAction.vault_password": "Vault password (use a secret: "
                                    "`\"{{ secrets.vault }}\"`); passed through a private "
                                    "file.",
    "ShellAction.run": "A bash script (`bash -eo pipefail`; `sh -e` without bash). Every "
                       "`{{ }}` value is shell-quoted; `| raw` inserts it as is. A secret "
                       "is the reference `\"${IACORCH_SECRET_<NAME>}\"`, so only a bare "
                       "`{{ secrets.x }}` may use it.",
    "ShellAction.argv": "A program and its arguments, run without a shell.",
    "ShellAction.env": "Environment variables for the command.",
    "ShellAction.cwd": "Working directory, relative to the runbook. Default: the runbook's "
                       "directory.",
    "HttpAction.url": "The URL: http or https, percent-encoded (no spaces or control "
                      "characters; `| urlencode` a value). `user:password@` is sent as "
                      "basic auth, the password masked.",
    "HttpAction.method": "The HTTP method. Only GET, HEAD and OPTIONS checks are idempotent "
                         "by default.",
    "HttpAction.headers": "Request headers.",
    "HttpAction.body": "Request body: text as is, anything else as JSON.",
    "HttpAction.expect": "What the answer must be.",
    "HttpAction.until": "How often to try before failing.",
    "HttpAction.timeout": "Time limit of one request.",
    "HttpAction.verify_tls": "Verify the server's TLS certificate.",
    "HttpExpect.status": "Expected status code, or a list of acceptable ones.",
    "HttpExpect.body_contains": "Text the body must contain.",
    "HttpExpect.json": "JSON the body must contain: objects match as subsets.",
    "HttpUntil.attempts": "Requests in all before the stage fails.",
    "HttpUntil.interval": "Wait between requests.",
    "RollbackAction.terraform": "Undo with a Terraform action (applied, not destroyed).",
    "RollbackAction.pulumi": "Undo with a Pulumi action (an update).",
    "RollbackAction.ansible": "Undo with a playbook.",
    "RollbackAction.shell": "Undo with a script or program.",
    "RollbackAction.http": "Undo with an HTTP request.",
    "DestroyAction.terraform": "Take down with a Terraform action (applied, not destroyed).",
    "DestroyAction.pulumi": "Take down with a Pulumi action (an update).",
    "DestroyAction.ansible": "Take down with a playbook.",
    "DestroyAction.shell": "Take down with a script or program.",
    "DestroyAction.http": "Take down with an HTTP request.",
    "ApprovalInput.type": "`string`, `int`, `bool` or `choice`.",
    "ApprovalInput.choices": "The allowed answers.",
    "ApprovalInput.default": "Answer when the approver gives none; without a default the "
                             "input is required.",
    "ApprovalInput.description": "The question, shown to the approver.",
    # -- schedules, notify, drift ----------------------------------------------------
    "Schedule.cron": "When: a 5-field cron expression, or 6 fields with seconds first.",
    "Schedule.timezone": "IANA time zone of `cron`. Default: this machine's zone.",
    "Schedule.action": "What runs: `iacorch drift`, `plan` or `apply` on this runbook.",
    "Schedule.vars": "Var values for the job, as `--var`.",
    "Schedule.notify": "Channels to tell (names under `notify:`). Empty: every channel that "
                       "wants the event.",
    "Schedule.remediate": "With `action: drift`: apply the drifted stages afterwards "
                          "(`iacorch drift --remediate`).",
    "NotifyChannel.webhook": "URL to POST a JSON payload to (its `text` field makes it a "
                             "Slack, Mattermost or Teams message). May use `env.*`.",
    "NotifyChannel.command": "A command that gets the same JSON on stdin and the event "
                             "in `$IACORCH_EVENT`: a string (run by `/bin/sh -c`) or a "
                             "program and its arguments.",
    "NotifyChannel.on": "The events the channel wants.",
    "Runbook.triggers": "Events that start a run (served by `iacorch serve`; queues also "
                        "by `iacorch listen`). A list: each trigger has a unique `name`.",
    "Trigger.name": "The trigger's name: part of its URL, `/hooks/<runbook>/<name>`.",
    "Trigger.description": "What the event is, for people.",
    "Trigger.action": "What the event runs: `apply`, `plan` or `drift`.",
    "Trigger.webhook": "An HTTP POST signed with HMAC-SHA256 (`X-Hub-Signature-256`, as "
                       "GitHub sends); a delivery id seen before starts no second run.",
    "Trigger.sqs": "Messages on an SQS queue; one message starts one run, even when "
                   "delivered again.",
    "Trigger.s3": "Objects created in (or removed from) an S3 bucket, told through the "
                  "bucket's notification to an SQS queue.",
    "Trigger.vars": "Var values for the run: templates over `event`, whose fields are "
                    "data, never template code.",
    "WebhookSource.secret": "The HMAC key: `env: NAME` or `file: PATH`, as under `secrets:`.",
    "SqsSource.queue": "Queue URL or name. `event` has `message_id`, `body`, `json` (the "
                       "body parsed, or null), `attributes` and `sent_at` (docs/aws.md).",
    "SqsSource.max_receives": "After this many failed deliveries a message is moved aside "
                              "(poison) with a log line: to the queue's dead-letter queue "
                              "when its RedrivePolicy names one, else deleted (docs/aws.md).",
    "S3Source.bucket": "The bucket whose events count. `event` has `bucket`, `key` "
                       "(URL-decoded), `size`, `etag`, `version_id`, `event`, `time` and "
                       "`region` (docs/aws.md).",
    "S3Source.queue": "The SQS queue (URL or name) the bucket notifies.",
    "S3Source.prefix": "Only keys that start with this.",
    "S3Source.events": "`created`, `removed`, or both.",
    "S3Source.max_receives": "As for `sqs`.",
    "DriftSettings.ignore": "Known, accepted differences: drift they cover is reported as "
                            "ignored, not as drift.",
    "DriftIgnore.stage": "Stage id, or glob (`web[*]`).",
    "DriftIgnore.address": "Terraform/Pulumi resource address (glob) to ignore; unset with "
                           "`task` unset: the whole stage.",
    "DriftIgnore.task": "Ansible task name (glob) to ignore.",
    "DriftIgnore.reason": "Why it is accepted: required, shown in every report.",
    "DriftIgnore.until": "Date (YYYY-MM-DD) after which the rule stops applying.",
}


@dataclass
class Row:
    key: str
    schema: dict[str, Any]       # the property's schema
    path: str                    # where the key is, e.g. stages.<id>.timeout
    required: bool


@dataclass
class Section:
    """One object definition of the format: where it appears, and its keys."""

    definition: str
    paths: list[str]
    rows: list[Row] = field(default_factory=list)


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _duration_keys() -> dict[str, str]:
    """`Def.key` -> type text of every field typed `Duration` or `VarsDuration` (the schema
    only says `number` or `string`)."""
    import pydantic

    from iacorch.model import actions, fields, runbook

    kinds = {fields.parse_duration: "duration",
             fields.duration_or_template: "duration, or a template of `vars`"}
    found = {}
    for module, name in [(m, n) for m in (runbook, actions) for n in dir(m)]:
        model = getattr(module, name)
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            continue
        for key, info in model.model_fields.items():
            for parse, text in kinds.items():
                if _mentions(parse, info.annotation) or any(
                        getattr(m, "func", None) is parse for m in info.metadata):
                    found[f"{model.__name__}.{info.alias or key}"] = text
    return found


def _mentions(parse: Any, annotation: Any) -> bool:
    if getattr(annotation, "func", None) is parse:
        return True
    if hasattr(annotation, "__metadata__") and any(
            getattr(m, "func", None) is parse for m in annotation.__metadata__):
        return True
    return any(_mentions(parse, arg) for arg in typing.get_args(annotation))


def anchor(path: str) -> str:
    text = path.replace("<", "").replace(">", "").replace("[]", "")
    return "key-" + ("".join(c if c.isalnum() else "-" for c in text).strip("-") or "top")


class Reference:
    """Walks the schema from the top: one Section per object definition."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.durations = _duration_keys()
        self.sections: dict[str, Section] = {}

    def walk(self) -> list[Section]:
        """Every object definition reachable from the top, in the order a reader meets them."""
        if not self.sections:
            self._visit(ROOT_DEF, self.schema, "")
        return list(self.sections.values())

    def _visit(self, name: str, node: dict[str, Any], path: str) -> None:
        if name in self.sections:
            self.sections[name].paths.append(path)
            return
        section = Section(name, [path])
        self.sections[name] = section
        required = set(node.get("required", []))
        children: list[tuple[str, str]] = []
        for key, prop in node.get("properties", {}).items():
            child_path = f"{path}.{key}" if path else key
            section.rows.append(Row(key, prop, child_path, key in required))
            children.extend(self._objects(prop, child_path, key))
        for child, child_path in children:
            self._visit(child, self.defs[child], child_path)

    def cells(self, section: Section, row: Row) -> tuple[str, str, str]:
        """Type, default and meaning of one key, for the table."""
        where = f"{section.definition}.{row.key}"
        return (self._type(row.schema, where, row.path), self._default(row.schema, row.required),
                DESCRIPTIONS.get(where, UNDESCRIBED))

    def _objects(self, prop: dict[str, Any], path: str, key: str) -> Iterator[tuple[str, str]]:
        """Object definitions under a property, with the path where they appear."""
        for option, suffix in self._options(prop, key):
            ref = _ref_name(option)
            if ref and "properties" in self.defs[ref]:
                yield ref, path + suffix

    def _options(self, prop: dict[str, Any], key: str) -> Iterator[tuple[dict[str, Any], str]]:
        for option in prop.get("anyOf", [prop]):
            yield option, ""
            if isinstance(option.get("additionalProperties"), dict):
                yield option["additionalProperties"], "." + PLACEHOLDERS.get(key, "<key>")
            if isinstance(option.get("items"), dict):
                yield option["items"], "[]"

    def _type(self, prop: dict[str, Any], where: str, path: str) -> str:
        if where in self.durations:
            return self.durations[where]
        # `null` is left out: a key with no default ("—") may always be omitted
        parts = [self._one(option, path) for option in prop.get("anyOf", [prop])
                 if option.get("type") != "null"]
        return " or ".join(dict.fromkeys(p for p in parts if p))

    def _one(self, node: dict[str, Any], path: str) -> str:
        ref = _ref_name(node)
        if ref:
            target = self.defs[ref]
            if "enum" in target:
                return "one of " + ", ".join(f"`{v}`" for v in target["enum"])
            return f"[object](#{anchor(self.walk() and self.sections[ref].paths[0])})"
        if "const" in node:
            return f"`{json.dumps(node['const'])}`"
        if "enum" in node:
            return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
        kind = node.get("type")
        if isinstance(kind, list):  # the others are spellings `validate` also reads, `"200"`
            kind = kind[0]
        if kind == "null":
            return "null"
        if kind == "array":
            items = node.get("items") or {}
            inner = self._one(items, path + "[]") if items else ""
            return f"list of {inner}" if inner and inner != "any" else "list"
        if kind == "object":
            extra = node.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                sub = path + "." + PLACEHOLDERS.get(path.rsplit(".", 1)[-1], "<key>")
                return f"map of {self._one(extra, sub)}"
            return "mapping"
        if kind in ("integer", "number"):
            low, high = node.get("minimum"), node.get("maximum")
            bounds = (f" {low}–{high}" if low is not None and high is not None else
                      f" ≥ {low}" if low is not None else "")
            return ("integer" if kind == "integer" else "number") + bounds
        if kind == "string":
            return "string" + (f" matching `{node['pattern']}`" if "pattern" in node else "")
        if kind == "boolean":
            return "boolean"
        return "any"

    @staticmethod
    def _default(prop: dict[str, Any], required: bool) -> str:
        if required:
            return "**required**"
        if "default" not in prop or prop["default"] is None:
            return "—"
        value = prop["default"]
        if isinstance(value, dict) and value and _ref_name(prop):
            return "see its keys"
        return f"`{json.dumps(value)}`"


def render(schema: dict[str, Any]) -> str:
    """The generated block, markers included."""
    reference = Reference(schema)
    lines = [BEGIN, ""]
    for section in reference.walk():
        first = section.paths[0]
        lines += [f'<a id="{anchor(first)}"></a>', f"### `{first}`" if first else "### Top level",
                  ""]
        if len(section.paths) > 1:
            lines += ["Also at " + ", ".join(f"`{p}`" for p in section.paths[1:]) + ".", ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for row in section.rows:
            kind, default, text = reference.cells(section, row)
            text = text.replace("|", "\\|")  # GitHub tables: a pipe in a cell, code too
            lines.append(f"| `{row.key}` | {kind} | {default} | {text} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def current_schema() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from iacorch.model.runbook_schema import json_schema

    return json_schema()


def updated(text: str, block: str) -> str:
    """`text` with its generated block replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    return text[:start] + block + text[end + len(END):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/runbook.md is out of date; change nothing")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    new = updated(text, render(current_schema()))
    if args.check:
        if new != text:
            sys.exit(f"{DOC.relative_to(ROOT)} is out of date: run python "
                     "scripts/gen_runbook_docs.py")
        return
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"updated {DOC.relative_to(ROOT)}")
    else:
        print(f"{DOC.relative_to(ROOT)} is up to date")


if __name__ == "__main__":
    main()
