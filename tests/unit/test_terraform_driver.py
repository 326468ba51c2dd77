"""Terraform driver without Terraform: argv, var routing, recorded output, error mapping.

The recorded files in data/terraform/ come from a real Terraform 1.11 run of the
integration fixture stack (see data/terraform/record.sh).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iacorch.drivers.base import StageContext
from iacorch.drivers.terraform import TerraformDriver
from iacorch.drivers.terraform_command import (
    TerraformCommand,
    child_env,
    route_vars,
    stack_paths,
)
from iacorch.drivers.terraform_output import (
    STALE_APPROVED_PLAN,
    FailedStep,
    UiStream,
    drift_findings,
    explain_failure,
    extract_json_document,
    human_lines,
    lock_info,
    parse_outputs,
    parse_ui_line,
    plan_changes,
    planned_outputs,
    prior_state_has_resources,
    progress_event,
    secret_strings,
    text_diagnostics,
)
from iacorch.model.actions import TerraformAction
from iacorch.model.masking import Masker
from iacorch.model.results import ResourceChange, StageResult, StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessResult

DATA = Path(__file__).parent / "data" / "terraform"
SECRET = "hunter2-pw"


def recorded(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def stream_of(name: str) -> UiStream:
    stream = UiStream()
    for line in recorded(name):
        message = parse_ui_line(line)
        if message is not None:
            stream.feed(message)
    return stream


# -- a process runner that replays recorded output -------------------------------------


@dataclass
class Reply:
    lines: Sequence[str] = ()
    exit_code: int | None = 0
    interrupted: bool = False
    start_error: str | None = None


@dataclass
class Call:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    masker: Masker | None
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # private files at call time


class ReplayRunner:
    """Answers each Terraform subcommand with recorded lines; writes plan files like -out does."""

    def __init__(self, replies: Mapping[str, Reply]) -> None:
        self.replies = dict(replies)
        self.calls: list[Call] = []

    @staticmethod
    def key(argv: Sequence[str]) -> str:
        words = [a for a in argv[1:] if not a.startswith("-") or a == "-refresh-only"
                 or a == "-destroy"]
        if words[0] == "plan" and "-refresh-only" in words:
            return "plan -refresh-only"
        if words[0] == "apply" and "-destroy" in words:
            return "destroy"
        return words[0]

    def run(self, argv: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            cancel: CancelToken | None = None, masker: Masker | None = None,
            on_line: Callable[[str], None] | None = None,
            stdin: bytes | None = None) -> ProcessResult:
        env = dict(env or {})
        private = Path(env["TF_DATA_DIR"]).parent
        files = {p.name: (stat.S_IMODE(p.stat().st_mode), p.read_text(errors="replace"))
                 for p in private.iterdir() if p.is_file()}
        self.calls.append(Call(tuple(argv), Path(cwd or "."), env, masker, files))
        reply = self.replies.get(self.key(argv), Reply())
        for arg in argv:
            if arg.startswith("-out="):
                Path(arg[5:]).write_bytes(b"saved plan with " + SECRET.encode())
        for line in reply.lines:
            assert on_line is not None
            on_line(line)
        return ProcessResult(tuple(argv), reply.exit_code, 0.01, tail=tuple(reply.lines[-5:]),
                             interrupted=reply.interrupted, start_error=reply.start_error)

    def argv_of(self, key: str) -> tuple[str, ...]:
        return next(c.argv for c in self.calls if self.key(c.argv) == key)


HAPPY = {
    "init": Reply(recorded("init_ok.txt")),
    "workspace": Reply(['Switched to workspace "blue".']),
    "plan": Reply(recorded("plan_create.jsonl"), exit_code=0),
    "show": Reply(recorded("show_create.json")),
    "apply": Reply(recorded("apply_create.jsonl")),
    "output": Reply(recorded("output.json")),
    "destroy": Reply(recorded("destroy.jsonl")),
}


@dataclass
class Harness:
    ctx: StageContext
    runner: ReplayRunner
    lines: list[str]
    events: list[Mapping[str, Any]]


@pytest.fixture
def fake_binary(tmp_path: Path) -> str:
    binary = tmp_path / "bin" / "terraform"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 99\n")
    binary.chmod(0o755)
    return str(binary)


@pytest.fixture
def make(tmp_path: Path, fake_binary: str) -> Callable[..., Harness]:
    stack = tmp_path / "runbook" / "stacks" / "web"
    stack.mkdir(parents=True)
    (stack / "main.tf").write_text("# stack\n")

    def build(replies: Mapping[str, Reply] | None = None, operation: Operation = Operation.APPLY,
              saved_plan: str | None = None, **action: Any) -> Harness:
        runner = ReplayRunner({**HAPPY, **(replies or {})})
        spec = StageSpec(
            run_id="r1", stage_id="web[blue]", driver="terraform", operation=operation,
            action={"dir": "stacks/web", "workspace": "blue", "binary": fake_binary,
                    "vars": {"name": "alpha", "password": SECRET, "count": 2}, **action},
            root_dir=str(tmp_path / "runbook"), work_dir=str(tmp_path / "runs" / "r1" / "web"),
            state_dir=str(tmp_path / "state"), saved_plan=saved_plan, secret_values=(SECRET,),
            env={"FROM_SPEC": "1"}, secret_env={"API_TOKEN": "tok-env-secret"})
        lines: list[str] = []
        events: list[Mapping[str, Any]] = []
        ctx = StageContext(spec=spec, process=runner,  # type: ignore[arg-type]
                           masker=Masker([SECRET]), cancel=CancelToken(),
                           on_line=lines.append, on_progress=events.append)
        return Harness(ctx, runner, lines, events)

    return build


# -- argv and environment ------------------------------------------------------------------


def command(tmp_path: Path, **fields: Any) -> TerraformCommand:
    action = TerraformAction.model_validate({"dir": "s", **fields})
    paths = stack_paths(tmp_path / "s", tmp_path / "work", tmp_path / "state")
    return TerraformCommand(action=action, paths=paths, var_files=(tmp_path / "common.tfvars",),
                            has_generated_vars=True)


def test_plan_argv_puts_generated_vars_last_and_never_values(tmp_path: Path) -> None:
    cmd = command(tmp_path, targets=["terraform_data.a"], parallelism=3,
                  vars={"name": "alpha"})
    argv = cmd.plan(tmp_path / "p")
    assert argv[:6] == ["terraform", f"-chdir={tmp_path / 's'}", "plan", "-input=false",
                        "-no-color", "-json"]
    assert f"-out={tmp_path / 'p'}" in argv
    assert argv[-2:] == [f"-var-file={tmp_path / 'common.tfvars'}",
                         f"-var-file={tmp_path / 'work' / 'terraform' / 'iacorch.tfvars.json'}"]
    assert "-target=terraform_data.a" in argv and "-parallelism=3" in argv
    assert not any("alpha" in a for a in argv)


def test_drift_argv_uses_detailed_exitcode_without_lock(tmp_path: Path) -> None:
    cmd = command(tmp_path)
    assert {"-detailed-exitcode", "-lock=false", "-refresh-only"} <= set(
        cmd.plan(detailed_exitcode=True, refresh_only=True, lock=False))
    assert "-out" not in " ".join(cmd.plan(detailed_exitcode=True, lock=False))


def test_apply_of_saved_plan_passes_no_vars_and_destroy_does(tmp_path: Path) -> None:
    cmd = command(tmp_path, binary="tofu", parallelism=2)
    assert cmd.apply_plan(tmp_path / "p") == [
        "tofu", f"-chdir={tmp_path / 's'}", "apply", "-input=false", "-no-color", "-json",
        "-parallelism=2", str(tmp_path / "p")]
    destroy = cmd.destroy()
    assert destroy[2:5] == ["apply", "-destroy", "-auto-approve"]
    assert any(a.startswith("-var-file=") for a in destroy)


def test_init_and_workspace_argv(tmp_path: Path) -> None:
    tf = ["terraform", f"-chdir={tmp_path / 's'}"]
    cmd = command(tmp_path, backend_config={"path": "x.tfstate"})
    assert cmd.init() == [*tf, "init", "-input=false", "-no-color",
                          f"-backend-config={tmp_path / 'work' / 'terraform' / 'backend.json'}"]
    assert command(tmp_path).init() == [*tf, "init", "-input=false", "-no-color"]
    assert cmd.select_workspace("eu") == [*tf, "workspace", "select", "-or-create",
                                          "-no-color", "--", "eu"]
    assert cmd.output() == [*tf, "output", "-json", "-no-color"]


def test_vars_holding_a_secret_go_to_the_environment_only() -> None:
    routing = route_vars({"name": "alpha", "dsn": f"postgres://u:{SECRET}@db/x",
                          "nested": {"list": ["a", SECRET]}, "count": 2, "on": True,
                          "tags": {"a": "b"}}, [SECRET, ""])
    assert routing.file_vars == {"name": "alpha", "count": 2, "on": True, "tags": {"a": "b"}}
    assert routing.env_vars == {"TF_VAR_dsn": f"postgres://u:{SECRET}@db/x",
                                "TF_VAR_nested": json.dumps({"list": ["a", SECRET]})}
    assert routing.secret_names == ["dsn", "nested"]


def test_child_env_layers_and_keeps_the_data_dir_per_stage(tmp_path: Path) -> None:
    paths = stack_paths(tmp_path / "s", tmp_path / "work", tmp_path / "state")
    routing = route_vars({"pw": SECRET}, [SECRET])
    env = child_env(paths=paths, routing=routing, spec_env={"A": "spec", "B": "spec"},
                    secret_env={"B": "secret"}, action_env={"TF_DATA_DIR": "/nope", "N": 3},
                    workspace="eu")
    assert env["TF_DATA_DIR"] == str(tmp_path / "work" / "terraform" / "tfdata")
    assert env["TF_PLUGIN_CACHE_DIR"] == str(tmp_path / "state" / "terraform" / "plugin-cache")
    assert (env["TF_IN_AUTOMATION"], env["TF_INPUT"]) == ("1", "0")
    assert (env["A"], env["B"], env["N"], env["TF_VAR_pw"]) == ("spec", "secret", "3", SECRET)
    assert env["TF_WORKSPACE"] == "" and "PATH" not in env
    assert "TF_WORKSPACE" not in child_env(paths=paths, routing=routing, spec_env={},
                                           secret_env={}, action_env={}, workspace=None)


# -- recorded output -----------------------------------------------------------------------


def test_plan_stream_gives_planned_changes_and_summary() -> None:
    stream = stream_of("plan_create.jsonl")
    assert stream.version == "1.11.4"
    assert sorted(stream.planned, key=lambda c: c.address) == [
        ResourceChange("terraform_data.a", "create"), ResourceChange("terraform_data.b", "create"),
        ResourceChange("terraform_data.writer", "create")]
    summary = stream.summary("plan")
    assert (summary.add, summary.change, summary.destroy) == (3, 0, 0)
    assert stream.output_actions["token"] == "create"


def test_apply_stream_gives_human_lines_and_progress_events() -> None:
    messages = [m for m in map(parse_ui_line, recorded("apply_create.jsonl")) if m]
    lines = [text for m in messages for text in human_lines(m)]
    assert "terraform_data.a: Creating..." in lines
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in lines
    events = [e for e in map(progress_event, messages) if e]
    assert {"kind": "resource", "address": "terraform_data.a", "status": "started",
            "action": "create"} in events
    assert any(e.get("status") == "provisioning" and e.get("provisioner") == "local-exec"
               for e in events)
    assert events[-1] == {"kind": "summary", "operation": "apply", "add": 3, "change": 0,
                          "destroy": 0}


def test_non_json_lines_are_not_messages() -> None:
    assert parse_ui_line("There are some problems with the CLI configuration:") is None
    assert parse_ui_line("{not json") is None
    assert parse_ui_line('{"no": "type"}') is None


def test_show_json_counts_changes_and_prior_resources() -> None:
    create = json.loads((DATA / "show_create.json").read_text())
    summary = plan_changes(create)
    assert (summary.add, summary.change, summary.destroy, summary.unchanged) == (3, 0, 0, 0)
    assert not prior_state_has_resources(create)
    update = json.loads((DATA / "show_update.json").read_text())
    summary = plan_changes(update)
    assert (summary.add, summary.change, summary.destroy) == (1, 2, 1)
    assert ResourceChange("terraform_data.writer", "replace") in summary.resources
    assert prior_state_has_resources(update)
    unchanged = plan_changes(json.loads((DATA / "show_nochange.json").read_text()))
    assert not unchanged.has_changes and unchanged.unchanged == 3


def test_output_changes_are_changes() -> None:
    """A module of only locals and outputs: Terraform's plan exits 2, and so must ours."""
    for name in ("show_outputs_create.json", "show_outputs_update.json"):
        summary = plan_changes(json.loads((DATA / name).read_text()))
        assert summary.has_changes and summary.outputs == ("service",), name
        assert (summary.add, summary.change, summary.destroy, summary.resources) == (0, 0, 0, ())
        assert str(summary) == "+0 ~0 -0, 1 output changed"
    update = plan_changes(json.loads((DATA / "show_update.json").read_text()))
    assert update.outputs == ("b", "file_present", "name")     # token and password: no-op
    assert plan_changes(json.loads((DATA / "show_nochange.json").read_text())).outputs == ()


