"""The audit hash chain catches every edit, deletion, swap and duplication, at the right seq.

Property-style with a seeded random: 1,000 mutations of a ~50-entry chain in
memory (the pure helpers both stores use) and 1,000 more made with raw SQL on
a real state.db, each verified through SqliteStore.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from iacorch.model.status import StageStatus
from iacorch.store.audit import (
    COVERS_STAGES,
    GENESIS_HASH,
    next_entry,
    stage_audit_data,
    verify_chain,
)
from iacorch.store.base import AuditEntry, StageRecord
from iacorch.store.sqlite import SqliteStore

CHAIN_LENGTH = 50
MUTATIONS = 1_000
KINDS = ("run_started", "stage_finished", "approval_decided", "lock_taken_over")


def make_chain(rng: random.Random, length: int = CHAIN_LENGTH) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    seq, prev = 0, GENESIS_HASH
    for i in range(length):
        entry = next_entry(seq, prev, rng.choice(KINDS), time=1_700_000_000 + i * 1.5,
                           run_id=f"run{i % 3}", stage_id=rng.choice([None, "net", "hosts"]),
                           actor=rng.choice([None, "alice"]),
                           data={"i": i, "note": f"entry {i} é", "ok": i % 2 == 0})
        entries.append(entry)
        seq, prev = entry.seq, entry.hash
    return entries


def flip_one_char(text: str, rng: random.Random) -> str:
    pos = rng.randrange(len(text))
    return text[:pos] + chr(ord(text[pos]) ^ (1 << rng.randrange(5))) + text[pos + 1:]


# --- the pure helpers ------------------------------------------------------------------------

def mutate(chain: list[AuditEntry], rng: random.Random) -> tuple[str, list[AuditEntry], int]:
    """One random mutation; returns its name, the mutated chain and the first bad seq."""
    n = len(chain)
    out = list(chain)
    kind = rng.choice(["edit_data", "edit_field", "delete", "swap", "duplicate"])
    if kind == "edit_data":
        i = rng.randrange(n)
        key = rng.choice(sorted(out[i].data))
        data = dict(out[i].data)
        data[key] = flip_one_char(repr(data[key]), rng)
        out[i] = replace(out[i], data=data)
        return kind, out, i + 1
    if kind == "edit_field":
        i = rng.randrange(n)
        out[i] = rng.choice([replace(out[i], time=out[i].time + 1),
                             replace(out[i], kind=out[i].kind + "x"),
                             replace(out[i], actor="mallory"),
                             replace(out[i], run_id="other")])
        return kind, out, i + 1
    if kind == "delete":
        i = rng.randrange(n - 1)  # deleting the last entry is tail truncation: see below
        del out[i]
        return kind, out, i + 1
    if kind == "swap":
        i, j = sorted(rng.sample(range(n), 2))
        out[i], out[j] = out[j], out[i]
        return kind, out, i + 1
    i = rng.randrange(n)
    out.insert(i + 1, out[i])
    return kind, out, i + 2


def test_an_untouched_chain_verifies() -> None:
    chain = make_chain(random.Random(1))
    result = verify_chain(chain)
    assert (result.ok, result.checked, result.head_hash) == (True, CHAIN_LENGTH, chain[-1].hash)


def test_every_random_mutation_is_caught_at_the_first_bad_seq() -> None:
    rng = random.Random(20240501)
    chain = make_chain(rng)
    seen: set[str] = set()
    for _ in range(MUTATIONS):
        kind, mutated, first_bad = mutate(chain, rng)
        result = verify_chain(mutated)
        assert not result.ok, kind
        assert result.first_bad_seq == first_bad, (kind, result.reason)
        assert result.checked == first_bad - 1
        assert result.head_hash == (chain[first_bad - 2].hash if first_bad > 1
                                    else GENESIS_HASH)
        seen.add(kind)
    assert seen == {"edit_data", "edit_field", "delete", "swap", "duplicate"}


def test_the_reason_says_what_kind_of_damage_was_found() -> None:
    chain = make_chain(random.Random(2))
    assert "missing" in (verify_chain(chain[:3] + chain[4:]).reason or "")
    assert "duplicated" in (verify_chain(chain[:4] + chain[3:]).reason or "")
    edited = chain[:5] + [replace(chain[5], actor="mallory")] + chain[6:]
    assert "edited" in (verify_chain(edited).reason or "")


def test_what_the_chain_alone_cannot_catch() -> None:
    """Documented limits: both need the head hash kept elsewhere to be noticed."""
    chain = make_chain(random.Random(3))
    truncated = verify_chain(chain[:-5])
    assert truncated.ok and truncated.head_hash != chain[-1].hash
    forged: list[AuditEntry] = []
    seq, prev = 0, GENESIS_HASH
    for entry in chain:
        actor = "mallory" if entry.seq == 10 else entry.actor
        link = next_entry(seq, prev, entry.kind, time=entry.time, run_id=entry.run_id,
                          stage_id=entry.stage_id, actor=actor, data=entry.data)
        forged.append(link)
        seq, prev = link.seq, link.hash
    recomputed = verify_chain(forged)
    assert recomputed.ok and recomputed.head_hash != chain[-1].hash


# --- the same mutations with raw SQL on state.db ----------------------------------------------

@pytest.fixture
def tampered_db(tmp_path: Path) -> Iterator[tuple[SqliteStore, sqlite3.Connection]]:
    times = iter(range(1_700_000_000, 1_800_000_000))
    store = SqliteStore(tmp_path / "state.db", synchronous="OFF", clock=lambda: next(times))
    rng = random.Random(7)
    for i in range(CHAIN_LENGTH):
        store.append_audit(rng.choice(KINDS), run_id=f"run{i % 3}", actor="alice",
                           data={"i": i, "note": f"entry {i}", "nested": {"k": [i, None]}})
    raw = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    raw.execute("PRAGMA synchronous = OFF")
    raw.execute("DROP TRIGGER audit_no_update")  # a tamperer would do the same
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("CREATE TEMP TABLE pristine AS SELECT * FROM audit")
    yield store, raw
    raw.close()
    store.close()


def _sql_mutation(raw: sqlite3.Connection, rng: random.Random) -> tuple[str, int]:
    n = CHAIN_LENGTH
    kind = rng.choice(["flip_data_byte", "delete", "swap", "duplicate"])
    if kind == "flip_data_byte":
        seq = rng.randrange(1, n + 1)
        (data,) = raw.execute("SELECT data FROM audit WHERE seq = ?", (seq,)).fetchone()
        raw.execute("UPDATE audit SET data = ? WHERE seq = ?", (flip_one_char(data, rng), seq))
        return kind, seq
    if kind == "delete":
        seq = rng.randrange(1, n)
        raw.execute("DELETE FROM audit WHERE seq = ?", (seq,))
        return kind, seq
    cols = "time, kind, run_id, stage_id, actor, data, prev_hash, hash"
    if kind == "swap":
        a, b = sorted(rng.sample(range(1, n + 1), 2))
        row_a = raw.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (a,)).fetchone()
        row_b = raw.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (b,)).fetchone()
        sets = ", ".join(f"{c} = ?" for c in cols.split(", "))
        raw.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*row_b, a))
        raw.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*row_a, b))
        return kind, a
    seq = rng.randrange(1, n + 1)  # duplicate: make room after seq, copy it there
    raw.execute("UPDATE audit SET seq = -seq WHERE seq > ?", (seq,))
    raw.execute("UPDATE audit SET seq = 1 - seq WHERE seq < 0")
    raw.execute(f"INSERT INTO audit (seq, {cols}) SELECT seq + 1, {cols} FROM audit "
                "WHERE seq = ?", (seq,))
    return kind, seq + 1


def test_raw_sql_tampering_with_state_db_is_caught_at_the_first_bad_seq(
        tampered_db: tuple[SqliteStore, sqlite3.Connection]) -> None:
    store, raw = tampered_db
    assert store.verify_audit().ok
    rng = random.Random(99)
    seen: set[str] = set()
    for _ in range(MUTATIONS):
        raw.execute("BEGIN")
        kind, first_bad = _sql_mutation(raw, rng)
        raw.execute("COMMIT")
        result = store.verify_audit()
        assert not result.ok, kind
        assert result.first_bad_seq == first_bad, (kind, result.reason)
        seen.add(kind)
        raw.execute("BEGIN")
        raw.execute("DELETE FROM audit")
        raw.execute("INSERT INTO audit SELECT * FROM pristine")
        raw.execute("COMMIT")
    assert seen == {"flip_data_byte", "delete", "swap", "duplicate"}
    assert store.verify_audit().ok


def test_the_store_refuses_to_edit_or_delete_audit_rows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.append_audit("run_started")
    store.close()
    raw = sqlite3.connect(tmp_path / "state.db")
    statements: list[Callable[[], object]] = [
        lambda: raw.execute("UPDATE audit SET actor = 'mallory'"),
        lambda: raw.execute("DELETE FROM audit"),
    ]
    for statement in statements:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            statement()
    raw.close()


def test_integer_clock_times_hash_the_same_after_a_round_trip(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", clock=lambda: 1_700_000_000)
    written = store.append_audit("run_started", data={"n": 1})
    assert store.audit_entries() == [written]
    assert store.verify_audit().ok
    store.close()


# --- stage rows and the tail, changed with raw SQL ----------------------------------------------

@pytest.fixture
def run_db(tmp_path: Path) -> Iterator[tuple[SqliteStore, sqlite3.Connection, str]]:
    """A store with one run of three finished stages, each row's digest in its audit entry."""
    store = SqliteStore(tmp_path / "state.db", synchronous="OFF")
    store.append_audit("run_started", run_id="r1", data={COVERS_STAGES: True})
    for stage_id in ("net", "hosts", "app"):
        record = StageRecord("r1", stage_id, 1, StageStatus.SUCCEEDED, started_at=1.0,
                             finished_at=2.0, outputs={"address": f"{stage_id}.internal"})
        with store.transaction():
            store.record_stage(record)
            store.append_audit("stage_succeeded", run_id="r1", stage_id=stage_id,
                               data=stage_audit_data(record))
    head = store.append_audit("run_succeeded", run_id="r1").hash
    raw = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    yield store, raw, head
    raw.close()
    store.close()


