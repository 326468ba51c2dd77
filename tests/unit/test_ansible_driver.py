"""Ansible driver without running Ansible: inventory, argv/env, recorded job events, results.

The recordings in data/ansible/ come from real ansible-playbook runs with
ansible-runner's awx_display callback (see data/ansible/record.py). A replaying
ProcessRunner stands in for the child, so these tests start no process.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iacorch import process
from iacorch.drivers import ansible
from iacorch.drivers.ansible import (
    DESTROY_HINT,
    AnsibleDriver,
    child_env,
    playbook_options,
    prepare_invocation,
)
from iacorch.drivers.ansible_check import (
    CALLBACK_DIR,
    DRY_RUN_CALLBACK,
    NOT_CHECKABLE,
    render_diff,
)
from iacorch.drivers.ansible_events import (
    EventReader,
    EventStream,
    PlayRecord,
    host_stats,
    log_lines,
    masked_json,
    module_message,
    progress,
)
from iacorch.drivers.ansible_inputs import (
    LOCAL_HOST_VARS,
    AnsibleActionError,
    extra_vars,
    normalise_inventory,
)
from iacorch.drivers.base import StageContext
from iacorch.model.actions import AnsibleAction
from iacorch.model.masking import Masker
from iacorch.model.results import DIFF_PREVIEW_LINES, StageSpec, diff_preview
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessResult

DATA = Path(__file__).parent / "data" / "ansible"
SECRET = "world"  # the recordings ran with greeting=world: it shows up in diffs and stdout


def recording(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def replay(name: str) -> tuple[PlayRecord, list[str], list[dict[str, Any]]]:
    """Feed a recording through EventStream; return the record, log lines and events."""
    data = recording(name)
    partials = dict(data["partials"])
    record, lines, events = PlayRecord(), [], []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        record.add(event)
        lines.extend(log_lines(event))

    stream = EventStream(lambda uuid: partials.pop(uuid, None), on_event, lines.append)
    for line in data["lines"]:
        stream.feed(line)
    stream.close()
    assert not partials, "every recorded event was announced in the output"
    return record, lines, events


def resolver(root: Path) -> Callable[[str], Path]:
    return lambda relative: (root / relative).resolve()


# -- inventory ----------------------------------------------------------------------------

LOCAL = dict(LOCAL_HOST_VARS)


@pytest.mark.parametrize(("given", "expected"), [
    (None, {"all": {"hosts": {"localhost": LOCAL}}}),
    ("localhost", {"all": {"hosts": {"localhost": LOCAL}}}),
    ("web1, 127.0.0.1", {"all": {"hosts": {"web1": {}, "127.0.0.1": LOCAL}}}),
    (["db1", "localhost"], {"all": {"hosts": {"db1": {}, "localhost": LOCAL}}}),
    ([{"name": "web-1", "ip": "10.0.0.5", "role": "web"}],
     {"all": {"hosts": {"web-1": {"ansible_host": "10.0.0.5", "role": "web"}}}}),
    ([{"name": "web-1", "address": "127.0.0.1"}],
     {"all": {"hosts": {"web-1": {**LOCAL, "ansible_host": "127.0.0.1"}}}}),
    ([{"address": "10.0.0.7"}], {"all": {"hosts": {"10.0.0.7": {}}}}),
    ({"hosts": ["a", "b"], "vars": {"x": 1}},
     {"all": {"hosts": {"a": {}, "b": {}}, "vars": {"x": 1}}}),
    ({"web": ["w1"], "db": {"hosts": [{"name": "d1", "ip": "10.0.1.1"}], "vars": {"p": 5432}}},
     {"web": {"hosts": {"w1": {}}},
      "db": {"hosts": {"d1": {"ansible_host": "10.0.1.1"}}, "vars": {"p": 5432}}}),
    ({"all": {"children": {"web": {"hosts": {"w1": None, "w2": {"port": 81}}}}}},
     {"all": {"children": {"web": {"hosts": {"w1": {}, "w2": {"port": 81}}}}}}),
    ([{"name": "localhost", "ansible_connection": "ssh"}],
     {"all": {"hosts": {"localhost": {"ansible_connection": "ssh"}}}}),
    # local connection under another name: ansible-playbook's Python, not discovery
    ([{"name": "web-1", "ansible_connection": "local"}], {"all": {"hosts": {"web-1": LOCAL}}}),
    ({"web": {"hosts": {"w1": {"ansible_connection": "local"}}}},
     {"web": {"hosts": {"w1": LOCAL}}}),
    ({"web": {"hosts": ["w1"], "vars": {"ansible_connection": "local"}}},
     {"web": {"hosts": {"w1": {}}, "vars": LOCAL}}),
    ([{"name": "w", "ansible_connection": "local", "ansible_python_interpreter": "/py"}],
     {"all": {"hosts": {"w": {"ansible_connection": "local",
                              "ansible_python_interpreter": "/py"}}}}),
])
def test_inventory_normalisation(given: Any, expected: dict[str, Any], tmp_path: Path) -> None:
    assert normalise_inventory(given, resolver(tmp_path)) == expected


def test_inventory_path_is_resolved_from_the_runbook(tmp_path: Path) -> None:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.ini").write_text("web1\n")
    (tmp_path / "hosts").write_text("web1\n")
    resolve = resolver(tmp_path)
    assert normalise_inventory("inventories/prod.ini", resolve) == \
        tmp_path / "inventories" / "prod.ini"
    assert normalise_inventory("hosts", resolve) == tmp_path / "hosts"


@pytest.mark.parametrize(("given", "message"), [
    ("inventories/missing.yml", "inventory inventories/missing.yml not found"),
    (42, "inventory must be a path, a list of hosts or a mapping of groups, not int"),
    ([{"role": "web"}], "has no name and no address"),
    ([["nested"]], "an inventory host must be a name or a mapping"),
    ({"web": "w1"}, "inventory group 'web' must be a list of hosts"),
])
def test_inventory_errors_say_what_is_wrong(given: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(AnsibleActionError, match=message):
        normalise_inventory(given, resolver(tmp_path))


# -- extra vars, options, environment -------------------------------------------------------

def test_extra_vars_accept_a_mapping_text_or_a_file(tmp_path: Path) -> None:
    resolve = resolver(tmp_path)
    assert extra_vars({"a": 1}, resolve) == {"a": 1}
    assert extra_vars('{"a": [1, 2]}', resolve) == {"a": [1, 2]}
    assert extra_vars("a: b\nc: 3", resolve) == {"a": "b", "c": 3}
    assert extra_vars("@vars/prod.yml", resolve) == tmp_path / "vars" / "prod.yml"
    assert extra_vars("  ", resolve) == {}
    with pytest.raises(AnsibleActionError, match="extra_vars must be a mapping"):
        extra_vars("just words", resolve)


def test_playbook_options() -> None:
    action = AnsibleAction(playbook="site.yml", become=True)
    assert playbook_options(action, check=True, diff=True, extra_vars_file=Path("/s/ev.json"),
                            vault_password_file=Path("/s/vault")) == [
        "--check", "--diff", "--become", "--vault-password-file", "/s/vault",
        "-e", "@/s/ev.json"]
    assert playbook_options(AnsibleAction(playbook="x.yml"), check=False, diff=False,
                            extra_vars_file=None, vault_password_file=None) == []


def test_child_env_layers_runbook_action_and_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "python_script_dirs", lambda: ("/venv/bin",))
    env = child_env({"A": "runbook", "B": "runbook", "PATH": "/usr/bin:/venv/bin"},
                    {"B": "action", "FLAG": True, "LIST": [1, 2], "NONE": None},
                    {"TOKEN": "s3cret"})
    assert env == {"A": "runbook", "B": "action", "FLAG": "true", "LIST": "[1, 2]",
                   "NONE": "", "TOKEN": "s3cret", "ANSIBLE_NOCOLOR": "1",
                   "PATH": "/venv/bin:/usr/bin"}
    assert child_env({}, {"ANSIBLE_NOCOLOR": "0"}, {})["ANSIBLE_NOCOLOR"] == "0"


def test_prepare_invocation_builds_argv_and_env_with_runner_config(tmp_path: Path) -> None:
    playbook = tmp_path / "playbooks" / "site.yml"
    playbook.parent.mkdir()
    playbook.write_text("- hosts: all\n  tasks: []\n")
    inventory = tmp_path / "inv.json"
    inventory.write_text("{}")
    action = AnsibleAction(playbook="playbooks/site.yml", limit="web", tags=["a", "b"],
                           skip_tags="c", forks=3)
    invocation = prepare_invocation(
        action, playbook=playbook, inventory=inventory, private_data_dir=tmp_path / "pdd",
        ident="apply-1", events_dir=tmp_path / "scratch", options=["--check", "--diff"],
        env={"TOKEN": "s3cret"})
    assert invocation.argv == (
        "ansible-playbook", "--check", "--diff", "-i", str(inventory), "--limit", "web",
        "--tags", "a,b", "--skip-tags", "c", "--forks", "3", str(playbook))
    assert invocation.cwd == str(playbook.parent)
    assert invocation.artifact_dir == tmp_path / "pdd" / "artifacts" / "apply-1"
    env = invocation.env
    assert env["ANSIBLE_STDOUT_CALLBACK"] == "awx_display"
    assert "display_callback" in env["ANSIBLE_CALLBACK_PLUGINS"]
    assert env["AWX_ISOLATED_DATA_DIR"] == str(tmp_path / "scratch")
    assert env["TOKEN"] == "s3cret"
    assert env.get("ANSIBLE_HOST_KEY_CHECKING") == os.environ.get("ANSIBLE_HOST_KEY_CHECKING")
    assert env.get("ANSIBLE_CACHE_PLUGIN") == os.environ.get("ANSIBLE_CACHE_PLUGIN")
    assert [p for p in (tmp_path / "pdd").rglob("*") if p.is_file()] == [], \
        "RunnerConfig wrote no files (no command or env files with secrets)"


# -- recorded events ------------------------------------------------------------------------

def test_apply_events_give_one_line_per_task_result_and_the_recap() -> None:
    record, lines, _ = replay("apply_ok")
    assert lines == [
        "PLAY Configure",
        "TASK Write the motd | localhost | changed",
        "TASK Never on this host | localhost | skipped",
        "TASK Publish outputs | localhost | ok",
        "TASK Publish per host | localhost | ok",
        "RECAP localhost | ok=3 changed=1 failures=0 unreachable=0 skipped=1 rescued=0 "
        "ignored=0",
    ]
    assert record.host_stats() == {"localhost": {"ok": 3, "changed": 1, "failures": 0,
                                                 "unreachable": 0, "skipped": 1,
                                                 "rescued": 0, "ignored": 0}}
    assert record.set_stats() == {"motd": "/scratch/motd", "replicas": 2}
    assert record.failure_message() is None
    assert [(c.host, c.task, c.action) for c in record.changes] == [
        ("localhost", "Write the motd", "ansible.builtin.copy")]


def test_check_diff_events_list_what_would_change_with_the_diff() -> None:
    record, _, _ = replay("check_diff")
    (change,) = record.changes
    assert change.task == "Write the motd"
    assert change.diff == ("--- before: /scratch/motd\n+++ after: /scratch/motd\n"
                           "@@ -1 +1 @@\n-hello old\n+hello world\n")


def test_failed_events_name_host_task_and_module_message() -> None:
    record, lines, _ = replay("failed")
    assert "TASK Tolerated failure | localhost | ignored | non-zero return code" in lines
    assert record.failure_message() == (
        "task 'Check free space' failed on host 'localhost': disk /data is 99% full")


def test_rescued_failures_come_after_the_cause_and_the_recap_counts_them() -> None:
    record, lines, _ = replay("rescued")
    assert lines[-1] == ("RECAP localhost | ok=2 changed=1 failures=1 unreachable=0 skipped=0 "
                         "rescued=1 ignored=1")
    assert [f.task for f in record.failures] == ["Check free space"]
    assert [f.task for f in record.rescued] == ["Expected failure"]
    assert record.failure_message() == (
        "task 'Check free space' failed on host 'localhost': disk /data is 99% full; "
        "task 'Expected failure' failed (rescued) on host 'localhost': non-zero return code")


def test_unreachable_host_is_a_failure_with_the_connection_error() -> None:
    record, _, _ = replay("unreachable")
    (failure,) = record.failures
    assert (failure.host, failure.status) == ("ghost", "unreachable")
    assert "Connection refused" in failure.message
    assert record.host_stats()["ghost"]["unreachable"] == 1


def test_warnings_are_logged_and_no_hosts_is_said() -> None:
    _, lines, _ = replay("no_hosts")
    assert any("[WARNING]: Could not match supplied host pattern" in line for line in lines)
    assert "PLAY skipped: no hosts matched" in lines


def test_events_are_numbered_in_output_order_with_their_text() -> None:
    _, _, events = replay("apply_ok")
    assert [e["counter"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "playbook_on_start"
    assert events[-1]["event"] == "playbook_on_stats"
    ok = next(e for e in events if e["event"] == "runner_on_ok")
    assert ok["stdout"] == "changed: [localhost]"


def test_progress_dicts() -> None:
    _, _, events = replay("apply_ok")
    updates = [p for p in map(progress, events) if p]
    assert updates[0] == {"kind": "play", "play": "Configure"}
    assert {"kind": "result", "task": "Write the motd", "host": "localhost",
            "status": "changed", "action": "ansible.builtin.copy"} in updates
    assert updates[-1]["kind"] == "recap"


def test_text_outside_events_is_passed_on() -> None:
    texts: list[str] = []
    stream = EventStream(lambda uuid: None, lambda event: None, texts.append)
    stream.feed("Traceback (most recent call last):")
    stream.feed("   ")
    assert texts == ["Traceback (most recent call last):"]


@pytest.mark.parametrize(("res", "message"), [
    ({"msg": "boom"}, "boom"),
    ({"msg": "non-zero return code", "stderr": "line 1\nNo space left on device\n"},
     "non-zero return code: No space left on device"),
    ({"msg": "One or more items failed", "results": [
        {"item": "a", "failed": False}, {"item": "b", "failed": True, "msg": "bad b"}]},
     "One or more items failed: item b: bad b"),
    ({"censored": "hidden"}, "output hidden by no_log"),
    ({}, "no message from the module"),
    ({"msg": "x" * 600}, "x" * 500 + "..."),
])
def test_module_message(res: dict[str, Any], message: str) -> None:
    assert module_message(res) == message


def test_render_diff_of_structures_and_prepared_text() -> None:
    assert render_diff({"prepared": "+ new line"}) == "+ new line\n"
    text = render_diff([{"before": {"a": 1}, "after": {"a": 2}, "before_header": "conf"}])
    assert '-  "a": 1\n+  "a": 2\n' in text and text.startswith("--- before: conf\n")
    assert render_diff({"before": "a\n" * 5000, "after": ""}, limit=100).endswith(
        "... (diff truncated)\n")


def test_host_stats_fill_missing_counters() -> None:
    none = {"rescued": 0, "ignored": 0}
    assert host_stats({"ok": {"a": 2}, "dark": {"b": 1}, "processed": {"a": 1, "b": 1}}) == {
        "a": {"ok": 2, "changed": 0, "failures": 0, "unreachable": 0, "skipped": 0, **none},
        "b": {"ok": 0, "changed": 0, "failures": 0, "unreachable": 1, "skipped": 0, **none}}


# -- the driver, with a replaying process runner ---------------------------------------------

@dataclass
class ReplayRunner:
    """Plays a recording back as if ansible-playbook had printed it."""

    name: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    scratch_files: list[Path] = field(default_factory=list)
    timed_out: bool = False
    interrupted: bool = False
    start_error: str | None = None

    def run(self, argv: Sequence[str], *, cwd: Any = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None, cancel: CancelToken | None = None,
            masker: Masker | None = None, on_line: Callable[[str], None] | None = None,
            stdin: bytes | None = None) -> ProcessResult:
        assert env is not None and masker is not None and on_line is not None
        self.calls.append({"argv": list(argv), "env": dict(env), "cwd": cwd})
        if self.start_error:
            return ProcessResult(tuple(argv), None, 0.0, start_error=self.start_error)
        data = recording(self.name)
        events = Path(env["AWX_ISOLATED_DATA_DIR"]) / "job_events"
        for uuid, partial in data["partials"].items():
            (events / f"{uuid}-partial.json").write_text(json.dumps(partial))
        self.scratch_files = sorted(Path(env["AWX_ISOLATED_DATA_DIR"]).rglob("*"))
        for line in data["lines"]:
            on_line(masker.mask(line))
        code = 99 if self.interrupted else data["rc"]
        return ProcessResult(tuple(argv), code, 0.5, timed_out=self.timed_out,
                             interrupted=self.interrupted)


@dataclass
class Stage:
    ctx: StageContext
    runner: ReplayRunner
    lines: list[str]
    progress: list[Mapping[str, Any]]


@pytest.fixture
def stage(tmp_path: Path) -> Callable[..., Stage]:
    root = tmp_path / "runbook"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "ansible-playbook"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)

    def build(recorded: str, operation: Operation = Operation.APPLY, *,
              action: Mapping[str, Any] | None = None, path: str | None = None,
              **runner_options: Any) -> Stage:
        spec = StageSpec(
            run_id="run-1", stage_id="configure", driver="ansible",
            operation=operation,
            action=action or {"playbook": "playbooks/site.yml", "inventory": ["localhost"],
                              "extra_vars": {"greeting": SECRET, "port": 8080}},
            root_dir=str(root), work_dir=str(tmp_path / "work"),
            state_dir=str(tmp_path / "state"), secret_values=(SECRET,),
            env={"PATH": path if path is not None else f"{tools}{os.pathsep}/usr/bin:/bin"})
        runner = ReplayRunner(recorded, **runner_options)
        lines: list[str] = []
        updates: list[Mapping[str, Any]] = []
        ctx = StageContext(spec=spec, process=runner,  # type: ignore[arg-type]
                           masker=Masker(spec.secret_values), cancel=CancelToken(),
                           on_line=lines.append, on_progress=updates.append)
        return Stage(ctx, runner, lines, updates)

    return build


def run(stage: Stage) -> Any:
    driver = AnsibleDriver()
    return {Operation.PLAN: driver.plan, Operation.APPLY: driver.apply,
            Operation.DESTROY: driver.destroy,
            Operation.DRIFT: driver.drift}[stage.ctx.spec.operation](stage.ctx)


def test_apply_publishes_set_stats_and_host_stats(stage: Callable[..., Stage]) -> None:
    s = stage("apply_ok")
    result = run(s)
    assert result.status is StageStatus.SUCCEEDED
    assert result.outputs == {"motd": "/scratch/motd", "replicas": 2, "hosts": {"localhost": {
        "ok": 3, "changed": 1, "failures": 0, "unreachable": 0, "skipped": 1, "rescued": 0,
        "ignored": 0}}}
    assert result.changes.change == 1
    assert "TASK Write the motd | localhost | changed" in s.lines
    assert {"stage": "configure", "kind": "play", "play": "Configure"} in s.progress


def test_outputs_holding_a_secret_are_marked_sensitive(stage: Callable[..., Stage]) -> None:
    s = stage("apply_ok")
    s.ctx.masker.add(["scratch/motd"])
    result = run(s)
    assert result.outputs["motd"] == "/scratch/motd", "outputs are data, kept in clear"
    assert result.sensitive_outputs == frozenset({"motd"})


def test_apply_argv_carries_no_secret_and_secrets_stay_in_the_scratch_dir(
        stage: Callable[..., Stage], tmp_path: Path) -> None:
    s = stage("check_diff")
    run(s)
    (call,) = s.runner.calls
    assert not any(SECRET in arg for arg in call["argv"])
    vars_file = Path(call["argv"][call["argv"].index("-e") + 1].removeprefix("@"))
    assert tmp_path not in vars_file.parents, "extra vars live outside the work dir"
    assert not vars_file.exists(), "the scratch dir is gone once the stage ended"
    assert vars_file in s.runner.scratch_files
    assert all(not f.is_file() or f.stat().st_mode & 0o077 == 0 for f in s.runner.scratch_files)
    files = [f for f in (tmp_path / "work").rglob("*") if f.is_file()]
    assert files, "artifacts were written"
    assert not [f for f in files if SECRET in f.read_text()]
    assert not [line for line in s.lines if SECRET in line]


def test_artifacts_hold_masked_job_events(stage: Callable[..., Stage], tmp_path: Path) -> None:
    result = run(stage("check_diff"))
    artifacts = Path(result.artifacts[0])
    saved = sorted(artifacts.glob("job_events/*.json"), key=lambda p: int(p.name.split("-")[0]))
    events = [json.loads(p.read_text()) for p in saved]
    assert events[-1]["event"] == "playbook_on_stats"
    diff = next(e for e in events if e["event"] == "runner_on_ok"
                and e["event_data"]["res"].get("diff"))
    assert diff["event_data"]["res"]["diff"][0]["after"] == "hello ***\n"
    assert json.loads((artifacts / "inventory.json").read_text())["all"]["hosts"]["localhost"]
    assert json.loads((artifacts / "extra_vars.json").read_text()) == {
        "greeting": "***", "port": 8080}
    assert (artifacts / "stdout").read_text().count("TASK [") == 4


def test_drift_is_any_changed_task(stage: Callable[..., Stage]) -> None:
    s = stage("check_diff", Operation.DRIFT)
    result = run(s)
    assert result.status is StageStatus.SUCCEEDED and result.drifted is True
    (change,) = result.details["changed"]
    assert change["host"] == "localhost" and change["task"] == "Write the motd"
    assert change["diff"].endswith("-hello old\n+hello ***\n")
    assert "--check" in s.runner.calls[0]["argv"] and "--diff" in s.runner.calls[0]["argv"]


def test_drift_in_sync(stage: Callable[..., Stage]) -> None:
    result = run(stage("no_hosts", Operation.DRIFT))
    assert result.drifted is False and result.details["changed"] == []


def test_plan_is_a_dry_run_with_details(stage: Callable[..., Stage]) -> None:
    s = stage("check_diff", Operation.PLAN)
    result = run(s)
    assert result.status is StageStatus.SUCCEEDED and result.drifted is None
    assert result.changes.resources[0].address == "localhost: Write the motd"
    assert result.outputs == {}
    assert "--check" in s.runner.calls[0]["argv"]


def test_failure_names_host_task_and_module_message(stage: Callable[..., Stage]) -> None:
    result = run(stage("failed"))
    assert result.status is StageStatus.FAILED and result.exit_code == 2
    assert result.error == ("ansible-playbook failed: task 'Check free space' failed on host "
                            "'localhost': disk /data is 99% full")
    assert "TASK lines" in result.hint
    assert result.output_tail[-1].startswith("RECAP localhost")


def test_unreachable_failure_hint(stage: Callable[..., Stage]) -> None:
    result = run(stage("unreachable"))
    assert "was unreachable on host 'ghost'" in result.error
    assert "ansible_connection" in result.hint


def test_interrupt_and_timeout_and_start_error(stage: Callable[..., Stage]) -> None:
    interrupted = run(stage("apply_ok", interrupted=True))
    assert interrupted.status is StageStatus.INTERRUPTED and interrupted.interrupted
    timed_out = run(stage("apply_ok", timed_out=True))
    assert timed_out.status is StageStatus.FAILED and "timed out" in timed_out.error
    broken = run(stage("apply_ok", start_error="ansible-playbook: not found on PATH"))
    assert broken.error == "could not start ansible-playbook: ansible-playbook: not found on PATH"


def test_missing_ansible_playbook_is_a_clear_failure(stage: Callable[..., Stage],
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = str(tmp_path / "no-python-here")
    monkeypatch.setattr(process, "python_script_dirs", lambda: (nowhere,))
    monkeypatch.setattr(ansible, "python_script_dirs", lambda: (nowhere,))
    s = stage("apply_ok", path=str(tmp_path / "empty"))
    result = run(s)
    assert result.status is StageStatus.FAILED
    assert result.error == "ansible-playbook was not found"
    assert f"looked in {nowhere} and along PATH" in result.hint
    assert "pip install iacorch" in result.hint
    assert s.runner.calls == []


def test_ansible_playbook_next_to_the_interpreter_comes_first(
        stage: Callable[..., Stage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv's ansible-playbook is found without activating the venv (.venv/bin/iacorch)."""
    venv_bin = tmp_path / "venv-bin"
    venv_bin.mkdir()
    (venv_bin / "ansible-playbook").write_text("#!/bin/sh\nexit 0\n")
    (venv_bin / "ansible-playbook").chmod(0o755)
    monkeypatch.setattr(process, "python_script_dirs", lambda: (str(venv_bin),))
    s = stage("apply_ok", path="/usr/bin:/bin")
    assert run(s).status is StageStatus.SUCCEEDED
    (call,) = s.runner.calls
    assert call["env"]["PATH"] == f"{venv_bin}:/usr/bin:/bin"
    assert AnsibleDriver().required_tools({}) == [str(venv_bin / "ansible-playbook")]


