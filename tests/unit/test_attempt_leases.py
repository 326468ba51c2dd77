"""The lease rules that keep a redelivered task from starting a tool twice, on a real
PostgreSQL (a fresh schema per test) with a clock moved by hand."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from iacorch.model.results import ChangeSummary, ResourceChange, StageResult
from iacorch.model.status import StageStatus
from iacorch.store.pg_leases import AttemptLeases, Verdict
from iacorch.store.postgres import PostgresStore
from iacorch.workers.results import LOST, result_from_text, result_to_text
from tests.conftest import Clock

SEAL_KEY = "q0FyKmB6Yl9c2yWm5Jx0yq0m8A9pZ0aQk0d2Jm1bQ3Y="


@pytest.fixture
def leases(postgres_url: str, clock: Clock) -> Iterator[AttemptLeases]:
    store = PostgresStore(postgres_url, clock=clock)
    yield AttemptLeases(store, LOST, "cancelled")
    store.close()


def enqueue(leases: AttemptLeases, attempt: str = "a1", *, rerunnable: bool = False) -> None:
    leases.enqueue(attempt, run_id="r1", stage_id="s", pool="p", rerunnable=rerunnable,
                   lease_seconds=10)


def test_one_copy_runs_and_a_second_waits_while_the_lease_lives(
        leases: AttemptLeases, clock: Clock) -> None:
    enqueue(leases)
    first = leases.claim("a1", "w1")
    assert (first.verdict, first.token) == (Verdict.RUN, 1)
    clock.now += 9
    assert leases.heartbeat("a1", 1).held
    clock.now += 9  # 18 s after the start, 9 s after the heartbeat: still live
    assert leases.claim("a1", "w2").verdict is Verdict.WAIT
    assert leases.finish("a1", 1, result_to_text(StageResult(StageStatus.SUCCEEDED)))
    assert leases.claim("a1", "w2").verdict is Verdict.DONE
    collected = leases.collect("a1")
    assert collected is not None and result_from_text(collected[0]).ok
    assert collected[1] is False                       # nobody asked it to stop
    assert leases.collect("a1") is None  # read once, then cleared


def test_an_expired_lease_of_an_apply_resolves_interrupted_and_fences_the_old_holder(
        leases: AttemptLeases, clock: Clock) -> None:
    enqueue(leases)
    assert leases.claim("a1", "w1").verdict is Verdict.RUN
    clock.now += 11
    assert leases.claim("a1", "w2").verdict is Verdict.DONE   # never a second start
    late = result_to_text(StageResult(StageStatus.SUCCEEDED))
    assert not leases.finish("a1", 1, late)                    # the stale holder is fenced
    assert not leases.heartbeat("a1", 1).held
    collected = leases.collect("a1")
    assert collected is not None
    result = result_from_text(collected[0])
    assert result.status is StageStatus.INTERRUPTED and "lease" in (result.error or "")


def test_an_expired_lease_of_a_plan_is_taken_over_with_a_new_token(
        leases: AttemptLeases, clock: Clock) -> None:
    enqueue(leases, rerunnable=True)
    leases.claim("a1", "w1")
    clock.now += 11
    taken = leases.claim("a1", "w2")
    assert (taken.verdict, taken.token) == (Verdict.RUN, 2)
    assert not leases.finish("a1", 1, result_to_text(StageResult(StageStatus.FAILED)))
    assert leases.finish("a1", 2, result_to_text(StageResult(StageStatus.SUCCEEDED)))


def test_the_reaper_requeues_plans_and_resolves_the_rest(
        leases: AttemptLeases, clock: Clock) -> None:
    enqueue(leases, "apply")
    enqueue(leases, "plan", rerunnable=True)
    leases.claim("apply", "w1")
    leases.claim("plan", "w1")
    clock.now += 5
    assert leases.reap(requeue=True) == []
    clock.now += 6
    assert leases.reap(requeue=False) == []     # a worker's sweep leaves plans to their waiter
    assert leases.collect("apply") is not None
    assert leases.reap("plan", requeue=True) == ["plan"]
    assert leases.claim("plan", "w2").token == 2


def test_cancelling_a_queued_attempt_resolves_it_and_a_running_one_is_told(
        leases: AttemptLeases) -> None:
    enqueue(leases, "queued")
    assert leases.request_cancel("queued") == 1
    assert leases.claim("queued", "w1").verdict is Verdict.DONE
    assert leases.collect("queued") == ("cancelled", True)
    enqueue(leases, "running")
    token = leases.claim("running", "w1").token
    enqueue(leases, "other-run")
    leases.store.query("UPDATE attempt_leases SET run_id = 'r2' WHERE attempt_id = 'other-run'")
    assert leases.request_cancel(run_id="r1") == 1     # the resolved one is not asked again
    assert leases.heartbeat("running", token).cancel
    assert leases.claim("other-run", "w1").verdict is Verdict.RUN


def test_racing_copies_start_the_tool_once(leases: AttemptLeases) -> None:
    enqueue(leases)
    verdicts: list[Verdict] = []
    barrier = threading.Barrier(6)

    def claim(n: int) -> None:
        barrier.wait()
        verdicts.append(leases.claim("a1", f"w{n}").verdict)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(v.value for v in verdicts) == ["run"] + ["wait"] * 5


def test_results_round_trip_and_sensitive_outputs_are_sealed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IACORCH_SEAL_KEY", SEAL_KEY)
    result = StageResult(StageStatus.SUCCEEDED, outputs={"db_password": "pa55-w0rd-x"},
                         sensitive_outputs=frozenset({"db_password"}),
                         changes=ChangeSummary(add=1, resources=(ResourceChange("a.b", "create"),),
                                               outputs=("x",)),
                         output_tail=("done",), unknown_outputs=frozenset({"y"}))
    text = result_to_text(result)
    assert "pa55-w0rd-x" not in text
    assert result_from_text(text) == result