def test_an_sql_update_of_stage_outputs_is_caught_naming_run_and_stage(
        run_db: tuple[SqliteStore, sqlite3.Connection, str]) -> None:
    store, raw, _ = run_db
    assert store.verify_audit().ok
    raw.execute("""UPDATE stages SET outputs = '{"address":"evil.example"}'
                   WHERE stage_id = 'hosts'""")
    result = store.verify_audit()
    assert not result.ok and result.reason == "1 stage record(s) differ from the audit log"
    assert [str(p) for p in result.stage_problems] == [
        "run r1, stage hosts (attempt 1): its row differs from what audit entry seq 3 recorded "
        "(status, outputs, changes, error or details were changed)"]


@pytest.mark.parametrize(("sql", "expected"), [
    ("DELETE FROM stages WHERE stage_id = 'app'", "its row is gone (deleted)"),
    ("UPDATE stages SET attempt = 2 WHERE stage_id = 'app'", "never recorded"),
    ("UPDATE stages SET outputs = '{' WHERE stage_id = 'app'", "can no longer be read"),
])
def test_deleted_rekeyed_or_damaged_stage_rows_are_caught(
        run_db: tuple[SqliteStore, sqlite3.Connection, str], sql: str, expected: str) -> None:
    store, raw, _ = run_db
    raw.execute(sql)
    problems = store.verify_audit().stage_problems
    assert problems and all(p.stage_id == "app" for p in problems)
    assert expected in " ".join(str(p) for p in problems)


def test_deleting_the_last_audit_rows_is_caught_against_the_head_printed_before(
        run_db: tuple[SqliteStore, sqlite3.Connection, str]) -> None:
    store, raw, head = run_db
    assert store.verify_audit(head=head[:16]).ok
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE seq >= 4")  # the last stage and the run's end
    raw.execute("DELETE FROM stages WHERE stage_id = 'app'")
    assert store.verify_audit().ok, "a cut-off tail is still a whole chain"
    cut = store.verify_audit(head=head[:16])
    assert not cut.ok
    assert cut.reason is not None and cut.reason.startswith("the log ends at seq 3 with head ")
    assert cut.reason.endswith(f"but you expected head {head[:16]}: entries were removed or "
                               "this is another store")