def test_moves_imports_and_forgets_are_changes() -> None:
    """A moved, an import and a removed block change no resource attribute, yet Terraform's
    plan -detailed-exitcode exits 2 for each: so must ours (recorded from a real plan)."""
    summary = plan_changes(json.loads((DATA / "show_state_only.json").read_text()))
    assert (summary.add, summary.change, summary.destroy, summary.outputs) == (0, 0, 0, ())
    assert (summary.imported, summary.moved, summary.forgotten) == (1, 1, 1)
    assert summary.has_changes
    assert set(summary.resources) == {ResourceChange("terraform_data.new", "move"),
                                      ResourceChange("terraform_data.adopted", "import"),
                                      ResourceChange("terraform_data.gone", "forget")}
    assert str(summary) == "+0 ~0 -0, 1 to import, 1 moved, 1 to forget"


@pytest.mark.parametrize(("entry", "counts"), [
    ({"address": "a.new", "previous_address": "a.old", "change": {"actions": ["no-op"]}},
     (0, 0, 1, 0)),
    ({"address": "a.new", "previous_address": "a.old", "change": {"actions": ["update"]}},
     (1, 0, 1, 0)),
    ({"address": "a.x", "change": {"actions": ["no-op"], "importing": {"id": "i"}}},
     (0, 1, 0, 0)),
    ({"address": "a.x", "change": {"actions": ["update"], "importing": {"id": "i"}}},
     (1, 1, 0, 0)),
    ({"address": "a.x", "change": {"actions": ["forget"]}}, (0, 0, 0, 1)),
    ({"address": "a.x", "change": {"actions": ["no-op"]}}, (0, 0, 0, 0)),
])
def test_each_state_only_change_alone_is_a_change(entry, counts) -> None:
    summary = plan_changes({"resource_changes": [entry]})
    assert (summary.change, summary.imported, summary.moved, summary.forgotten) == counts
    assert summary.has_changes is any(counts)