def test_invalid_action_and_missing_playbook(stage: Callable[..., Stage]) -> None:
    bad = run(stage("apply_ok", action={"playbook": "playbooks/site.yml", "forks": 0,
                                        "colour": "blue"}))
    assert bad.status is StageStatus.FAILED and "invalid ansible action" in bad.error
    assert "forks" in bad.error and "colour" in bad.error
    missing = run(stage("apply_ok", action={"playbook": "playbooks/nope.yml"}))
    assert "playbook playbooks/nope.yml not found" in missing.error


def test_destroy_is_skipped_with_a_hint(stage: Callable[..., Stage]) -> None:
    s = stage("apply_ok", Operation.DESTROY)
    result = run(s)
    assert result.status is StageStatus.SKIPPED and result.hint == DESTROY_HINT
    assert s.runner.calls == []


def test_required_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(process, "python_script_dirs", lambda: (str(tmp_path),))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert AnsibleDriver().required_tools({"playbook": "{{ vars.pb }}"}) == ["ansible-playbook"]


def test_vault_password_goes_to_a_private_file_and_is_masked(stage: Callable[..., Stage],
                                                             tmp_path: Path) -> None:
    s = stage("apply_ok", action={"playbook": "playbooks/site.yml",
                                  "vault_password": "vault-pw-123"})
    run(s)
    argv = s.runner.calls[0]["argv"]
    vault_file = Path(argv[argv.index("--vault-password-file") + 1])
    assert tmp_path not in vault_file.parents and not vault_file.exists()
    assert s.ctx.masker.mask("vault-pw-123") == "***"


