"""A damaged, missing, locked, read-only or full state.db gives a clear StoreError.

Each fault is made for real on a file (truncation, flipped bytes, a lost WAL
after a killed process, permissions, another process holding the write lock,
SQLITE_FULL via max_page_count). The promise under test: a StoreError with a
message and a hint, no raw sqlite3 exception, and the file left as it was.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iacorch.errors import StoreError
from iacorch.model.status import RunStatus, StageStatus
from iacorch.store.base import RunRecord, StageRecord
from iacorch.store.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from iacorch.store.sqlite import SqliteStore

RUNS = 40


def make_run(run_id: str) -> RunRecord:
    return RunRecord(id=run_id, runbook="webapp", runbook_path="plans/webapp.yaml",
                     workspace="prod", plan_hash="ph", vars={"env": "prod", "pad": "x" * 300},
                     status=RunStatus.SUCCEEDED, operation="apply", started_at=time.time())


def fill(store: SqliteStore, count: int = RUNS, prefix: str = "run") -> None:
    for i in range(count):
        store.create_run(make_run(f"{prefix}{i:03d}"))
        store.record_stage(StageRecord(f"{prefix}{i:03d}", "net", 1, StageStatus.SUCCEEDED,
                                       outputs={"subnet": "10.0.0.0/24"}))
        store.append_audit("run_finished", run_id=f"{prefix}{i:03d}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A closed, checkpointed state.db with RUNS runs in it."""
    path = tmp_path / "state.db"
    with SqliteStore(path) as store, store.transaction():
        fill(store)
    assert not path.with_name("state.db-wal").exists()
    return path