def test_a_move_found_by_the_refresh_only_plan_is_the_codes_doing() -> None:
    """The refresh-only plan reports a `moved` block as drift; moves come from the code."""
    findings = drift_findings(stream_of("drift_state_only_refresh.jsonl"),
                              stream_of("drift_state_only_config.jsonl"))
    assert sorted((f["address"], f["action"], f["source"]) for f in findings) == [
        ("output.adopted", "update", "config"),       # null while out of the state
        ("terraform_data.adopted", "import", "config"),
        ("terraform_data.gone", "remove", "config"),
        ("terraform_data.new", "move", "config")]


def test_planned_outputs_are_known_except_where_after_unknown_says() -> None:
    update = planned_outputs(json.loads((DATA / "show_outputs_update.json").read_text()))
    assert update.values == {"service": "svc-payments"} and not update.unknown
    create = planned_outputs(json.loads((DATA / "show_create.json").read_text()))
    assert create.values == {"password_echo": SECRET}
    assert create.unknown == {"b", "file_present", "name", "token"}
    assert create.sensitive == {"password_echo"}
    unchanged = planned_outputs(json.loads((DATA / "show_nochange.json").read_text()))
    assert unchanged.values["name"] == "alpha" and not unchanged.unknown
    assert unchanged.sensitive == {"password_echo", "token"}