def test_event_reader_recovers_events_whose_markers_were_lost(stage: Callable[..., Stage],
                                                              tmp_path: Path) -> None:
    s = stage("apply_ok")
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    (scratch / "job_events").mkdir(parents=True)
    for uuid, partial in recording("apply_ok")["partials"].items():
        (scratch / "job_events" / f"{uuid}-partial.json").write_text(json.dumps(partial))
    reader = EventReader(s.ctx, scratch, artifacts)
    reader.feed("plain text, no markers")
    reader.close()
    assert reader.record.set_stats() == {"motd": "/scratch/motd", "replicas": 2}
    assert not list((scratch / "job_events").iterdir())
    assert len(list((artifacts / "job_events").iterdir())) == 15
    assert s.lines[0] == "plain text, no markers"


def marker(data: dict[str, Any]) -> str:
    token = base64.b64encode(json.dumps(data).encode()).decode()
    return f"\x1b[K{token}\x1b[{len(token)}D\x1b[K"


def test_a_secret_cut_by_truncation_is_still_masked(stage: Callable[..., Stage],
                                                    tmp_path: Path) -> None:
    s = stage("apply_ok")
    secret = "correct-horse-battery-staple"
    s.ctx.masker.add([secret])
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    (scratch / "job_events").mkdir(parents=True)
    failed = {"event": "runner_on_failed", "uuid": "u-1", "event_data": {
        "host": "web-1", "task": "Connect", "res": {"msg": "x" * 490 + secret}}}
    (scratch / "job_events" / "u-1-partial.json").write_text(json.dumps(failed))
    reader = EventReader(s.ctx, scratch, artifacts)
    reader.feed(marker({"uuid": "u-1"}) + "fatal: [web-1]: FAILED!")
    reader.feed(marker({}))
    reader.close()
    (outcome,) = reader.record.failures
    assert outcome.message == "x" * 490 + "***"
    assert not [line for line in s.lines if "correct-h" in line]
    assert not [p for p in artifacts.rglob("*") if p.is_file() and "correct-h" in p.read_text()]


