"""The Ansible driver against real ansible-playbook over the local connection.

Skipped when ansible-playbook is not on PATH, unless IACORCH_REQUIRE_TOOLS=1 (CI),
where a missing binary fails instead, so a missing install step cannot hide
behind a green run.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iacorch.drivers.ansible import AnsibleDriver
from iacorch.drivers.base import StageContext
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessRunner

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures" / "ansible"
SECRET = "tok-3b7f9e-integration"
ENV_SECRET = "env-5c1d-integration"
# What a Terraform stage would output for the hosts it made.
TERRAFORM_HOSTS = {"web": [{"name": "web-1", "ip": "127.0.0.1", "role": "frontend"}]}


@pytest.fixture(scope="module")
def ansible_playbook(require_tool) -> str:
    return require_tool("ansible-playbook")


@pytest.fixture(scope="module")
def runner() -> Iterator[ProcessRunner]:
    process = ProcessRunner(sigint_grace=5.0, sigterm_grace=3.0)
    yield process
    process.close()


@dataclass
class Stage:
    """One hand-built stage context and what it printed."""

    ctx: StageContext
    lines: list[str] = field(default_factory=list)
    progress: list[Mapping[str, Any]] = field(default_factory=list)

    def run(self) -> StageResult:
        driver = AnsibleDriver()
        return {Operation.PLAN: driver.plan, Operation.APPLY: driver.apply,
                Operation.DESTROY: driver.destroy,
                Operation.DRIFT: driver.drift}[self.ctx.spec.operation](self.ctx)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    target.mkdir()
    return target


@pytest.fixture
def make(tmp_path: Path, site: Path, runner: ProcessRunner,
         ansible_playbook: str) -> Callable[..., Stage]:
    root = tmp_path / "runbook"
    shutil.copytree(FIXTURES, root / "playbooks")
    attempts = iter(range(1, 1000))

    def build(operation: Operation = Operation.APPLY, *, playbook: str = "site.yml",
              timeout: float | None = None, **action: Any) -> Stage:
        spec = StageSpec(
            run_id="run-1", stage_id="configure", driver="ansible",
            operation=operation, attempt=next(attempts),
            action={"playbook": f"playbooks/{playbook}", "inventory": TERRAFORM_HOSTS,
                    "extra_vars": {"greeting": "hello", "target_dir": str(site),
                                   "api_token": SECRET},
                    **action},
            root_dir=str(root), work_dir=str(tmp_path / "work"),
            state_dir=str(tmp_path / "state"), timeout=timeout,
            secret_values=(SECRET, ENV_SECRET), secret_env={"API_KEY": ENV_SECRET})
        stage = Stage(StageContext(spec=spec, process=runner, masker=Masker(spec.secret_values),
                                   cancel=CancelToken()))
        stage.ctx.on_line = stage.lines.append
        stage.ctx.on_progress = stage.progress.append
        return stage

    return build


def files_holding(text: str, root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_apply_configures_hosts_from_terraform_outputs_and_is_idempotent(
        make: Callable[..., Stage], site: Path) -> None:
    first = make()
    result = first.run()
    assert result.status is StageStatus.SUCCEEDED, result.error
    assert (site / "greeting-web-1.txt").read_text() == "hello from web-1 (frontend)\n"
    assert (site / "token-web-1.txt").read_text() == SECRET + "\n"
    assert result.outputs["greeting_file"] == str(site / "greeting-web-1.txt")
    assert result.outputs["pages"] == 1
    assert result.outputs["hosts"] == {"web-1": {"ok": 3, "changed": 2, "failures": 0,
                                                 "unreachable": 0, "skipped": 0,
                                                 "rescued": 0, "ignored": 0}}
    assert "TASK Write the greeting | web-1 | changed" in first.lines
    assert {"stage": "configure", "kind": "result", "task": "Publish what was written",
            "host": "web-1", "status": "ok", "action": "ansible.builtin.set_stats"} \
        in first.progress

    again = make().run()
    assert again.status is StageStatus.SUCCEEDED
    assert again.outputs["hosts"]["web-1"]["changed"] == 0
    assert again.details["changed"] == []


def test_secrets_reach_no_file_under_work_dir_and_no_log_line(
        make: Callable[..., Stage], tmp_path: Path) -> None:
    careful = make()
    assert careful.run().ok
    careless = make(playbook="leaky.yml")
    result = careless.run()
    assert result.ok, result.error
    assert "TASK Print the token | web-1 | ok" in careless.lines
    work = tmp_path / "work"
    assert len(list(work.rglob("*.json"))) > 10, "job events were kept as artifacts"
    for secret in (SECRET, ENV_SECRET):
        assert files_holding(secret, work) == []
        assert [line for line in careful.lines + careless.lines if secret in line] == []
        for scratch in Path(tempfile_root()).glob("iacorch-ansible-*"):
            assert files_holding(secret, scratch) == []
    leaked_event = [p for p in work.rglob("*.json") if b"the token is ***" in p.read_bytes()]
    assert leaked_event, "the careless debug message was masked, not dropped"


def tempfile_root() -> str:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.environ.get("TMPDIR", "/tmp")


def test_drift_and_plan_use_check_mode_with_diff(make: Callable[..., Stage],
                                                 site: Path) -> None:
    assert make().run().ok
    in_sync = make(Operation.DRIFT).run()
    assert in_sync.status is StageStatus.SUCCEEDED and in_sync.drifted is False

    greeting = site / "greeting-web-1.txt"
    greeting.write_text("edited by hand\n")
    drift = make(Operation.DRIFT).run()
    assert drift.drifted is True
    (change,) = drift.details["changed"]
    assert (change["host"], change["task"]) == ("web-1", "Write the greeting")
    assert "-edited by hand\n+hello from web-1 (frontend)\n" in change["diff"]
    assert greeting.read_text() == "edited by hand\n", "check mode changed nothing"

    plan = make(Operation.PLAN).run()
    assert plan.status is StageStatus.SUCCEEDED
    assert plan.changes is not None and plan.changes.change == 1
    assert plan.changes.resources[0].address == "web-1: Write the greeting"


@pytest.mark.parametrize(("operation", "action"), [
    (Operation.DRIFT, {}), (Operation.PLAN, {}), (Operation.APPLY, {"check": True})])
def test_dry_runs_hold_check_mode_false_tasks_in_check_mode(
        make: Callable[..., Stage], site: Path, operation: Operation,
        action: dict[str, Any]) -> None:
    stage = make(operation, playbook="insistent.yml", **action)
    result = stage.run()
    assert result.status is StageStatus.SUCCEEDED, result.error
    assert sorted(p.name for p in site.iterdir()) == [], "the dry run changed nothing"
    assert result.details["not_checkable"] == [
        {"host": "web-1", "task": name, "check_mode": asked} for name, asked in (
            ("Run the migration", "False"), ("Write the marker", "False"),
            ("Write the version", "{{ insist | default(false) }}"))]
    assert ("TASK Run the migration | web-1 | not checkable: it asks for check_mode False; "
            "it ran in check mode") in stage.lines
    assert "TASK Run the migration | web-1 | skipped" in stage.lines
    marker = next(c for c in result.details["changed"] if c["task"] == "Write the marker")
    assert marker["diff"].endswith("+hello v1\n"), "a held task still shows what it would do"
    task = stage.lines.index("TASK Write the marker | web-1 | changed")
    assert stage.lines[task + 1:task + 3] == ["    --- before",
                                              f"    +++ after: {site}/marker-web-1.txt"]

    applied = make(playbook="insistent.yml").run()
    assert applied.ok and "not_checkable" not in applied.details
    assert sorted(p.name for p in site.iterdir()) == [
        "marker-web-1.txt", "migrated-web-1", "version-web-1.txt"]


def test_failing_task_names_host_task_and_module_message(make: Callable[..., Stage]) -> None:
    stage = make(playbook="fail.yml")
    result = stage.run()
    assert result.status is StageStatus.FAILED and result.exit_code == 2
    assert result.error == ("ansible-playbook failed: task 'Check the disk' failed on host "
                            "'web-1': disk /data is 99% full")
    assert "TASK Check the disk | web-1 | failed | disk /data is 99% full" in stage.lines


def test_playbook_error_names_the_problem_and_where(make: Callable[..., Stage]) -> None:
    result = make(playbook="broken.yml").run()
    assert result.status is StageStatus.FAILED and result.exit_code == 4
    assert result.error is not None
    assert "couldn't resolve module/action 'ansible.builtin.no_such_module'" in result.error
    assert "broken.yml': line 6, column 7" in result.error
    assert result.hint is not None and "--syntax-check" in result.hint


def sleepers() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"37.123" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_interrupt_stops_a_long_task_promptly_with_one_sigint(
        make: Callable[..., Stage], tmp_path: Path) -> None:
    count = tmp_path / "sigints"
    stage = make(playbook="long.yml", extra_vars={"count_file": str(count)})
    timer = threading.Timer(2.0, stage.ctx.cancel.interrupt)
    timer.start()
    started = time.monotonic()
    try:
        result = stage.run()
    finally:
        timer.cancel()
    elapsed = time.monotonic() - started
    assert result.status is StageStatus.INTERRUPTED and result.interrupted
    assert elapsed < 6.0, f"took {elapsed:.1f}s to stop"
    assert result.exit_code == 99, "ansible-playbook handled the SIGINT itself"
    assert count.read_text() == "INT\n", "the task's shell got exactly one SIGINT"
    assert sleepers() == [], "the task's child process did not outlive the play"


def test_timeout_sends_sigint_first_and_stops_the_play(make: Callable[..., Stage],
                                                      tmp_path: Path) -> None:
    started = time.monotonic()
    count = tmp_path / "sigints"
    result = make(playbook="long.yml", timeout=2.5, extra_vars={"count_file": str(count)}).run()
    assert result.status is StageStatus.FAILED
    assert result.error is not None and "timed out after 2.5s" in result.error
    assert time.monotonic() - started < 7.0
    assert count.read_text() == "INT\n"
    assert sleepers() == []