def test_planned_outputs_partly_unknown_or_deleted() -> None:
    plan = {"output_changes": {
        "both": {"actions": ["create"], "after": {"n": "a"}, "after_unknown": {"id": True}},
        "list": {"actions": ["update"], "after": [1, None], "after_unknown": [False, True]},
        "gone": {"actions": ["delete"], "before": "x", "after": None, "after_unknown": False},
        "flat": {"actions": ["update"], "after": {"a": [1]}, "after_unknown": {"a": [False]},
                 "after_sensitive": {"a": [True]}}}}
    planned = planned_outputs(plan)
    assert planned.unknown == {"both", "list"}
    assert planned.values == {"flat": {"a": [1]}} and planned.sensitive == {"flat"}
    assert plan_changes(plan).outputs == ("both", "flat", "gone", "list")


def test_outputs_and_sensitive_names() -> None:
    values, sensitive = parse_outputs(json.loads((DATA / "output.json").read_text()))
    assert values["name"] == "alpha" and values["file_present"] is True
    assert sensitive == {"token", "password_echo"}
    assert parse_outputs(json.loads((DATA / "output_empty.json").read_text())) == ({},
                                                                                   frozenset())


def test_secret_strings_cover_json_and_leaves() -> None:
    found = secret_strings({"user": "admin", "pw": "s3cret", "port": 5432})
    assert {"admin", "s3cret", "5432", json.dumps({"user": "admin", "pw": "s3cret",
                                                   "port": 5432})} <= set(found)