def test_errors_printed_before_the_callback_loads_make_the_message(
        stage: Callable[..., Stage], tmp_path: Path) -> None:
    s = stage("apply_ok")
    reader = EventReader(s.ctx, tmp_path / "scratch", tmp_path / "artifacts")
    for line in ["ERROR! couldn't resolve module/action 'no.such.module'.",
                 "The error appears to be in '/rb/site.yml': line 3, column 7, but may",
                 "be elsewhere in the file depending on the exact syntax problem."]:
        reader.feed(line)
    reader.close()
    assert reader.record.errors == ["ERROR! couldn't resolve module/action 'no.such.module'.",
                                    "The error appears to be in '/rb/site.yml': line 3, column 7"]


def test_masked_json_masks_secrets_that_json_would_escape() -> None:
    secret = 'pa"ss\\wörd'
    text = masked_json(Masker([secret]), {"password": secret, secret: 1})
    assert "pa" not in text.replace("password", "")
    assert json.loads(text) == {"password": "***", "***": 1}


def test_scratch_dirs_of_dead_processes_are_swept(tmp_path):
    import os

    from iacorch.drivers.ansible import _sweep_orphans

    dead = tmp_path / "iacorch-ansible-999999999-x1"      # no such pid
    alive = tmp_path / f"iacorch-ansible-{os.getpid()}-x2"
    other = tmp_path / "unrelated-dir"
    for path in (dead, alive, other):
        path.mkdir()
    _sweep_orphans(tmp_path)
    assert not dead.exists() and alive.exists() and other.exists()


