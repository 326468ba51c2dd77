"""Trigger events become var values; their fields are data, never template code."""

from __future__ import annotations

import pytest

from iacorch.engine.triggered import TriggerEvent, event_vars
from iacorch.errors import UsageError
from iacorch.model.runbook import Trigger


def hook(**vars: object) -> Trigger:
    return Trigger.model_validate({"name": "on-push", "vars": vars,
                                   "webhook": {"secret": {"env": "HOOK_SECRET"}}})


def event(**data: object) -> TriggerEvent:
    return TriggerEvent(runbook="plans/web.yaml", trigger="on-push", delivery_id="d-1",
                        data=data)


def test_vars_take_event_fields() -> None:
    got = event_vars(hook(ref="{{ event.ref }}", sha="{{ event.head.sha[:7] }}", env="prod"),
                     event(ref="refs/heads/main", head={"sha": "0123456789"}))
    assert got == {"ref": "refs/heads/main", "sha": "0123456", "env": "prod"}


def test_template_code_inside_an_event_is_text() -> None:
    payload = "{{ ''.__class__.__mro__ }}{% for x in range(9) %}x{% endfor %}"
    got = event_vars(hook(ref="{{ event.ref }}"), event(ref=payload))
    assert got == {"ref": payload}


def test_a_missing_event_field_names_the_trigger() -> None:
    with pytest.raises(UsageError, match="trigger `on-push`"):
        event_vars(hook(ref="{{ event.nope.deeper }}"), event(ref="x"))


def test_deliveries_are_counted_per_runbook_and_trigger() -> None:
    assert event().source == "plans/web.yaml#on-push"


def test_a_delivery_starts_one_run_however_often_it_arrives(tmp_path, monkeypatch) -> None:
    from iacorch.engine.runtime import Runtime
    from iacorch.engine.triggered import start_from_event
    from iacorch.model.status import RunStatus
    from iacorch.store.memory import MemoryStore

    from .test_executor_seam import RecordingExecutor

    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    monkeypatch.setenv("HOOK_SECRET", "s")
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "web.yaml").write_text(
        "version: 1\nname: web\nvars: {ref: {required: true}}\n"
        "triggers:\n  - {name: on-push, webhook: {secret: {env: HOOK_SECRET}},"
        " vars: {ref: '{{ event.ref }}'}}\n"
        "stages:\n  build: {kind: deploy, shell: {run: 'echo {{ vars.ref }}'}}\n")
    runtime = Runtime(store=MemoryStore(), state_dir=tmp_path / ".iacorch",
                      executor=RecordingExecutor(), identity="webhook:on-push")
    pushed = event(ref="main")
    first = start_from_event(pushed, runtime, root=tmp_path)
    assert not first.duplicate and first.outcome is not None
    assert first.outcome.status is RunStatus.SUCCEEDED
    again = start_from_event(pushed, runtime, root=tmp_path)
    assert again.duplicate and again.run_id == first.run_id and again.outcome is None
    assert [run.id for run in runtime.store.list_runs()] == [first.run_id]
    assert runtime.store.get_run(first.run_id).vars == {"ref": "main"}
    for outside in ("../web.yaml", "/etc/passwd", "plans/missing.yaml", "plans"):
        with pytest.raises(UsageError):
            start_from_event(TriggerEvent(outside, "on-push", "d-2"), runtime, root=tmp_path)
    with pytest.raises(UsageError, match="no trigger `nope`"):
        start_from_event(TriggerEvent("plans/web.yaml", "nope", "d-3"), runtime, root=tmp_path)


def test_a_triggered_run_tells_the_runbook_channels_how_it_ended(tmp_path, monkeypatch) -> None:
    import json

    from iacorch.engine.runtime import Runtime
    from iacorch.engine.triggered import start_from_event
    from iacorch.store.memory import MemoryStore

    from .test_executor_seam import RecordingExecutor

    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    monkeypatch.setenv("HOOK_SECRET", "s")
    told = tmp_path / "told.json"
    (tmp_path / "web.yaml").write_text(
        "version: 1\nname: web\n"
        "triggers:\n  - {name: on-push, webhook: {secret: {env: HOOK_SECRET}}}\n"
        f"notify:\n  file: {{command: [sh, -c, 'cat > {told}'], on: [succeeded]}}\n"
        "stages:\n  build: {kind: deploy, shell: {run: 'true'}}\n")
    runtime = Runtime(store=MemoryStore(), state_dir=tmp_path / ".iacorch",
                      executor=RecordingExecutor(), identity="webhook:on-push")
    started = start_from_event(TriggerEvent("web.yaml", "on-push", "d-1"), runtime,
                               root=tmp_path)
    payload = json.loads(told.read_text())
    assert payload["event"] == "succeeded" and payload["run"] == started.run_id