def test_json_document_is_found_among_stderr_noise() -> None:
    noise = recorded("init_syntax_error.txt")[:6]
    assert extract_json_document([*noise, *recorded("output.json"), ""])["name"]["value"] \
        == "alpha"
    assert extract_json_document(recorded("show_create.json"))["format_version"]
    with pytest.raises(ValueError):
        extract_json_document(noise)


def test_drift_findings_from_recorded_plans() -> None:
    findings = drift_findings(stream_of("drift_refresh.jsonl"), stream_of("drift_config.jsonl"))
    # an input changed and no resource moved: the refresh-only plan's output change is the
    # code's doing, not a change made outside Terraform
    assert {"address": "output.file_present", "action": "update", "source": "config"} \
        in findings
    assert {"address": "terraform_data.writer", "action": "replace", "source": "config"} \
        in findings
    assert sum(f["address"] == "output.file_present" for f in findings) == 1
    assert drift_findings(UiStream(), UiStream()) == []


def ui_stream(*messages: dict[str, Any]) -> UiStream:
    stream = UiStream()
    for message in messages:
        stream.feed(message)
    return stream


OUTPUT_CHANGED = {"type": "outputs", "outputs": {"seen": {"action": "update"}}}
RESOURCE = {"resource": {"addr": "terraform_data.a"}, "action": "update"}


@pytest.mark.parametrize(("refresh", "config", "source"), [
    # reality moved a resource: its outputs moved with it
    ((OUTPUT_CHANGED, {"type": "resource_drift", "change": RESOURCE}), (), "refresh"),
    # nothing but an output moved (e.g. it reads a file someone deleted)
    ((OUTPUT_CHANGED,), (OUTPUT_CHANGED,), "refresh"),
    # the code (or its inputs) changes a resource, reality none: the output is the code's
    ((OUTPUT_CHANGED,), ({"type": "planned_change", "change": RESOURCE}, OUTPUT_CHANGED),
     "config"),
])
def test_output_changes_are_put_down_to_what_moved(
        refresh: tuple[dict[str, Any], ...], config: tuple[dict[str, Any], ...],
        source: str) -> None:
    findings = drift_findings(ui_stream(*refresh), ui_stream(*config))
    assert [f["source"] for f in findings if f["address"] == "output.seen"] == [source]


# -- error mapping -------------------------------------------------------------------------

WHERE = FailedStep(stage="web", step="plan", binary="terraform", stack_dir="/s",
                   workspace="blue", timeout=30)


def failed(code: int | None = 1, **kw: Any) -> ProcessResult:
    return ProcessResult(("terraform",), code, 0.1, **kw)


def test_lock_error_names_force_unlock_and_lock_id() -> None:
    diagnostics = stream_of("plan_locked.jsonl").diagnostics
    lock = lock_info(diagnostics)
    assert lock is not None and lock.lock_id and lock.fields["Operation"] == "OperationTypeApply"
    why = explain_failure(WHERE, failed(), diagnostics)
    assert why.error.startswith("stage web: the Terraform state is locked by another operation")
    assert f"`terraform force-unlock {lock.lock_id}` in /s (workspace blue)" in why.hint


def test_stale_plan_at_apply_of_approved_plan() -> None:
    diagnostics = stream_of("apply_stale.jsonl").diagnostics
    approved = FailedStep(stage="web", step="apply", binary="terraform", stack_dir="/s",
                          approved_plan=True)
    assert explain_failure(approved, failed(), diagnostics).error == \
        f"stage web: {STALE_APPROVED_PLAN}"
    assert "Saved plan is stale" in explain_failure(WHERE, failed(), diagnostics).error


def test_config_error_names_file_line_and_column() -> None:
    why = explain_failure(WHERE, failed(), stream_of("plan_syntax_error.jsonl").diagnostics)
    assert why.error == "stage web: terraform plan failed at broken.tf:2:11: Invalid expression"


def test_init_text_errors_are_parsed() -> None:
    diagnostics = text_diagnostics(recorded("init_syntax_error.txt"))
    assert [d.summary for d in diagnostics][-1] == "Invalid expression"
    init = FailedStep(stage="web", step="init", binary="terraform", stack_dir="/s")
    assert "run `terraform init` in /s" in explain_failure(init, failed(), diagnostics).hint