# -- dry runs: diffs shown, every task held in check mode -------------------------------------

def test_a_dry_run_shows_each_diff_under_its_task_line(stage: Callable[..., Stage]) -> None:
    s = stage("check_diff", Operation.PLAN)
    run(s)
    task = s.lines.index("TASK Write the motd | localhost | changed")
    assert s.lines[task + 1:task + 6] == [
        "    --- before: /scratch/motd", "    +++ after: /scratch/motd", "    @@ -1 +1 @@",
        "    -hello old", "    +hello ***"]
    assert s.lines[task + 6] == "TASK Never on this host | localhost | skipped"
    result = next(p for p in s.progress if p.get("kind") == "result" and p["status"] == "changed")
    assert result["diff"].endswith("-hello old\n+hello ***\n"), "--json events carry it too"


def test_loop_items_show_their_diffs(stage: Callable[..., Stage]) -> None:
    s = stage("check_mode_false", Operation.DRIFT)
    result = run(s)
    banners = next(c for c in result.details["changed"] if c["task"] == "Write the banners")
    assert banners["diff"] == (
        "item one:\n--- before\n+++ after: /scratch/motd.one\n@@ -0,0 +1 @@\n+one ***\n"
        "item two:\n--- before\n+++ after: /scratch/motd.two\n@@ -0,0 +1 @@\n+two ***\n")
    task = s.lines.index("TASK Write the banners | localhost | changed")
    assert s.lines[task + 1:task + 3] == ["    item one:", "    --- before"]


