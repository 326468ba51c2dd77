"""Every stage attempt goes through Runtime.executor: the run loop, gate pre-plans,
undo, drift and `finally`. A recording executor stands in for the tools."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from iacorch.engine.drift import check_drift
from iacorch.engine.executor import OnStart, ThreadedPool
from iacorch.engine.run_state import RunOptions
from iacorch.engine.runs import start_run
from iacorch.engine.runtime import Runtime
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.results import ChangeSummary, StageResult, StageSpec
from iacorch.model.status import Operation, RunStatus, StageStatus
from iacorch.runbook.compiler import compile_runbook
from iacorch.store.memory import MemoryStore

Answer = Callable[[StageSpec], StageResult]


def succeed(spec: StageSpec) -> StageResult:
    changes = ChangeSummary() if spec.operation is Operation.PLAN else None
    return StageResult(StageStatus.SUCCEEDED, outputs={"seen": spec.stage_id},
                       changes=changes)


class RecordingExecutor:
    """Answers each attempt without running anything, and remembers what it was asked."""

    def __init__(self, answer: Answer = succeed) -> None:
        self.answer = answer
        self.seen: list[tuple[str, Operation, str]] = []   # (stage, operation, via)

    def run(self, spec: StageSpec, masker: Masker) -> StageResult:
        self.seen.append((spec.stage_id, spec.operation, "run"))
        return self.answer(spec)

    def pool(self, workers: int, on_start: OnStart | None = None) -> RecordingPool:
        assert workers >= 1
        return RecordingPool(self, on_start)


class RecordingPool:
    def __init__(self, executor: RecordingExecutor, on_start: OnStart | None) -> None:
        self.executor, self.on_start = executor, on_start

    def submit(self, spec: StageSpec, masker: Masker) -> Future[StageResult]:
        if self.on_start is not None:
            self.on_start(spec)
        self.executor.seen.append((spec.stage_id, spec.operation, "pool"))
        future: Future[StageResult] = Future()
        future.set_result(self.executor.answer(spec))
        return future

    def __enter__(self) -> RecordingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "main.tf").write_text("")
    return tmp_path


def runbook(root: Path, text: str) -> Path:
    path = root / "seam.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def runtime(root: Path, executor: RecordingExecutor) -> Runtime:
    return Runtime(store=MemoryStore(), state_dir=root / ".iacorch", executor=executor)


def test_the_loop_the_gate_pre_plan_and_finally_go_through_the_executor(project: Path) -> None:
    plan = compile_runbook(runbook(project, """
        version: 1
        name: seam
        stages:
          first: {kind: provision, shell: {run: "true"}}
          gate: {kind: approval, needs: [first]}
          stack: {kind: provision, needs: [gate], terraform: {dir: stack}}
        finally:
          tell: {shell: {run: "true"}}
        """))
    executor = RecordingExecutor()
    outcome = start_run(plan, runtime(project, executor), RunOptions())
    assert outcome.status is RunStatus.WAITING_APPROVAL
    assert executor.seen == [("first", Operation.APPLY, "run"),
                             ("stack", Operation.PLAN, "pool")]   # shown at the gate


def test_undo_and_finally_go_through_the_executor(project: Path) -> None:
    plan = compile_runbook(runbook(project, """
        version: 1
        name: seam
        on_failure: rollback
        stages:
          first:
            kind: provision
            shell: {run: "true"}
            rollback: {shell: {run: "true"}}
          second: {kind: deploy, needs: [first], shell: {run: "false"}}
        finally:
          tell: {shell: {run: "true"}}
        """))

    def second_fails(spec: StageSpec) -> StageResult:
        if spec.stage_id == "second":
            return StageResult.failure("exit 1")
        return succeed(spec)

    executor = RecordingExecutor(second_fails)
    outcome = start_run(plan, runtime(project, executor), RunOptions())
    assert outcome.status is RunStatus.ROLLED_BACK
    assert executor.seen == [("first", Operation.APPLY, "run"),
                             ("second", Operation.APPLY, "run"),
                             ("first", Operation.APPLY, "pool"),     # its rollback: action
                             ("tell", Operation.APPLY, "pool")]


def test_drift_goes_through_the_executor(project: Path) -> None:
    plan = compile_runbook(runbook(project, """
        version: 1
        name: seam
        stages:
          stack: {kind: provision, terraform: {dir: stack}}
        """))
    executor = RecordingExecutor()
    rt = runtime(project, executor)
    assert start_run(plan, rt, RunOptions()).status is RunStatus.SUCCEEDED
    report = check_drift(plan, rt, run_id="drift-1")
    assert [v.stage_id for v in report.stages] == ["stack"]
    assert executor.seen == [("stack", Operation.APPLY, "run"),
                             ("stack", Operation.DRIFT, "pool")]


class TimedExecutor(RecordingExecutor):
    """Drift checks take `seconds[stage]`; `ran[stage]` is when each really ran."""

    def __init__(self, seconds: dict[str, float]) -> None:
        super().__init__()
        self.seconds, self.ran = seconds, {}

    def run(self, spec: StageSpec, masker: Masker) -> StageResult:
        if spec.operation is not Operation.DRIFT:
            return super().run(spec, masker)
        began = time.time()
        time.sleep(self.seconds[spec.stage_id])
        self.ran[spec.stage_id] = (began, time.time())
        return super().run(spec, masker)

    def pool(self, workers: int, on_start: OnStart | None = None) -> Any:
        return ThreadedPool(self, workers, on_start)


def drifted(project: Path, concurrency: int,
            seconds: dict[str, float]) -> tuple[TimedExecutor, dict[str, Any]]:
    stages = "\n".join(f"  {name}: {{kind: provision, terraform: {{dir: stack}}}}"
                        for name in seconds)
    plan = compile_runbook(runbook(project, f"version: 1\nname: seam\n"
                                            f"concurrency: {concurrency}\nstages:\n{stages}\n"))
    executor = TimedExecutor(seconds)
    rt = runtime(project, executor)
    assert start_run(plan, rt, RunOptions()).status is RunStatus.SUCCEEDED
    check_drift(plan, rt, run_id="drift-1")
    return executor, dict(rt.store.stage_records("drift-1"))


def test_a_drift_check_is_recorded_as_started_when_it_begins_not_when_queued(
        project: Path) -> None:
    executor, records = drifted(project, 1, {"a": 0.05, "b": 0.05, "c": 0.05})
    # one at a time: b and c were queued from the start, but began after the one before
    assert records["b"].started_at >= executor.ran["a"][1]
    assert records["c"].started_at >= executor.ran["b"][1]


def test_a_drift_check_is_recorded_as_finished_when_it_ends_not_after_those_before_it(
        project: Path) -> None:
    executor, records = drifted(project, 2, {"slow": 0.6, "fast": 0.02})
    assert records["fast"].finished_at < executor.ran["slow"][1]


def test_a_run_tells_its_sinks_when_it_starts_and_ends(project: Path) -> None:
    plan = compile_runbook(runbook(project, """
        version: 1
        name: seam
        stages:
          only: {kind: provision, shell: {run: "true"}}
        """))
    events: list[Event] = []

    class Sink:
        def handle(self, event: Event) -> None:
            events.append(event)

    rt = runtime(project, RecordingExecutor())
    rt.sinks.append(Sink())
    outcome = start_run(plan, rt, RunOptions())
    assert events[0].kind is EventKind.RUN_STARTED and events[-1].kind is EventKind.RUN_FINISHED
    assert {e.run_id for e in events} == {outcome.run_id}
    assert events[0].data["runbook"] == "seam" and events[-1].data["status"] == "succeeded"


def test_rollback_and_destroy_tell_their_sinks_too(project: Path) -> None:
    from iacorch.engine.runs import destroy, rollback_run

    plan = compile_runbook(runbook(project, """
        version: 1
        name: seam
        stages:
          only:
            kind: provision
            shell: {run: "true"}
            rollback: {shell: {run: "true"}}
            destroy: {shell: {run: "true"}}
        """))
    events: list[Event] = []

    class Sink:
        def handle(self, event: Event) -> None:
            if event.kind in (EventKind.RUN_STARTED, EventKind.RUN_FINISHED):
                events.append(event)

    rt = runtime(project, RecordingExecutor())
    applied = start_run(plan, rt, RunOptions())
    rt.sinks.append(Sink())
    rollback_run(plan, rt.store.get_run(applied.run_id), rt)
    destroy(plan, rt, run_id="destroy-1")
    assert [(e.kind, e.run_id, e.data["operation"]) for e in events] == [
        (EventKind.RUN_STARTED, applied.run_id, "apply"),
        (EventKind.RUN_FINISHED, applied.run_id, "apply"),
        (EventKind.RUN_STARTED, "destroy-1", "destroy"),
        (EventKind.RUN_FINISHED, "destroy-1", "destroy")]
    assert events[1].data["status"] == "rolled_back" and events[3].data["status"] == "succeeded"


def test_the_store_is_not_write_locked_while_a_person_decides(project: Path) -> None:
    """A gate's prompt can last an hour: other processes (the server, another apply's
    approval) must be able to write meanwhile."""
    from iacorch.engine.gates import GateAnswer, GateRequest
    from iacorch.model.status import Choice
    from iacorch.store.sqlite import SqliteStore

    plan = compile_runbook(runbook(project, """
        version: 1
        name: seam
        stages:
          gate: {kind: approval}
          after: {kind: deploy, needs: [gate], shell: {run: "true"}}
        """))
    path = project / "state.db"
    writes: list[str] = []

    def prompt(request: GateRequest) -> GateAnswer:
        other = SqliteStore(path, busy_timeout=0.5)   # another process, as far as SQLite knows
        try:
            other.append_audit("written_while_asking")
            writes.append("ok")
        finally:
            other.close()
        return GateAnswer(Choice.APPROVE)

    rt = Runtime(store=SqliteStore(path), state_dir=project / ".iacorch",
                 executor=RecordingExecutor(), interactive=True, prompt=prompt,
                 identity="someone-else")
    outcome = start_run(plan, rt, RunOptions())
    assert writes == ["ok"]
    assert outcome.status is RunStatus.SUCCEEDED