def test_missing_binary_timeout_and_interrupt() -> None:
    missing = explain_failure(WHERE, failed(None, start_error="No such file"), [])
    assert missing.error == ("stage web: terraform not found on PATH; install it from "
                             "https://developer.hashicorp.com/terraform/install")
    assert "timed out after 30s" in explain_failure(WHERE, failed(None, timed_out=True), []).error
    assert explain_failure(WHERE, failed(130, interrupted=True), []).interrupted
    assert explain_failure(WHERE, failed(3), []).error == \
        "stage web: terraform plan failed: exited with code 3"


# -- the driver, end to end against replayed output ---------------------------------------------


def test_apply_runs_plan_show_apply_output_and_cleans_up(make: Callable[..., Harness]) -> None:
    h = make()
    result = TerraformDriver().apply(h.ctx)
    assert result.status is StageStatus.SUCCEEDED, result.error
    assert [h.runner.key(c.argv) for c in h.runner.calls] == [
        "init", "workspace", "plan", "show", "apply", "output"]
    plan_call = h.runner.calls[2]
    mode, text = plan_call.files["iacorch.tfvars.json"]
    assert mode == 0o600 and json.loads(text) == {"name": "alpha", "count": 2}
    assert plan_call.env["TF_VAR_password"] == SECRET
    assert plan_call.env["API_TOKEN"] == "tok-env-secret" and plan_call.env["FROM_SPEC"] == "1"
    assert all(SECRET not in " ".join(c.argv) for c in h.runner.calls)
    plan_file = Path(h.runner.argv_of("apply")[-1])
    assert str(plan_file) in h.runner.argv_of("plan")[6]
    # every command names its stack with -chdir and runs where we run (posix_spawn, no fork)
    assert {(c.argv[1], c.cwd) for c in h.runner.calls} == {
        (f"-chdir={h.ctx.resolve('stacks/web')}", Path("."))}
    assert not plan_file.parent.exists()           # private dir (tfvars, tfdata, plan) removed
    assert result.details["saved_plan_sha256"] == hashlib.sha256(
        b"saved plan with " + SECRET.encode()).hexdigest()
    assert result.details["stack_existed"] is False
    assert result.details["applied"] == {"add": 3, "change": 0, "destroy": 0}
    assert result.outputs["name"] == "alpha"
    assert result.sensitive_outputs == {"token", "password_echo"}
    assert result.changes is not None and result.changes.add == 3
    token = result.outputs["token"]
    assert token in h.ctx.masker.secrets
    assert "terraform_data.a: Creating..." in h.lines
    assert not any(token in line or SECRET in line for line in h.lines)
    assert any(e.get("status") == "complete" for e in h.events)


def test_lock_error_becomes_a_failed_result(make: Callable[..., Harness]) -> None:
    h = make({"plan": Reply(recorded("plan_locked.jsonl"), exit_code=1)})
    result = TerraformDriver().apply(h.ctx)
    assert result.status is StageStatus.FAILED and result.exit_code == 1
    assert "force-unlock" in (result.hint or "")
    assert "Error: Error acquiring the state lock" in result.output_tail
    assert not (Path(h.ctx.spec.work_dir) / "terraform").exists()


def test_approved_plan_that_went_stale(make: Callable[..., Harness], tmp_path: Path) -> None:
    approved = tmp_path / "approved.tfplan"
    approved.write_bytes(b"approved")
    h = make({"apply": Reply(recorded("apply_stale.jsonl"), exit_code=1)},
             saved_plan=str(approved))
    result = TerraformDriver().apply(h.ctx)
    assert result.error == f"stage web[blue]: {STALE_APPROVED_PLAN}"
    assert "plan" not in [h.runner.key(c.argv) for c in h.runner.calls]
    assert h.runner.argv_of("apply")[-1] == str(approved)
    assert result.details["saved_plan_sha256"] == hashlib.sha256(b"approved").hexdigest()
    assert not approved.exists()


def test_plan_keeps_a_private_saved_plan(make: Callable[..., Harness]) -> None:
    h = make(operation=Operation.PLAN)
    result = TerraformDriver().plan(h.ctx)
    assert result.ok and result.saved_plan is not None
    saved = Path(result.saved_plan)
    assert saved.exists() and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert [h.runner.key(c.argv) for c in h.runner.calls] == [
        "init", "workspace", "plan", "show", "output"]
    assert result.changes is not None and result.changes.add == 3


LAST_APPLIED_SERVICE = ['{"service": {"sensitive": false, "type": "string", '
                        '"value": "svc-web"}}']