def test_a_long_diff_is_cut_short_with_a_count() -> None:
    diff = "".join(f"+line {n}\n" for n in range(45))
    lines = diff_preview(diff)
    assert len(lines) == DIFF_PREVIEW_LINES + 1
    assert lines[0] == "    +line 0"
    assert lines[-1] == f"    ... {45 - DIFF_PREVIEW_LINES} more lines"
    assert diff_preview("+a\n", indent="  ") == ["  +a"]


@pytest.mark.parametrize("operation", [Operation.PLAN, Operation.DRIFT])
def test_dry_runs_hold_every_task_in_check_mode(stage: Callable[..., Stage],
                                                operation: Operation) -> None:
    s = stage("check_mode_false", operation)
    result = run(s)
    env = s.runner.calls[0]["env"]
    assert env["ANSIBLE_STDOUT_CALLBACK"] == DRY_RUN_CALLBACK
    assert env["ANSIBLE_CALLBACK_PLUGINS"].split(os.pathsep)[0] == str(CALLBACK_DIR)
    assert (CALLBACK_DIR / f"{DRY_RUN_CALLBACK}.py").is_file()
    assert result.details["not_checkable"] == [
        {"host": "localhost", "task": "Write the motd", "check_mode": "False"},
        {"host": "localhost", "task": "Run a script", "check_mode": "False"}]
    assert ("TASK Run a script | localhost | not checkable: it asks for check_mode False; "
            "it ran in check mode") in s.lines
    assert "TASK Run a script | localhost | skipped" in s.lines


