"""A stage attempt shipped to another process carries no secret value in clear:
secrets travel as references, what templates made of them travels sealed."""

from __future__ import annotations

import hashlib
import textwrap
from concurrent.futures import Future
from pathlib import Path

import pytest

from iacorch.engine.executor import LocalExecutor, OnStart
from iacorch.engine.run_state import RunOptions
from iacorch.engine.runs import start_run
from iacorch.engine.runtime import Runtime
from iacorch.engine.stage_requests import (
    SEAL_KEY_ENV,
    StageRequest,
    new_seal_key,
    open_request,
    to_request,
)
from iacorch.errors import UsageError
from iacorch.model.masking import Masker
from iacorch.model.results import SecretRef, StageResult, StageSpec
from iacorch.model.status import Operation, RunStatus
from iacorch.process import CancelToken, ProcessRunner
from iacorch.runbook.compiler import compile_runbook
from iacorch.store.memory import MemoryStore

CANARY = "canary-7f3a9c-pw"
LEARNT = "sensitive-output-91b2"


def spec(action: dict[str, object], **extra: object) -> StageSpec:
    fields: dict[str, object] = {
        "run_id": "r1", "stage_id": "db", "driver": "terraform", "operation": Operation.APPLY,
        "action": action, "root_dir": "/srv/project", "work_dir": "/srv/project/.iacorch/r1",
        "state_dir": "/srv/project/.iacorch", "secret_values": (CANARY,),
        "secret_env": {"IACORCH_SECRET_DB": CANARY},
        "secret_refs": (SecretRef("db", {"env": "DB_PASSWORD"}),), **extra}
    return StageSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    made = new_seal_key()
    monkeypatch.setenv(SEAL_KEY_ENV, made)
    monkeypatch.setenv("DB_PASSWORD", CANARY)
    return made


def test_a_secret_bearing_action_travels_sealed_and_comes_back_whole(key: str) -> None:
    action = {"dir": "db", "vars": {"password": CANARY, "token": f"Bearer {LEARNT}"}}
    sent = spec(action)
    wire = to_request(sent, Masker([CANARY, LEARNT])).to_json()
    for value in (CANARY, LEARNT):
        assert value not in wire
        assert hashlib.sha256(value.encode()).hexdigest() not in wire

    opened, masker = open_request(StageRequest.from_json(wire))
    assert opened == sent
    assert masker.mask(f"{CANARY} {LEARNT}") == "*** ***"


def test_an_action_without_secrets_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEAL_KEY_ENV, raising=False)
    monkeypatch.setenv("DB_PASSWORD", CANARY)
    request = to_request(spec({"run": 'echo "$IACORCH_SECRET_DB"'}, driver="shell"),
                         Masker([CANARY]))
    assert request.sealed is None and CANARY not in request.to_json()
    opened, _ = open_request(request)
    assert opened.secret_env == {"IACORCH_SECRET_DB": CANARY}


def test_the_executing_side_resolves_references_from_its_own_environment(
        key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    request = to_request(spec({"dir": "db"}), Masker([CANARY]))
    monkeypatch.setenv("DB_PASSWORD", "the-worker's-own")
    opened, _ = open_request(request)
    assert opened.secret_env == {"IACORCH_SECRET_DB": "the-worker's-own"}


def test_no_key_or_another_key_is_a_clear_error(key: str, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    request = to_request(spec({"vars": {"password": CANARY}}), Masker([CANARY]))
    with pytest.raises(UsageError, match="do not open") as opened:
        open_request(request, key=new_seal_key())
    assert CANARY not in str(opened.value)
    monkeypatch.delenv(SEAL_KEY_ENV)
    with pytest.raises(UsageError, match=f"\\${SEAL_KEY_ENV} is not set") as sealing:
        to_request(spec({"vars": {"password": CANARY}}), Masker([CANARY]))
    assert "new_seal_key" in (sealing.value.hint or "")


class ShippingExecutor:
    """Sends every attempt through JSON, as a broker would, to a LocalExecutor."""

    def __init__(self, local: LocalExecutor) -> None:
        self.local, self.wire = local, []
        self.on_start: OnStart | None = None

    def run(self, spec: StageSpec, masker: Masker) -> StageResult:
        self.wire.append(to_request(spec, masker).to_json())
        opened, worker_masker = open_request(StageRequest.from_json(self.wire[-1]))
        return self.local.run(opened, worker_masker)

    def pool(self, workers: int, on_start: OnStart | None = None) -> ShippingExecutor:
        self.on_start = on_start
        return self

    def submit(self, spec: StageSpec, masker: Masker) -> Future[StageResult]:
        if self.on_start is not None:
            self.on_start(spec)
        future: Future[StageResult] = Future()
        future.set_result(self.run(spec, masker))
        return future

    def __enter__(self) -> ShippingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_run_through_a_shipping_executor_works_and_ships_no_secret(
        key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    path = tmp_path / "shipped.yaml"
    path.write_text(textwrap.dedent(f"""
        version: 1
        name: shipped
        secrets:
          db: {{env: DB_PASSWORD}}
        stages:
          script:
            kind: configure
            shell: {{run: 'test {{{{ secrets.db }}}} = {CANARY} && echo ok > script.out'}}
          rendered:
            kind: configure
            needs: [script]
            shell:
              run: 'test "$PW" = {CANARY} && echo ok > rendered.out'
              env: {{PW: "{{{{ secrets.db }}}}"}}
        """).lstrip())
    plan = compile_runbook(path)
    cancel = CancelToken()
    runtime = Runtime(store=MemoryStore(), state_dir=tmp_path / ".iacorch", cancel=cancel)
    shipping = ShippingExecutor(LocalExecutor(ProcessRunner(), cancel, runtime.emit))
    runtime.executor = shipping
    outcome = start_run(plan, runtime, RunOptions())
    assert outcome.status is RunStatus.SUCCEEDED
    assert (tmp_path / "script.out").read_text() == "ok\n"
    assert (tmp_path / "rendered.out").read_text() == "ok\n"
    assert len(shipping.wire) == 2
    assert all(CANARY not in message for message in shipping.wire)
    assert StageRequest.from_json(shipping.wire[1]).sealed is not None