def test_plan_gives_the_planned_outputs_not_the_last_applied_ones(
        make: Callable[..., Harness]) -> None:
    h = make({"show": Reply(recorded("show_outputs_update.json")),
              "output": Reply(LAST_APPLIED_SERVICE)}, operation=Operation.PLAN)
    result = TerraformDriver().plan(h.ctx)
    assert result.ok and result.changes is not None and result.changes.has_changes
    assert result.outputs == {"service": "svc-payments"}
    assert result.unknown_outputs == frozenset()
    assert any("output changed (service)" in line for line in h.lines)


def test_plan_falls_back_to_last_applied_outputs_only_where_unknown(
        make: Callable[..., Harness]) -> None:
    h = make({"show": Reply(recorded("show_update.json"))}, operation=Operation.PLAN)
    result = TerraformDriver().plan(h.ctx)
    applied, _ = parse_outputs(json.loads((DATA / "output.json").read_text()))
    assert result.unknown_outputs == {"b", "file_present", "name"}
    assert result.outputs == {**applied, "token": "tok-dab9a4d3-e155-ba8f-ee20-c3f3a89b9791",
                              "password_echo": SECRET}
    assert result.sensitive_outputs == {"token", "password_echo"}
    assert ("outputs known only after apply: b (its last applied value stands in), "
            "file_present (its last applied value stands in), name (its last applied value "
            "stands in)") in h.lines
    never_applied = make({"output": Reply(recorded("output_empty.json"))},
                         operation=Operation.PLAN)
    result = TerraformDriver().plan(never_applied.ctx)
    assert result.outputs == {"password_echo": SECRET}
    assert result.unknown_outputs == {"b", "file_present", "name", "token"}
    assert any("token (no value)" in line for line in never_applied.lines)
    assert not any(SECRET in line for line in never_applied.lines)


def test_destroy_summarises_deleted_resources(make: Callable[..., Harness]) -> None:
    h = make(operation=Operation.DESTROY, targets=["terraform_data.a"])
    result = TerraformDriver().destroy(h.ctx)
    assert result.ok and result.changes is not None and result.changes.destroy == 3
    assert {c.action for c in result.changes.resources} == {"delete"}
    assert "-target=terraform_data.a" in h.runner.argv_of("destroy")


@pytest.mark.parametrize(("code", "drifted"), [(2, True), (0, False)])
def test_drift_reports_findings(make: Callable[..., Harness], code: int, drifted: bool) -> None:
    replies = {"plan -refresh-only": Reply(recorded("drift_refresh.jsonl") if drifted else [],
                                           exit_code=code),
               "plan": Reply(recorded("drift_config.jsonl") if drifted else [], exit_code=code)}
    h = make(replies, operation=Operation.DRIFT)
    result = TerraformDriver().drift(h.ctx)
    assert result.status is StageStatus.SUCCEEDED and result.drifted is drifted
    assert bool(result.details["findings"]) is drifted
    plans = [c.argv for c in h.runner.calls if c.argv[2] == "plan"]
    assert len(plans) == 2 and all("-lock=false" in argv for argv in plans)


def test_drift_error_fails(make: Callable[..., Harness]) -> None:
    h = make({"plan -refresh-only": Reply(recorded("plan_syntax_error.jsonl"), exit_code=1)},
             operation=Operation.DRIFT)
    result = TerraformDriver().drift(h.ctx)
    assert result.status is StageStatus.FAILED and result.drifted is None
    assert "Invalid expression" in (result.error or "")


def test_interrupted_apply_is_interrupted(make: Callable[..., Harness]) -> None:
    h = make({"apply": Reply(["Interrupt received."], exit_code=1, interrupted=True)})
    result = TerraformDriver().apply(h.ctx)
    assert result.status is StageStatus.INTERRUPTED and result.interrupted
    assert "force-unlock" in (result.hint or "")


def test_nothing_starts_after_cancel(make: Callable[..., Harness]) -> None:
    h = make()
    h.ctx.cancel.interrupt()
    result = TerraformDriver().apply(h.ctx)
    assert result.status is StageStatus.INTERRUPTED and h.runner.calls == []


def test_init_failure_names_stage_and_fix(make: Callable[..., Harness]) -> None:
    h = make({"init": Reply(recorded("init_syntax_error.txt"), exit_code=1)})
    result = TerraformDriver().apply(h.ctx)
    assert result.error is not None and result.error.startswith(
        "stage web[blue]: terraform init failed")
    assert [h.runner.key(c.argv) for c in h.runner.calls] == ["init"]