def test_apply_runs_the_playbook_with_runner_callback(stage: Callable[..., Stage]) -> None:
    s = stage("apply_ok")
    run(s)
    assert s.runner.calls[0]["env"]["ANSIBLE_STDOUT_CALLBACK"] == "awx_display"


@pytest.fixture
def dry_run_callback(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The callback plugin loaded as Ansible loads it, over a stand-in for awx_display."""
    import importlib.util
    from contextlib import contextmanager

    from ansible.plugins import loader

    class AwxDisplay:
        def __init__(self) -> None:
            self.events: list[tuple[str, dict[str, Any]]] = []
            self.started: list[str] = []
            self._display = type("Display", (), {"display": lambda self, text: None})()

        @contextmanager
        def capture_event_data(self, event: str, **data: Any) -> Any:
            self.events.append((event, data))
            yield

        def v2_runner_on_start(self, host: Any, task: Any) -> None:
            self.started.append(host.get_name())

    monkeypatch.setattr(loader.callback_loader, "get", lambda name, class_only: AwxDisplay)
    spec = importlib.util.spec_from_file_location(
        DRY_RUN_CALLBACK, CALLBACK_DIR / f"{DRY_RUN_CALLBACK}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CallbackModule()


@dataclass
class FakeTask:
    check_mode: Any
    _uuid: str = "t-1"

    def get_name(self) -> str:
        return "Run a script"


@dataclass
class FakeHost:
    name: str

    def get_name(self) -> str:
        return self.name


def test_the_callback_forces_check_mode_and_reports_each_host(dry_run_callback: Any) -> None:
    task = FakeTask(check_mode=False)
    dry_run_callback.v2_runner_on_start(FakeHost("web-1"), task)
    dry_run_callback.v2_runner_on_start(FakeHost("web-2"), task)
    assert task.check_mode is True
    assert [(e, d["host"], d["check_mode"]) for e, d in dry_run_callback.events] == [
        (NOT_CHECKABLE, "web-1", "False"), (NOT_CHECKABLE, "web-2", "False")]
    assert dry_run_callback.started == ["web-1", "web-2"]
    checked = FakeTask(check_mode=True, _uuid="t-2")
    dry_run_callback.v2_runner_on_start(FakeHost("web-1"), checked)
    assert len(dry_run_callback.events) == 2, "a task in check mode is not reported"


def test_the_callback_stops_the_playbook_when_it_cannot_hold_a_task(
        dry_run_callback: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    class Stubborn(FakeTask):
        def __setattr__(self, name: str, value: Any) -> None:
            if name == "check_mode" and hasattr(self, "check_mode"):
                raise AttributeError("read-only")
            super().__setattr__(name, value)

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        dry_run_callback.v2_runner_on_start(FakeHost("web-1"), Stubborn(check_mode=False))
    assert exits == [250] and dry_run_callback.started == []
    assert "could not hold task 'Run a script' in check mode" in capsys.readouterr().err
