"""One contract for every Store: the same tests run against MemoryStore, SqliteStore and
PostgresStore (a fresh schema of a throwaway cluster per test)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iacorch.errors import RunNotFoundError, UsageError
from iacorch.model.status import RunStatus, StageStatus
from iacorch.store import open_store
from iacorch.store.audit import COVERS_STAGES, GENESIS_HASH, next_entry, stage_audit_data
from iacorch.store.base import (
    ApprovalRecord,
    DriftRecord,
    RunRecord,
    StageRecord,
    Store,
    TokenRecord,
    acquire_lock,
)
from iacorch.store.memory import MemoryStore
from iacorch.store.sqlite import SqliteStore
from tests.conftest import Clock

HOST = "ci-host"


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "state.db", clock=clock)
    else:
        from iacorch.store.postgres import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"), clock=clock)
    yield made
    made.close()


def dead_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except OSError:
        return 2**22 + 1


def run(run_id: str, *, started: float = 100.0, runbook: str = "webapp",
        workspace: str = "prod", operation: str = "apply",
        status: RunStatus = RunStatus.RUNNING, **extra: Any) -> RunRecord:
    fields: dict[str, Any] = {"vars": {"env": workspace}, **extra}
    return RunRecord(id=run_id, runbook=runbook, runbook_path=f"plans/{runbook}.yaml",
                     workspace=workspace, plan_hash="ph-" + run_id, status=status,
                     operation=operation, started_at=started, **fields)


def stage(run_id: str, stage_id: str, attempt: int = 1,
          status: StageStatus = StageStatus.SUCCEEDED, **extra: Any) -> StageRecord:
    return StageRecord(run_id=run_id, stage_id=stage_id, attempt=attempt, status=status,
                       **extra)


# --- runs ---------------------------------------------------------------------------------

def test_run_round_trips_with_json_normalised_mappings(store: Store) -> None:
    record = run("r1", user="alice", host=HOST, pid=42, vars={"regions": ("eu", "us"), "n": 2},
                 details={"deadline": 3600.0, "only": ["verify"]})
    store.create_run(record)
    got = store.get_run("r1")
    assert got.vars == {"regions": ["eu", "us"], "n": 2}  # tuples come back as lists
    assert got.details == {"deadline": 3600.0, "only": ["verify"]}
    assert got.status is RunStatus.RUNNING
    assert (got.user, got.host, got.pid, got.finished_at) == ("alice", HOST, 42, None)


def test_creating_a_run_twice_is_refused(store: Store) -> None:
    store.create_run(run("r1"))
    with pytest.raises(ValueError, match="already exists"):
        store.create_run(run("r1"))


def test_stored_records_do_not_follow_later_mutation_by_the_caller(store: Store) -> None:
    variables = {"env": "prod"}
    store.create_run(run("r1", vars=variables))
    variables["env"] = "changed"
    assert store.get_run("r1").vars == {"env": "prod"}


def test_get_run_accepts_a_unique_prefix(store: Store) -> None:
    store.create_run(run("3f2a9c01"))
    store.create_run(run("3f2b0000"))
    assert store.get_run("3f2a").id == "3f2a9c01"
    assert store.get_run("3f2b0000").id == "3f2b0000"


def test_an_ambiguous_prefix_names_the_candidates(store: Store) -> None:
    store.create_run(run("3f2a9c01"))
    store.create_run(run("3f2b0000"))
    with pytest.raises(RunNotFoundError) as err:
        store.get_run("3f2")
    assert "3f2a9c01" in err.value.message and "3f2b0000" in err.value.message
    assert err.value.exit_code == 64


@pytest.mark.parametrize("asked", ["nope", ""])
def test_an_unknown_run_raises_with_a_hint(store: Store, asked: str) -> None:
    store.create_run(run("r1"))
    with pytest.raises(RunNotFoundError) as err:
        store.get_run(asked)
    assert "iacorch runs" in (err.value.hint or "")


def test_list_runs_is_newest_first_with_filters_and_limit(store: Store) -> None:
    store.create_run(run("old", started=10.0))
    store.create_run(run("new", started=30.0, status=RunStatus.FAILED))
    store.create_run(run("mid", started=20.0, runbook="dr", operation="drift"))
    store.create_run(run("tie", started=30.0))  # same start: the later insert comes first
    assert [r.id for r in store.list_runs()] == ["tie", "new", "mid", "old"]
    assert [r.id for r in store.list_runs(limit=2)] == ["tie", "new"]
    assert [r.id for r in store.list_runs(runbook="webapp")] == ["tie", "new", "old"]
    assert [r.id for r in store.list_runs(operation="drift")] == ["mid"]
    assert [r.id for r in store.list_runs(status=RunStatus.FAILED)] == ["new"]


def test_update_run_changes_only_what_is_given(store: Store) -> None:
    store.create_run(run("r1", details={"deadline": 60}))
    store.update_run("r1", status=RunStatus.FAILED, finished_at=200.0, error="boom",
                     details={"failed_stage": "hosts"})
    store.update_run("r1", status=RunStatus.ROLLING_BACK)
    got = store.get_run("r1")
    assert got.status is RunStatus.ROLLING_BACK
    assert (got.finished_at, got.error) == (200.0, "boom")        # kept when omitted
    assert got.details == {"deadline": 60, "failed_stage": "hosts"}  # merged
    store.update_run("r1", status=RunStatus.RUNNING, finished_at=None, error=None)
    got = store.get_run("r1")
    assert (got.status, got.finished_at, got.error) == (RunStatus.RUNNING, None, None)


def test_update_of_an_unknown_run_raises(store: Store) -> None:
    with pytest.raises(RunNotFoundError):
        store.update_run("ghost", status=RunStatus.FAILED)


def test_last_successful_run_matches_runbook_workspace_and_operation(store: Store) -> None:
    store.create_run(run("a", started=10.0, status=RunStatus.SUCCEEDED))
    store.create_run(run("b", started=20.0, status=RunStatus.SUCCEEDED))
    store.create_run(run("c", started=30.0, status=RunStatus.FAILED))
    store.create_run(run("d", started=40.0, status=RunStatus.SUCCEEDED, workspace="dev"))
    store.create_run(run("e", started=50.0, status=RunStatus.SUCCEEDED, operation="plan"))
    found = store.last_successful_run("webapp", "prod")
    assert found is not None and found.id == "b"
    plan = store.last_successful_run("webapp", "prod", operation="plan")
    assert plan is not None and plan.id == "e"
    assert store.last_successful_run("webapp", "staging") is None


# --- stages -------------------------------------------------------------------------------

def test_record_stage_upserts_one_attempt(store: Store) -> None:
    store.create_run(run("r1"))
    store.record_stage(stage("r1", "net", status=StageStatus.RUNNING, started_at=1.0))
    store.record_stage(stage("r1", "net", status=StageStatus.SUCCEEDED, started_at=1.0,
                             finished_at=2.0, outputs={"subnet": "10.0.0.0/24"},
                             sensitive_outputs=("token",), changes={"add": 1}))
    attempts = store.stage_attempts("r1", "net")
    assert len(attempts) == 1
    got = attempts[0]
    assert (got.status, got.finished_at) == (StageStatus.SUCCEEDED, 2.0)
    assert got.outputs == {"subnet": "10.0.0.0/24"}
    assert got.sensitive_outputs == ("token",) and got.changes == {"add": 1}


def test_stage_records_give_the_latest_attempt_per_stage_and_phase(store: Store) -> None:
    store.create_run(run("r1"))
    store.record_stage(stage("r1", "net", 1, StageStatus.FAILED, exit_code=1))
    store.record_stage(stage("r1", "hosts", 1, StageStatus.SUCCEEDED))
    store.record_stage(stage("r1", "net", 2, StageStatus.SUCCEEDED, exit_code=0))
    store.record_stage(stage("r1", "net", 1, StageStatus.ROLLED_BACK, phase="rollback"))
    store.record_stage(stage("r2", "net", 5, StageStatus.FAILED))
    forward = store.stage_records("r1")
    assert list(forward) == ["net", "hosts"]  # the order stages were first recorded
    assert (forward["net"].attempt, forward["net"].exit_code) == (2, 0)
    rollback = store.stage_records("r1", phase="rollback")
    assert {k: v.status for k, v in rollback.items()} == {"net": StageStatus.ROLLED_BACK}
    attempts = store.stage_attempts("r1", "net")
    assert [(a.phase, a.attempt) for a in attempts] == [
        ("forward", 1), ("forward", 2), ("rollback", 1)]


def test_an_unknown_phase_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="phase"):
        store.record_stage(stage("r1", "net", phase="sideways"))
    with pytest.raises(ValueError, match="phase"):
        store.stage_records("r1", phase="sideways")


def test_non_json_outputs_are_refused_and_nothing_is_written(store: Store) -> None:
    store.create_run(run("r1"))
    with pytest.raises(TypeError, match="stage outputs"):
        store.record_stage(stage("r1", "net", outputs={"when": object()}))
    assert store.stage_records("r1") == {}


# --- transactions -------------------------------------------------------------------------

def test_transaction_commits_all_writes_together(store: Store) -> None:
    with store.transaction():
        store.create_run(run("r1"))
        store.record_stage(stage("r1", "net"))
        store.append_audit("run_started", run_id="r1")
    assert store.get_run("r1").id == "r1"
    assert list(store.stage_records("r1")) == ["net"]
    assert [e.kind for e in store.audit_entries()] == ["run_started"]


def test_an_exception_rolls_back_every_write_of_the_transaction(store: Store) -> None:
    store.create_run(run("before"))
    with pytest.raises(RuntimeError, match="engine bug"), store.transaction():
        store.create_run(run("r1"))
        store.record_stage(stage("r1", "net"))
        acquire_lock(store, "webapp/prod", "r1", host=HOST, pid=1, lease_seconds=60)
        store.append_audit("run_started", run_id="r1")
        raise RuntimeError("engine bug")
    assert [r.id for r in store.list_runs()] == ["before"]
    assert store.stage_records("r1") == {}
    assert store.list_locks() == []
    assert store.audit_entries() == []
    store.append_audit("after")  # the chain continues from the last committed entry
    assert store.verify_audit().ok


def test_nested_transactions_join_the_outer_one(store: Store) -> None:
    with pytest.raises(KeyError), store.transaction():
        store.create_run(run("outer"))
        with store.transaction():
            store.create_run(run("inner"))
        assert {r.id for r in store.list_runs()} == {"outer", "inner"}
        raise KeyError("late failure")
    assert store.list_runs() == []  # the inner block committed nothing on its own


def test_writes_from_several_threads_keep_the_chain_whole(store: Store) -> None:
    def append(n: int) -> None:
        for i in range(25):
            store.append_audit("tick", data={"thread": n, "i": i})

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = store.verify_audit()
    assert (result.ok, result.checked) == (True, 100)
    assert [e.seq for e in store.audit_entries()] == list(range(1, 101))


# --- locks --------------------------------------------------------------------------------

def test_a_held_lock_is_refused_to_another_run(store: Store, clock: Clock) -> None:
    assert acquire_lock(store, "webapp/prod", "r1", host=HOST, pid=1, lease_seconds=60) is None
    holder = acquire_lock(store, "webapp/prod", "r2", host=HOST, pid=1, lease_seconds=60)
    assert holder is not None
    assert (holder.run_id, holder.host, holder.pid, holder.acquired_at) == ("r1", HOST, 1, 1000)
    assert acquire_lock(store, "webapp/dev", "r2", host=HOST, pid=1, lease_seconds=60) is None
    assert [h.key for h in store.list_locks()] == ["webapp/dev", "webapp/prod"]


def test_the_holder_may_acquire_again_and_keeps_its_start(store: Store, clock: Clock) -> None:
    acquire_lock(store, "k", "r1", host=HOST, pid=1, lease_seconds=60)
    clock.now += 5
    assert acquire_lock(store, "k", "r1", host=HOST, pid=1, lease_seconds=60) is None
    (held,) = store.list_locks()
    assert (held.acquired_at, held.heartbeat_at) == (1000.0, 1005.0)
    assert store.audit_entries() == []


def test_renew_moves_the_heartbeat_only_for_the_holder(store: Store, clock: Clock) -> None:
    acquire_lock(store, "k", "r1", host=HOST, pid=1, lease_seconds=10)
    clock.now += 8
    assert store.renew_lock("k", "r1") is True
    assert store.renew_lock("k", "r2") is False
    assert store.renew_lock("other", "r1") is False
    clock.now += 8  # 16 s after acquiring, 8 s after the renewal: still within the lease
    assert acquire_lock(store, "k", "r2", host="elsewhere", pid=7, lease_seconds=10) is not None
    assert store.list_locks()[0].heartbeat_at == 1008.0


def test_release_frees_the_lock_only_for_its_holder(store: Store) -> None:
    acquire_lock(store, "k", "r1", host=HOST, pid=1, lease_seconds=60)
    store.release_lock("k", "r2")
    assert [h.run_id for h in store.list_locks()] == ["r1"]
    store.release_lock("k", "r1")
    assert store.list_locks() == []
    assert acquire_lock(store, "k", "r2", host=HOST, pid=1, lease_seconds=60) is None


def test_an_expired_lease_is_taken_over_and_audited(store: Store, clock: Clock) -> None:
    acquire_lock(store, "k", "r1", host="other-host", pid=1, lease_seconds=30)
    clock.now += 31
    assert acquire_lock(store, "k", "r2", host=HOST, pid=2, lease_seconds=30) is None
    (held,) = store.list_locks()
    assert (held.run_id, held.acquired_at) == ("r2", 1031.0)
    (entry,) = store.audit_entries()
    assert (entry.kind, entry.run_id) == ("lock_taken_over", "r2")
    assert entry.data["reason"] == "lease_expired"
    assert entry.data["previous"]["run_id"] == "r1"


def test_a_dead_pid_on_this_host_is_taken_over(store: Store) -> None:
    acquire_lock(store, "k", "r1", host=HOST, pid=dead_pid(), lease_seconds=3600)
    assert acquire_lock(store, "k", "r2", host=HOST, pid=2, lease_seconds=60) is None
    (entry,) = store.audit_entries()
    assert entry.data["reason"] == "pid_dead"
    assert entry.data["previous"]["pid"] == dead_pid()


def test_a_pid_on_another_host_is_not_judged_from_here(store: Store) -> None:
    acquire_lock(store, "k", "r1", host="other-host", pid=dead_pid(), lease_seconds=3600)
    holder = acquire_lock(store, "k", "r2", host=HOST, pid=2, lease_seconds=60)
    assert holder is not None and holder.run_id == "r1"


def test_force_unlock_removes_the_holder_and_audits_who_and_why(store: Store) -> None:
    acquire_lock(store, "k", "r1", host=HOST, pid=1, lease_seconds=60)
    removed = store.force_unlock("k", actor="alice", reason="laptop died")
    assert removed is not None and removed.run_id == "r1"
    assert store.list_locks() == []
    (entry,) = store.audit_entries()
    assert (entry.kind, entry.actor, entry.run_id) == ("force_unlock", "alice", "r1")
    assert entry.data["reason"] == "laptop died" and entry.data["key"] == "k"
    assert store.force_unlock("k", actor="alice", reason="again") is None
    assert len(store.audit_entries()) == 1  # nothing removed, nothing audited


# --- audit --------------------------------------------------------------------------------

def test_an_empty_audit_log_verifies(store: Store) -> None:
    result = store.verify_audit()
    assert (result.ok, result.checked, result.head_hash) == (True, 0, GENESIS_HASH)


def test_audit_entries_chain_and_verify(store: Store, clock: Clock) -> None:
    first = store.append_audit("run_started", run_id="r1", actor="alice",
                               data={"vars": {"env": "prod"}, "ids": (1, 2)})
    clock.now += 1
    second = store.append_audit("stage_finished", run_id="r1", stage_id="net")
    store.append_audit("run_started", run_id="r2")
    assert (first.seq, first.prev_hash, first.time) == (1, GENESIS_HASH, 1000.0)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert first.data == {"vars": {"env": "prod"}, "ids": [1, 2]}
    assert [e.seq for e in store.audit_entries(run_id="r1")] == [1, 2]
    assert store.audit_entries()[0] == first
    result = store.verify_audit()
    assert (result.ok, result.checked, result.first_bad_seq) == (True, 3, None)
    assert result.head_hash == store.audit_entries()[-1].hash
    assert store.audit_head() == store.audit_entries()[-1]
    assert store.audit_head(run_id="r1") == second
    assert store.audit_head(run_id="nobody") is None


def test_audit_data_must_be_json(store: Store) -> None:
    with pytest.raises(TypeError, match="audit data"):
        store.append_audit("x", data={"bad": {1, 2}})
    assert store.audit_entries() == []


def finished(store: Store, record: StageRecord) -> None:
    """A stage attempt ends as the engine records it: the row and its digest in one commit."""
    with store.transaction():
        store.record_stage(record)
        store.append_audit(f"stage_{record.status.value}", run_id=record.run_id,
                           stage_id=record.stage_id, data=stage_audit_data(record))


def covered_run(store: Store, run_id: str = "r1") -> None:
    store.create_run(run(run_id))
    store.append_audit("run_started", run_id=run_id, data={COVERS_STAGES: True})
    finished(store, stage(run_id, "net", 1, StageStatus.FAILED, exit_code=1, error="boom",
                          started_at=10, finished_at=11))
    finished(store, stage(run_id, "net", 2, outputs={"subnet": "10.0.0.0/24"},
                          changes={"add": 1}, details={"gate_hash": "gh"}))
    finished(store, stage(run_id, "net", 1, StageStatus.ROLLED_BACK, phase="rollback"))
    store.record_stage(stage(run_id, "hosts", 1, StageStatus.RUNNING))  # in flight: no result


def test_stage_results_are_covered_by_the_chain(store: Store) -> None:
    covered_run(store)
    result = store.verify_audit()
    assert (result.ok, result.stage_problems) == (True, ())


@pytest.mark.parametrize("change", [
    {"outputs": {"subnet": "6.6.6.0/24"}}, {"status": StageStatus.SKIPPED},
    {"changes": None}, {"error": "all fine"}, {"details": {"gate_hash": "forged"}}])
def test_a_stage_result_changed_outside_the_chain_is_caught_naming_run_and_stage(
        store: Store, change: dict[str, Any]) -> None:
    covered_run(store)
    forged = stage("r1", "net", 2, **{"outputs": {"subnet": "10.0.0.0/24"},
                                      "changes": {"add": 1}, "details": {"gate_hash": "gh"},
                                      **change})
    store.record_stage(forged)   # what an UPDATE of the row does: no audit entry
    result = store.verify_audit()
    assert not result.ok and result.first_bad_seq is None
    (problem,) = result.stage_problems
    assert (problem.run_id, problem.stage_id, problem.attempt, problem.seq) == ("r1", "net", 2, 3)
    assert str(problem).startswith("run r1, stage net (attempt 2): its row differs from what "
                                   "audit entry seq 3 recorded")


def test_a_result_the_chain_never_recorded_is_caught(store: Store) -> None:
    covered_run(store)
    store.record_stage(stage("r1", "net", 3, outputs={"subnet": "6.6.6.0/24"}))
    store.record_stage(stage("r1", "hosts", 2, StageStatus.PENDING))  # would only run again
    (problem,) = store.verify_audit().stage_problems
    assert (problem.stage_id, problem.attempt, problem.seq) == ("net", 3, None)
    assert "never recorded" in problem.reason


def test_runs_from_before_stage_digests_still_verify(store: Store) -> None:
    store.create_run(run("old"))
    store.append_audit("run_started", run_id="old")
    store.record_stage(stage("old", "net", 1, outputs={"subnet": "10.0.0.0/24"}))
    store.append_audit("stage_succeeded", run_id="old", stage_id="net",
                       data={"attempt": 1, "phase": "forward"})
    assert store.verify_audit().ok


def test_an_expected_head_must_still_be_in_the_log(store: Store) -> None:
    first = store.append_audit("run_started", run_id="r1")
    last = store.append_audit("run_succeeded", run_id="r1")
    assert store.verify_audit(head=last.hash[:12]).head_seen_at == 2
    earlier = store.verify_audit(head=first.hash.upper())   # the log grew since: fine
    assert (earlier.ok, earlier.head_seen_at) == (True, 1)
    elsewhere = next_entry(2, last.hash, "run_started", time=1.0).hash
    lost = store.verify_audit(head=elsewhere[:16])
    assert not lost.ok and lost.head_seen_at is None
    assert lost.reason == (f"the log ends at seq 2 with head {last.hash[:16]}, but you "
                           f"expected head {elsewhere[:16]}: entries were removed or this is "
                           "another store")
    with pytest.raises(ValueError, match="at least 12 hex digits"):
        store.verify_audit(head=last.hash[:11])


# --- approvals and drift ------------------------------------------------------------------

def test_approvals_are_kept_per_gate_in_time_order(store: Store) -> None:
    def decide(gate: str, who: str, at: float, decision: str = "approve") -> ApprovalRecord:
        return ApprovalRecord(run_id="r1", gate=gate, identity=who, decision=decision,
                              plan_hash="ph", time=at, comment="lgtm",
                              inputs={"window": "now"})

    store.record_approval(decide("go-live", "bob", 20.0))
    store.record_approval(decide("go-live", "alice", 10.0))
    store.record_approval(decide("db", "carol", 15.0, "reject"))
    assert [a.identity for a in store.approvals("r1", "go-live")] == ["alice", "bob"]
    assert [a.identity for a in store.approvals("r1")] == ["alice", "carol", "bob"]
    assert store.approvals("r2") == []
    rejected = store.approvals("r1", "db")[0]
    assert (rejected.decision, rejected.plan_hash, rejected.comment) == ("reject", "ph", "lgtm")
    assert rejected.inputs == {"window": "now"}
    assert store.audit_entries() == []  # callers audit decisions themselves: no duplicates


def test_drift_history_is_newest_first_per_runbook_and_stage(store: Store) -> None:
    def drift(stage_id: str, at: float, status: str = "in_sync",
              runbook: str = "webapp") -> DriftRecord:
        return DriftRecord(run_id=f"d{at}", runbook=runbook, workspace="prod",
                           stage_id=stage_id, status=status,
                           findings={"resources": ["aws_instance.web"]},
                           fingerprint=f"fp{at}", time=at)

    store.record_drift(drift("net", 1.0))
    store.record_drift(drift("hosts", 2.0, "drifted"))
    store.record_drift(drift("net", 3.0, "drifted"))
    store.record_drift(drift("net", 4.0, runbook="other"))
    assert [d.time for d in store.drift_history("webapp")] == [3.0, 2.0, 1.0]
    assert [d.time for d in store.drift_history("webapp", stage_id="net")] == [3.0, 1.0]
    assert [d.time for d in store.drift_history("webapp", limit=1)] == [3.0]
    assert store.drift_history("webapp")[0].findings == {"resources": ["aws_instance.web"]}


# --- opening ------------------------------------------------------------------------------

def test_open_store_picks_the_implementation_from_the_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IACORCH_HOME", str(tmp_path / "home"))
    assert isinstance(open_store("memory://"), MemoryStore)
    default = open_store()
    assert isinstance(default, SqliteStore)
    assert default.path == tmp_path / "home" / "state.db"
    default.close()
    for url, expected in [(f"sqlite://{tmp_path}/a.db", tmp_path / "a.db"),
                          (str(tmp_path / "b.db"), tmp_path / "b.db")]:
        opened = open_store(url)
        assert isinstance(opened, SqliteStore) and opened.path == expected
        opened.close()


@pytest.mark.parametrize("url", ["redis://x", "sqlite://"])
def test_an_unusable_store_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError) as err:
        open_store(url)
    assert "sqlite:///" in (err.value.hint or "")


# --- trigger deliveries ---------------------------------------------------------------------

def test_a_delivery_starts_one_run_however_often_it_arrives(store: Store) -> None:
    assert store.claim_delivery("webapp/on-push", "d-1", "run-a") is None
    assert store.claim_delivery("webapp/on-push", "d-1", "run-b") == "run-a"
    assert store.claim_delivery("webapp/on-push", "d-1", "run-c") == "run-a"
    assert store.claim_delivery("webapp/on-push", "d-2", "run-d") is None
    assert store.claim_delivery("other/on-push", "d-1", "run-e") is None  # per trigger


def test_a_claim_rolls_back_with_the_run_it_was_for(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.create_run(run("run-a"))
        assert store.claim_delivery("webapp/hook", "d-1", "run-a") is None
        raise RuntimeError("crash before commit")
    assert store.claim_delivery("webapp/hook", "d-1", "run-b") is None


def test_racing_copies_of_one_delivery_have_one_winner(store: Store) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def claim(n: int) -> None:
        barrier.wait()
        if store.claim_delivery("webapp/hook", "d-1", f"run-{n}") is None:
            winners.append(f"run-{n}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.claim_delivery("webapp/hook", "d-1", "late") == winners[0]


# --- API tokens -----------------------------------------------------------------------------

def test_a_token_is_found_by_its_hash_and_revoked_once(store: Store) -> None:
    older = TokenRecord("tok-a", "alice", "hash-a", 10.0, expires_at=99.0)
    store.add_token(older)
    store.add_token(TokenRecord("tok-b", "bob", "hash-b", 20.0))
    assert store.token_by_hash("hash-a") == older
    assert store.token_by_hash("hash-unknown") is None
    assert [t.id for t in store.list_tokens()] == ["tok-a", "tok-b"]
    revoked = store.revoke_token("tok-a", 50.0)
    assert revoked is not None and revoked.revoked_at == 50.0
    again = store.revoke_token("tok-a", 60.0)
    assert again is not None and again.revoked_at == 50.0, "the first revocation stands"
    assert store.token_by_hash("hash-a").revoked_at == 50.0  # type: ignore[union-attr]
    assert store.revoke_token("tok-unknown", 60.0) is None
    assert store.token_by_hash("hash-b").revoked_at is None  # type: ignore[union-attr]


def test_a_token_rolls_back_with_its_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.add_token(TokenRecord("tok-a", "alice", "hash-a", 10.0))
        raise RuntimeError("crash before commit")
    assert store.token_by_hash("hash-a") is None and store.list_tokens() == []
