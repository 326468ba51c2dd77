"""The Pulumi driver against the real pulumi CLI and the provider-free pulumi-site stack.

Skipped when the pulumi CLI is not on PATH. The stack writes local files through a
dynamic provider, so nothing is downloaded and no account is needed; its state
goes to iacorch's local file backend under the test's state dir.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iacorch.drivers.base import StageContext
from iacorch.drivers.pulumi import PulumiDriver
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessRunner

pytestmark = [
    pytest.mark.integration,
    pytest.mark.pulumi,
    pytest.mark.skipif(shutil.which("pulumi") is None, reason="pulumi CLI not on PATH"),
]

EXAMPLE = Path(__file__).parents[2] / "stacks" / "pulumi-site"
TOKEN = "pulumi-integration-token-42"


@dataclass
class Stage:
    ctx: StageContext
    lines: list[str] = field(default_factory=list)

    def run(self, operation: Operation) -> StageResult:
        driver = PulumiDriver()
        call = {Operation.PLAN: driver.plan, Operation.APPLY: driver.apply,
                Operation.DESTROY: driver.destroy, Operation.DRIFT: driver.drift}[operation]
        return call(self.ctx)


@pytest.fixture
def make(tmp_path: Path) -> Callable[[Operation], Stage]:
    # A copy: the driver writes Pulumi.<stack>.yaml next to the project.
    shutil.copytree(EXAMPLE, tmp_path / "stacks" / "pulumi-site",
                    ignore=shutil.ignore_patterns("Pulumi.*.yaml", "__pycache__"))
    (tmp_path / "plans").mkdir()
    runner = ProcessRunner(orphan_guard=False)

    def build(operation: Operation) -> Stage:
        spec = StageSpec(
            run_id="it", stage_id="site", driver="pulumi", operation=operation,
            action={"dir": "../stacks/pulumi-site", "stack": "dev",
                    "config": {"title": "Integration", "site_dir": str(tmp_path / "site"),
                               "admin_token": TOKEN}},
            root_dir=str(tmp_path / "plans"), work_dir=str(tmp_path / "runs" / operation),
            state_dir=str(tmp_path / ".iacorch"), timeout=600, secret_values=(TOKEN,),
            # the language host runs this interpreter, which has the pulumi package
            env={"PULUMI_PYTHON_CMD": sys.executable,
                 "PULUMI_HOME": str(tmp_path / "pulumi-home")})
        stage = Stage(ctx=None)  # type: ignore[arg-type]
        stage.ctx = StageContext(spec=spec, process=runner, masker=Masker((TOKEN,)),
                                 cancel=CancelToken(), on_line=stage.lines.append)
        return stage

    return build


def test_apply_drift_and_destroy_the_example_stack(make: Callable[[Operation], Stage],
                                                   tmp_path: Path) -> None:
    apply = make(Operation.APPLY)
    applied = apply.run(Operation.APPLY)
    assert applied.status is StageStatus.SUCCEEDED, (applied.error, applied.output_tail)
    index = Path(applied.outputs["index_path"])
    assert index == tmp_path / "site" / "index.html" and "Integration" in index.read_text()
    assert applied.changes is not None and applied.changes.add >= 3
    assert "admin_url" in applied.sensitive_outputs and TOKEN in applied.outputs["admin_url"]
    assert not any(TOKEN in line for line in apply.lines)

    in_sync = make(Operation.DRIFT).run(Operation.DRIFT)
    assert in_sync.status is StageStatus.SUCCEEDED, (in_sync.error, in_sync.output_tail)
    assert in_sync.drifted is False, in_sync.details

    index.write_text("edited by hand")
    edited = make(Operation.DRIFT).run(Operation.DRIFT)
    assert edited.drifted is True, edited.details
    assert any(f["source"] == "refresh" and f["address"].endswith("::index")
               for f in edited.details["findings"])

    destroyed = make(Operation.DESTROY).run(Operation.DESTROY)
    assert destroyed.status is StageStatus.SUCCEEDED, (destroyed.error, destroyed.output_tail)
    assert not index.exists() and not (tmp_path / "site" / "admin.html").exists()