def test_missing_binary_dir_and_var_file(make: Callable[..., Harness]) -> None:
    h = make(binary="no-such-terraform-binary")
    assert TerraformDriver().apply(h.ctx).error == (
        "stage web[blue]: no-such-terraform-binary not found on PATH; install it from "
        "https://developer.hashicorp.com/terraform/install")
    h = make(dir="stacks/nope")
    result = TerraformDriver().apply(h.ctx)
    assert result.error is not None and "stage web[blue]: terraform dir 'stacks/nope' does not " \
        "exist" in result.error and "relative to the runbook's directory" in (result.hint or "")
    h = make(var_files=["missing.tfvars"])
    assert "var file 'missing.tfvars' not found" in (TerraformDriver().apply(h.ctx).error or "")
    assert h.runner.calls == []


def test_invalid_action_is_a_failed_result(make: Callable[..., Harness]) -> None:
    h = make(parallelism=0)
    result = TerraformDriver().apply(h.ctx)
    assert result.status is StageStatus.FAILED
    assert (result.error or "").startswith("stage web[blue]: invalid terraform action: ")


def test_required_tools() -> None:
    assert TerraformDriver().required_tools({"dir": "x"}) == ["terraform"]
    assert TerraformDriver().required_tools({"dir": "x", "binary": "tofu"}) == ["tofu"]


def test_private_dir_is_owner_only(make: Callable[..., Harness]) -> None:
    h = make()
    seen: list[int] = []
    original = h.runner.run

    def spy(argv: Sequence[str], **kw: Any) -> ProcessResult:
        seen.append(stat.S_IMODE(os.stat(Path(kw["env"]["TF_DATA_DIR"]).parent).st_mode))
        return original(argv, **kw)

    h.runner.run = spy  # type: ignore[method-assign]
    TerraformDriver().apply(h.ctx)
    assert seen and set(seen) == {0o700}


def test_json_document_survives_a_long_line_cut_into_pieces() -> None:
    line = (DATA / "show_create.json").read_text().strip()
    pieces = [line[i:i + 700] for i in range(0, len(line), 700)]
    assert extract_json_document(["Warning: noise", *pieces]) == json.loads(line)


def apply_while_holding(h: Harness, name: str, mode: int, *, cancel_after: float) -> StageResult:
    """Apply with `name` (init.lock or its gate) held in `mode` by someone else; a cancel
    comes after `cancel_after` seconds, so an apply that waits ends interrupted."""
    path = Path(h.ctx.spec.state_dir) / "terraform" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cancel = threading.Timer(cancel_after, h.ctx.cancel.interrupt)
    with open(path, "a") as held:
        fcntl.flock(held, mode)
        cancel.start()
        try:
            return TerraformDriver().apply(h.ctx)
        finally:
            cancel.cancel()


def use_a_provider(tmp_path: Path) -> None:
    (tmp_path / "runbook" / "stacks" / "web" / "main.tf").write_text(
        'resource "aws_s3_bucket" "logs" {}\n')


def test_init_waits_for_the_host_wide_init_lock_but_not_past_a_cancel(
        make: Callable[..., Harness]) -> None:
    h = make()
    result = apply_while_holding(h, "init.lock", fcntl.LOCK_EX, cancel_after=0.3)
    assert result.status is StageStatus.INTERRUPTED and h.runner.calls == []


def test_an_init_that_may_install_providers_waits_for_inits_sharing_the_lock(
        make: Callable[..., Harness], tmp_path: Path) -> None:
    use_a_provider(tmp_path)
    h = make()
    result = apply_while_holding(h, "init.lock", fcntl.LOCK_SH, cancel_after=0.3)
    assert result.status is StageStatus.INTERRUPTED and h.runner.calls == []


def test_inits_that_need_only_the_builtin_provider_run_side_by_side(
        make: Callable[..., Harness]) -> None:
    h = make()  # main.tf has no resource of any provider
    result = apply_while_holding(h, "init.lock", fcntl.LOCK_SH, cancel_after=5.0)
    assert result.ok and h.runner.key(h.runner.calls[0].argv) == "init"


def test_an_init_waiting_to_install_keeps_new_sharing_inits_out(
        make: Callable[..., Harness]) -> None:
    h = make()  # built-in only, but one that needs the lock alone waits at the gate
    result = apply_while_holding(h, "init.gate", fcntl.LOCK_EX, cancel_after=0.3)
    assert result.status is StageStatus.INTERRUPTED and h.runner.calls == []