def fingerprint(path: Path) -> dict[str, str]:
    """Content hashes of the db and its side files, to prove nothing was rewritten."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.parent.glob(path.name + "*"))}


def refused(path: Path, **options: object) -> StoreError:
    """Open (and read and write) the store, expecting a StoreError; check the file is kept."""
    before = fingerprint(path)
    with pytest.raises(StoreError) as caught:
        store = SqliteStore(path, **options)  # type: ignore[arg-type]
        try:
            store.list_runs(limit=1000)
            store.append_audit("probe")
        finally:
            store.close()
    err = caught.value
    assert err.message and err.hint, "a StoreError needs both what happened and what to do"
    assert "Traceback" not in err.render()
    assert fingerprint(path) == before, "the state file must be left exactly as it was"
    return err


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def python(code: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]


# --- damaged files ----------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["50 bytes", "half", "one page short", "mid-page"])
def test_a_truncated_file_is_refused(db: Path, keep: str) -> None:
    size = db.stat().st_size
    cut = {"50 bytes": 50, "half": size // 2, "one page short": size - 4096,
           "mid-page": size - 100}[keep]
    os.truncate(db, cut)
    assert "truncated" in refused(db).message


@pytest.mark.parametrize(("offset", "expected"), [
    (0, "not an SQLite database"),         # magic string
    (16, "damaged header (page size"),
    (18, "damaged header (file format"),  # would otherwise make SQLite open it read-only
    (21, "damaged header (payload"),
    (75, "damaged header (reserved"),
    (36, "damaged"),                       # freelist count: found by quick_check
])
def test_flipped_header_bytes_are_refused(db: Path, offset: int, expected: str) -> None:
    flip(db, offset)
    assert expected in refused(db).message


def _root_page(db: Path, table: str) -> int:
    raw = sqlite3.connect(db)
    (page,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                          (table,)).fetchone()
    raw.close()
    return int(page)


def test_a_damaged_page_is_found_on_open(db: Path) -> None:
    flip(db, (_root_page(db, "runs") - 1) * 4096)  # the b-tree page type byte
    err = refused(db)
    assert "is damaged" in err.message and "backup" in (err.hint or "")


def test_a_damaged_page_is_found_by_a_query_when_open_skips_the_check(db: Path) -> None:
    flip(db, (_root_page(db, "stages") - 1) * 4096)
    store = SqliteStore(db, quick_check_max_bytes=0)
    assert len(store.list_runs(limit=1000)) == RUNS  # other tables still read fine
    with pytest.raises(StoreError, match="is damaged"):
        store.stage_records("run001")
    store.close()


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "is empty (0 bytes)"),   # a store truncated to nothing, or someone's empty file
    (b"not a database, just text\n" * 10, "not an SQLite database"),
])
def test_a_file_that_is_not_a_database_is_never_overwritten(tmp_path: Path, content: bytes,
                                                            expected: str) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    err = refused(path)
    assert expected in err.message
    assert path.read_bytes() == content


def test_an_empty_sqlite_database_iacorch_did_not_create_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("VACUUM")  # a valid database file with no tables and no application id
    raw.close()
    assert path.stat().st_size > 0
    assert "not an iacorch state store" in refused(path).message


def test_without_hard_links_a_new_store_is_copied_into_place_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "state.db"
    with SqliteStore(path) as store:
        store.append_audit("hello")
    with SqliteStore(path) as store:
        assert [e.kind for e in store.audit_entries()] == ["hello"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")] == []


def test_a_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE invoices (id INTEGER)")
    raw.commit()
    raw.close()
    assert "not an iacorch state store" in refused(path).message


def test_a_newer_schema_is_refused_with_both_versions(db: Path) -> None:
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version = 7")
    raw.close()
    err = refused(db)
    assert ("state.db was written by a newer iacorch (schema 7, this one knows "
            f"{SCHEMA_VERSION})") in err.message
    assert "upgrade iacorch" in (err.hint or "")


def test_a_version_1_file_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    store.create_run(make_run("r1"))
    assert store.claim_delivery("web/hook", "d-1", "r1") is None
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


# --- a killed process and a lost WAL -------------------------------------------------------------

WRITE_AND_DIE = """
    import os, sys, signal, time
    sys.path[:0] = {path!r}
    from tests.integration.test_store_faults import fill
    from iacorch.store.sqlite import SqliteStore
    store = SqliteStore({db!r}, synchronous={sync!r})
    fill(store, 10, prefix="late")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _write_and_get_killed(db: Path, sync: str = "FULL") -> None:
    root = str(Path(__file__).parents[2])
    proc = python(WRITE_AND_DIE.format(path=[root], db=str(db), sync=sync))
    proc.communicate(timeout=60)
    assert proc.returncode == -9


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_commits_survive_a_killed_process(db: Path, sync: str) -> None:
    _write_and_get_killed(db, sync)
    assert db.with_name("state.db-wal").stat().st_size > 0  # not checkpointed: it died
    with SqliteStore(db) as store:
        assert len(store.list_runs(limit=1000)) == RUNS + 10
        assert store.verify_audit().checked == RUNS + 10


def test_a_lost_wal_is_detected_and_nothing_is_touched(db: Path, tmp_path: Path) -> None:
    _write_and_get_killed(db)
    wal = db.with_name("state.db-wal")
    aside = tmp_path / "saved-wal"
    shutil.move(wal, aside)
    err = refused(db)
    assert "state.db-wal is missing" in err.message and "committed changes" in err.message
    assert "put state.db-wal back" in (err.hint or "")
    shutil.move(aside, wal)  # once it is back, nothing was lost
    with SqliteStore(db) as store:
        assert store.get_run("late009").id == "late009"
        assert store.verify_audit().checked == RUNS + 10


# --- permissions ------------------------------------------------------------------------------

def _without_dac_override() -> None:
    """In the child: drop the capabilities that let root ignore file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


TRY_TO_WRITE = """
    import json
    from iacorch.errors import StoreError
    from iacorch.store.sqlite import SqliteStore
    try:
        store = SqliteStore({db!r})
        runs = len(store.list_runs(limit=1000))
        store.append_audit("probe")
        print(json.dumps({{"ok": True}}))
    except StoreError as err:
        print(json.dumps({{"message": err.message, "hint": err.hint}}))
