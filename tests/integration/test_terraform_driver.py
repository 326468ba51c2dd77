"""The Terraform driver against the real terraform binary and a provider-free stack.

Skipped when terraform is not on PATH, unless IACORCH_REQUIRE_TOOLS=1 (CI), where a
missing binary fails instead, so a missing install step cannot hide behind a green run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iacorch.drivers.base import StageContext
from iacorch.drivers.terraform import TerraformDriver
from iacorch.drivers.terraform_output import STALE_APPROVED_PLAN
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessRunner

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "terraform" / "basic"
SECRET = "hunter2-integration-pw"


@pytest.fixture(scope="module")
def terraform(require_tool) -> str:
    return require_tool("terraform")


@pytest.fixture(scope="module")
def runner() -> Iterator[ProcessRunner]:
    process = ProcessRunner(sigint_grace=10.0, sigterm_grace=5.0)
    yield process
    process.close()


@dataclass
class Stage:
    """One hand-built stage context and what it printed."""

    ctx: StageContext
    lines: list[str] = field(default_factory=list)
    events: list[Mapping[str, Any]] = field(default_factory=list)

    def run(self, operation: Operation) -> StageResult:
        driver = TerraformDriver()
        call = {Operation.PLAN: driver.plan, Operation.APPLY: driver.apply,
                Operation.DESTROY: driver.destroy, Operation.DRIFT: driver.drift}[operation]
        return call(self.ctx)


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    target = tmp_path / "runbook" / "stacks" / "basic"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture
def make(tmp_path: Path, stack: Path, runner: ProcessRunner,
         terraform: str) -> Callable[..., Stage]:
    counter = iter(range(1000))

    def build(operation: Operation = Operation.APPLY, *, stage_id: str = "basic",
              workspace: str = "test", saved_plan: str | None = None,
              masker: Masker | None = None, **variables: Any) -> Stage:
        run_id = f"run{next(counter)}"
        spec = StageSpec(
            run_id=run_id, stage_id=stage_id, driver="terraform", operation=operation,
            action={"dir": "stacks/basic", "workspace": workspace,
                    "vars": {"name": "alpha", "out_file": str(tmp_path / f"{workspace}.txt"),
                             "password": SECRET, **variables}},
            root_dir=str(stack.parent.parent),
            work_dir=str(tmp_path / ".iacorch" / "runs" / run_id / stage_id),
            state_dir=str(tmp_path / ".iacorch"), saved_plan=saved_plan, timeout=120,
            secret_values=(SECRET,))
        stage = Stage(StageContext(spec=spec, process=runner,
                                   masker=masker or Masker([SECRET]), cancel=CancelToken()))
        stage.ctx.on_line = stage.lines.append
        stage.ctx.on_progress = stage.events.append
        return stage

    return build


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_apply_reapply_drift_and_destroy(make: Callable[..., Stage], tmp_path: Path) -> None:
    first = make()
    result = first.run(Operation.APPLY)
    assert result.status is StageStatus.SUCCEEDED, (result.error, result.output_tail)
    assert result.outputs["name"] == "alpha" and result.outputs["file_present"] is True
    assert (tmp_path / "test.txt").read_text().strip() == "alpha"
    assert result.sensitive_outputs == {"token", "password_echo"}
    assert result.changes is not None and result.changes.add == 3
    assert result.details["stack_existed"] is False
    assert len(result.details["saved_plan_sha256"]) == 64
    token = result.outputs["token"]
    assert token.startswith("tok-") and token in first.ctx.masker.secrets
    assert "terraform_data.writer: Provisioning with 'local-exec'..." in first.lines
    assert any(e.get("kind") == "resource" and e.get("status") == "complete"
               for e in first.events)
    for line in first.lines:
        assert token not in line and SECRET not in line
    work = tmp_path / ".iacorch"
    for path in files_under(work):
        content = path.read_bytes()
        assert token.encode() not in content and SECRET.encode() not in content, path

    again = make().run(Operation.APPLY)
    assert again.ok and again.changes is not None and not again.changes.has_changes
    assert again.details["stack_existed"] is True

    in_sync = make(Operation.DRIFT).run(Operation.DRIFT)
    assert in_sync.status is StageStatus.SUCCEEDED and in_sync.drifted is False

    config = make(Operation.DRIFT, name="beta").run(Operation.DRIFT)
    assert config.drifted is True
    assert {"address": "terraform_data.a", "action": "update", "source": "config"} \
        in config.details["findings"]

    (tmp_path / "test.txt").unlink()
    reality = make(Operation.DRIFT).run(Operation.DRIFT)
    assert reality.drifted is True
    assert reality.details["findings"] == [
        {"address": "output.file_present", "action": "update", "source": "refresh"}]

    gone = make(Operation.DESTROY).run(Operation.DESTROY)
    assert gone.ok and gone.changes is not None and gone.changes.destroy == 3


def test_approved_plan_is_applied_or_refused_when_stale(make: Callable[..., Stage]) -> None:
    planned = make(Operation.PLAN).run(Operation.PLAN)
    assert planned.ok and planned.saved_plan and planned.changes and planned.changes.add == 3
    saved = Path(planned.saved_plan)
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    applied = make(saved_plan=planned.saved_plan).run(Operation.APPLY)
    assert applied.ok, applied.error
    assert applied.details["saved_plan_sha256"] == planned.details["saved_plan_sha256"]
    assert not saved.exists()

    stale = make(Operation.PLAN, name="beta").run(Operation.PLAN)
    assert stale.ok and stale.saved_plan
    assert make(name="gamma").run(Operation.APPLY).ok     # the state moves on
    refused = make(saved_plan=stale.saved_plan).run(Operation.APPLY)
    assert refused.status is StageStatus.FAILED
    assert refused.error == f"stage basic: {STALE_APPROVED_PLAN}"


def test_interrupt_during_local_exec_releases_the_lock(
        make: Callable[..., Stage], stack: Path, terraform: str, tmp_path: Path) -> None:
    slow = make(sleep_seconds=30)
    provisioning = threading.Event()
    lines = slow.lines

    def on_line(line: str) -> None:
        lines.append(line)
        if "Provisioning with 'local-exec'" in line:
            provisioning.set()

    slow.ctx.on_line = on_line
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(slow.run, Operation.APPLY)
        assert provisioning.wait(30), lines
        started = time.monotonic()
        slow.ctx.cancel.interrupt()
        result = future.result(timeout=30)
    assert time.monotonic() - started < 10
    assert result.status is StageStatus.INTERRUPTED and result.interrupted

    env = {**os.environ, "TF_DATA_DIR": str(tmp_path / "check-data"), "TF_IN_AUTOMATION": "1"}
    for argv in ([terraform, "init", "-input=false"],
                 [terraform, "workspace", "select", "test"],
                 [terraform, "plan", "-lock=true", "-lock-timeout=0s", "-input=false",
                  f"-var=out_file={tmp_path / 'test.txt'}"]):
        done = subprocess.run(argv, cwd=stack, env=env, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_held_lock_is_reported_with_force_unlock(make: Callable[..., Stage]) -> None:
    holder = make(sleep_seconds=20)
    provisioning = threading.Event()
    holder.ctx.on_line = lambda line: provisioning.set() if "local-exec" in line else None
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(holder.run, Operation.APPLY)
        assert provisioning.wait(30)
        blocked = make(name="other").run(Operation.APPLY)
        holder.ctx.cancel.interrupt()
        future.result(timeout=30)
    assert blocked.status is StageStatus.FAILED
    assert (blocked.error or "").startswith(
        "stage basic: the Terraform state is locked by another operation")
    assert "terraform force-unlock " in (blocked.hint or "")
    assert "<LOCK ID>" not in (blocked.hint or "")


def test_two_workspaces_of_one_stack_in_parallel(make: Callable[..., Stage],
                                                 stack: Path) -> None:
    stages = [make(stage_id=f"basic[{ws}]", workspace=ws, name=ws) for ws in ("eu", "us")]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: s.run(Operation.APPLY), stages))
    assert [r.status for r in results] == [StageStatus.SUCCEEDED] * 2, [r.error for r in results]
    assert [r.outputs["name"] for r in results] == ["eu", "us"]
    assert {p.name for p in (stack / "terraform.tfstate.d").iterdir()} == {"eu", "us"}


def test_broken_config_fails_init_with_the_stage_named(make: Callable[..., Stage],
                                                       stack: Path) -> None:
    (stack / "broken.tf").write_text('resource "terraform_data" "x" {\n  input = \n}\n')
    result = make().run(Operation.APPLY)
    assert result.status is StageStatus.FAILED
    assert (result.error or "").startswith("stage basic: terraform init failed")
    assert "Invalid expression" in (result.error or "") + " ".join(result.output_tail)