"""


def _unprivileged_write(db: Path) -> dict[str, str]:
    root = os.geteuid() == 0
    proc = python(TRY_TO_WRITE.format(db=str(db)),
                  preexec_fn=_without_dac_override if root else None)
    out, errors = proc.communicate(timeout=60)
    if root and "prctl" in errors:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here, so root ignores file permissions")
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors
    return dict(json.loads(out))


def test_a_read_only_file_gives_a_store_error(db: Path) -> None:
    before = db.read_bytes()
    db.chmod(0o444)
    try:
        result = _unprivileged_write(db)
    finally:
        db.chmod(0o644)
    assert "is read-only" in result["message"] and "writable" in result["hint"]
    assert db.read_bytes() == before  # SQLite may add empty -wal/-shm files beside it


@pytest.mark.parametrize("existing", [True, False])
def test_a_read_only_directory_gives_a_store_error(db: Path, existing: bool) -> None:
    folder = db.parent / "ro"
    folder.mkdir()
    target = folder / "state.db"
    if existing:
        shutil.copy(db, target)
    folder.chmod(0o555)
    try:
        result = _unprivileged_write(target)
    finally:
        folder.chmod(0o755)
    assert "writable" in result["hint"]
    assert "read-only" in result["message"] or "cannot open" in result["message"]
    assert target.exists() == existing


# --- another process holds the lock -----------------------------------------------------------

HOLD_WRITE_LOCK = """
    import sqlite3, sys
    conn = sqlite3.connect({db!r}, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_lock_held_past_the_busy_timeout_names_the_holder(db: Path) -> None:
    holder = python(HOLD_WRITE_LOCK.format(db=str(db)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        store = SqliteStore(db, busy_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            store.create_run(make_run("blocked"))
        assert time.monotonic() - started >= 0.2
        assert "is locked by another process" in caught.value.message
        assert f"pid {holder.pid}" in caught.value.message
        assert "0.2 s" in caught.value.message
        assert store.list_runs(limit=1000)[0].id != "blocked"  # reads still work in WAL
    finally:
        holder.communicate(input="", timeout=30)
    store.create_run(make_run("after"))  # the same store works once the holder is gone
    assert store.get_run("after").id == "after"
    store.close()


# --- a full disk ----------------------------------------------------------------------------

def test_a_full_disk_rolls_back_and_nothing_is_lost_once_space_is_freed(db: Path) -> None:
    raw = sqlite3.connect(db)
    (pages,) = raw.execute("PRAGMA page_count").fetchone()
    raw.close()
    big = {"blob": "z" * 20_000}
    store = SqliteStore(db, pragmas={"max_page_count": pages + 3})
    with pytest.raises(StoreError) as caught, store.transaction():
        store.create_run(make_run("big"))
        for n in range(20):
            store.record_stage(StageRecord("big", f"s{n}", 1, StageStatus.SUCCEEDED,
                                           outputs=big))
    assert "no space left" in caught.value.message and "rolled back" in caught.value.message
    assert "free some disk space" in (caught.value.hint or "")
    with pytest.raises(StoreError, match="no space left"):  # a single write, no transaction
        store.record_stage(StageRecord("run001", "huge", 1, StageStatus.SUCCEEDED,
                                       outputs=big))
    assert [r.id for r in store.list_runs(limit=1000) if r.id == "big"] == []
    assert "huge" not in store.stage_records("run001")
    store.append_audit("small")  # what still fits is still written
    store.close()

    with SqliteStore(db) as store:  # space freed
        with store.transaction():
            store.create_run(make_run("big"))
            for n in range(20):
                store.record_stage(StageRecord("big", f"s{n}", 1, StageStatus.SUCCEEDED,
                                               outputs=big))
        assert len(store.list_runs(limit=1000)) == RUNS + 1
        assert len(store.stage_records("big")) == 20
        assert store.verify_audit().checked == RUNS + 1


# --- two processes race for one run lock -----------------------------------------------------

RACE = """
    import json, os, socket, sys, time
    from iacorch.store.base import acquire_lock
    from iacorch.store.sqlite import SqliteStore
    store = SqliteStore({db!r})
    print("ready", flush=True)
    while not os.path.exists({gate!r}):
        time.sleep(0.0005)
    won = [key for key in ("k%d" % i for i in range(30))
           if acquire_lock(store, key, {run!r}, host=socket.gethostname(), pid=os.getpid(),
                               lease_seconds=600) is None]
    print(json.dumps(won), flush=True)
    sys.stdin.read()  # stay alive so the other racer cannot take over a dead pid
"""


def _start_together(code: str, count: int, gate: Path) -> list[str]:
    """Run `count` copies of `code`; release them at once; return each one's last line."""
    racers = [python(code.replace("{n}", str(n))) for n in range(count)]
    try:
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
        gate.touch()
        return [r.stdout.readline().strip() for r in racers if r.stdout is not None]
    finally:
        for racer in racers:
            _, errors = racer.communicate(input="", timeout=60)
            assert "Traceback" not in errors, errors


def test_two_processes_racing_for_a_lock_get_exactly_one_winner(db: Path,
                                                               tmp_path: Path) -> None:
    gate = tmp_path / "go"
    code = RACE.format(db=str(db), gate=str(gate), run="run-{n}")
    won = [json.loads(line) for line in _start_together(code, 2, gate)]
    assert sorted(won[0] + won[1]) == sorted(f"k{i}" for i in range(30))
    assert not set(won[0]) & set(won[1])
    with SqliteStore(db) as store:
        assert len(store.list_locks()) == 30
        assert not [e for e in store.audit_entries() if e.kind == "lock_taken_over"]


CREATE = """
    import os, sys, time
    from iacorch.errors import StoreError
    from iacorch.store.sqlite import SqliteStore
    print("ready", flush=True)
    while not os.path.exists({gate!r}):
        time.sleep(0.0005)
    try:
        with SqliteStore({db!r}) as store:
            store.append_audit("hello", actor="racer-{{n}}")
        print("ok", flush=True)
    except StoreError as err:
        print(err.render().replace("\\n", " "), flush=True)
"""


def test_processes_creating_a_new_store_at_once_all_open_the_same_file(
        tmp_path: Path) -> None:
    path, gate = tmp_path / "fresh" / "state.db", tmp_path / "go"
    results = _start_together(CREATE.format(db=str(path), gate=str(gate)), 4, gate)
    assert results == ["ok"] * 4
    with SqliteStore(path) as store:
        assert sorted(e.actor or "" for e in store.audit_entries()) == [
            f"racer-{n}" for n in range(4)]
        assert store.verify_audit().ok
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".new")] == []


def test_a_second_store_in_one_process_loses_no_commit_of_the_first(tmp_path: Path) -> None:
    """Closing any descriptor of state.db drops every POSIX lock this process holds on it
    (fcntl semantics), so the header check must never open the file while a connection of
    this process has it: another process would then take the WAL away under our feet."""
    path = tmp_path / "state.db"
    first = SqliteStore(path)
    first.create_run(make_run("before"))
    second = SqliteStore(path)          # its header check ran while `first` was open
    writer = textwrap.dedent(f"""
        import time
        from iacorch.model.status import RunStatus
        from iacorch.store.base import RunRecord
        from iacorch.store.sqlite import SqliteStore
        store = SqliteStore({str(path)!r})
        store.create_run(RunRecord(id="other", runbook="w", runbook_path="w.yaml",
                                   workspace="p", plan_hash="h", vars={{}},
                                   status=RunStatus.SUCCEEDED, operation="apply",
                                   started_at=time.time()))
        store.close()   # the last connection it can see: it checkpoints and removes the WAL
    """)
    subprocess.run([sys.executable, "-c", writer], check=True, timeout=60)
    first.create_run(make_run("after"))   # committed: every process must see it now
    reader = textwrap.dedent(f"""
        from iacorch.store.sqlite import SqliteStore
        print(" ".join(sorted(run.id for run in SqliteStore({str(path)!r}).list_runs())))
    """)
    seen = subprocess.run([sys.executable, "-c", reader], check=True, timeout=60,
                          capture_output=True, text=True).stdout.split()
    second.close()
    first.close()
    assert seen == ["after", "before", "other"]
