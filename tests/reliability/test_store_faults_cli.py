"""State store faults as a user meets them: through the CLI, with a real run in the store.

tests/integration/test_store_faults.py checks the store itself; here every fault is
made on the state.db of a project that has run, and then `iacorch` is asked to work
with it. The promises: a clear error (what and a hint, no traceback, not exit 70)
and a non-zero exit; nothing run and nothing half-written; the file never replaced
by a silently re-created empty store; and once the fault is gone (the WAL put back,
space freed, the lock released), resume loses and repeats nothing.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RUNBOOK = """
version: 1
name: store
stages:
  first: {kind: provision, idempotent: true, shell: {run: "echo first >> ledger"}}
  second:
    kind: provision
    needs: [first]
    idempotent: true
    shell: {run: "echo second >> ledger; touch second.started; sleep {pause}"}
  third: {kind: verify, needs: [second], idempotent: true, shell: {run: "echo third >> ledger"}}
"""


def ledger(project) -> collections.Counter[str]:
    path = project.root / "ledger"
    return collections.Counter(path.read_text().split() if path.exists() else [])


def state_files(project) -> dict[str, str]:
    """Content hashes of state.db and its side files."""
    home = Path(project.env["IACORCH_HOME"])
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.glob("state.db*"))}


@pytest.fixture
def ran(project):
    """A project whose store holds one succeeded run; returns that run's id."""
    project.write("store.yaml", RUNBOOK.replace("{pause}", "0"))
    result = project.run("apply", "store.yaml")
    assert result.code == 0, result.text
    project.write("ledger", "")
    return project.runs()[0]["id"]


def db_path(project) -> Path:
    return Path(project.env["IACORCH_HOME"]) / "state.db"


def assert_refused(result, *fragments: str) -> None:
    """A clear, non-zero, non-crash refusal naming what is wrong and what to do."""
    assert result.code not in (0, 70), result.text
    assert "Traceback" not in result.text and "internal error" not in result.text
    assert "hint:" in result.err, result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


def refused_everywhere(project, run_id: str, *fragments: str) -> None:
    """apply (a real process), then resume, runs, show and audit verify (the CLI's main()
    in this process, to keep the suite fast) all refuse; nothing runs or changes."""
    before = state_files(project)
    assert_refused(project.run("apply", "store.yaml"), *fragments)
    for args in (("resume", run_id), ("runs",), ("show", run_id), ("audit", "verify")):
        code, text = cli_in_process(*args, "--store", str(db_path(project)))
        assert code not in (0, 70), text
        assert "Traceback" not in text and "hint:" in text, text
        for fragment in fragments:
            assert fragment in text, text
    assert ledger(project) == {}, "a stage ran on a store that was refused"
    assert state_files(project) == before, "the refused state files were modified"


def cli_in_process(*args: str) -> tuple[int, str]:
    """The CLI's main() in this process (its error boundary and exit codes, no spawn)."""
    from iacorch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return code, out.getvalue() + err.getvalue()


# --- damaged files ---------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["50 bytes", "half", "one page short"])
def test_a_truncated_store_is_refused_by_every_command(project, ran, keep):
    db = db_path(project)
    size = db.stat().st_size
    os.truncate(db, {"50 bytes": 50, "half": size // 2, "one page short": size - 4096}[keep])
    refused_everywhere(project, ran, "truncated")


def test_a_store_truncated_to_nothing_is_refused_not_re_created(project, ran):
    os.truncate(db_path(project), 0)
    refused_everywhere(project, ran, "is empty (0 bytes)", "restore it from a backup")
    assert db_path(project).stat().st_size == 0


def test_stage_outputs_changed_in_the_store_are_caught_by_audit_verify(project, ran):
    with contextlib.closing(sqlite3.connect(db_path(project))) as raw:
        raw.execute("""UPDATE stages SET outputs = '{"token":"forged"}'
                       WHERE stage_id = 'second'""")
        raw.commit()
    result = project.run("audit", "verify")
    assert result.code == 1, result.text
    assert "audit log BROKEN: 1 stage record(s) differ from the audit log" in result.err
    assert f"run {ran}, stage second (attempt 1): its row differs from what audit entry " \
        "seq" in result.err, result.err


def _root_page(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as raw:
        (page,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                              (table,)).fetchone()
    return int(page)


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


@pytest.mark.parametrize(("where", "fragment"), [
    ("magic", "not an SQLite database"), ("page size", "damaged header"),
    ("runs table", "is damaged"), ("audit table", "is damaged")])
def test_flipped_bytes_are_refused_by_every_command(project, ran, where, fragment):
    db = db_path(project)
    offset = {"magic": 3, "page size": 16,
              "runs table": (_root_page(db, "runs") - 1) * 4096,
              "audit table": (_root_page(db, "audit") - 1) * 4096}[where]
    flip(db, offset)
    refused_everywhere(project, ran, fragment)


def test_a_flipped_byte_in_the_schema_text_is_refused_as_damage(project, ran):
    db = db_path(project)
    sql = b"CREATE INDEX drift_by_runbook ON drift"
    offset = db.read_bytes().index(sql) + 4     # CREA|T|E: T -> 0xAB, no longer UTF-8
    flip(db, offset)
    refused_everywhere(project, ran, "is damaged")


def test_random_byte_flips_never_crash_and_never_lose_the_store_silently(
        project, ran, tmp_path, long_tests, monkeypatch):
    """Seeded random flips anywhere in the file: refused clearly, or (a flip in unused
    space, or one SQLite cannot see) read as before; never a crash, never an empty store."""
    monkeypatch.setenv("IACORCH_HOME", str(tmp_path / "crash-logs"))
    pristine = tmp_path / "pristine.db"
    with sqlite3.connect(db_path(project)) as db:  # fold the WAL in: copies hold every row
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(db_path(project), pristine)
    size = pristine.stat().st_size
    rng = random.Random(4242)
    trials = 1000 if long_tests else 200
    outcomes: collections.Counter[str] = collections.Counter()
    for trial in range(trials):
        target = tmp_path / f"flipped-{trial}" / "state.db"   # no -wal/-shm of an earlier copy
        target.parent.mkdir()
        shutil.copy(pristine, target)
        for _ in range(rng.randint(1, 4)):
            flip(target, rng.randrange(size))
        flipped = target.read_bytes()
        for args in (("runs", "--json"), ("audit", "verify")):
            code, text = cli_in_process(*args, "--store", str(target))
            assert code in (0, 1, 74), text     # 1: audit verify found damage
            assert "Traceback" not in text and "internal error" not in text, text
            if code in (1, 74):
                assert "hint:" in text or "BROKEN" in text, text
                outcomes[f"{args[0]} refused"] += 1
            elif args[0] == "runs":
                # SQLite keeps no page checksums: a flip inside a record may change a value
                # (even the run id) unnoticed, but the run must not vanish
                assert len(json.loads(text)) == 1, "the run vanished from a readable store"
                outcomes["runs read"] += 1
        assert target.read_bytes() == flipped, "a read-only command rewrote the file"
        shutil.rmtree(target.parent)
    print(f"STORE FLIPS: {trials} damaged copies, outcomes {dict(outcomes)}")
    assert outcomes["runs refused"] > 0, "no flip ever hit a page the store reads"


def test_a_newer_schema_is_refused_and_not_downgraded(project, ran):
    with contextlib.closing(sqlite3.connect(db_path(project))) as raw:
        raw.execute("PRAGMA user_version = 7")
    refused_everywhere(project, ran, "newer iacorch (schema 7")


# --- a killed run and a lost WAL ---------------------------------------------------------------

def killed_mid_run(project, tree) -> str:
    """Apply, kill -9 the process group while `second` runs; the run id.

    The store is not opened afterwards: the next process to open it would recover the
    WAL into state.db, and there would be no WAL left to lose.
    """
    project.write("store.yaml", RUNBOOK.replace("{pause}", "30"))
    started = tree.start("apply", "store.yaml")
    tree.wait_for((project.root / "second.started").exists, what="stage second to start")
    started.kill_group(signal.SIGKILL)
    started.wait(timeout=10)
    tree.wait_quiet()
    return re.search(r"^run (\S+): apply", started.output, re.MULTILINE).group(1)


def test_a_lost_wal_is_refused_and_resume_works_once_it_is_back(project, tree, tmp_path):
    run_id = killed_mid_run(project, tree)
    wal = db_path(project).with_name("state.db-wal")
    assert wal.stat().st_size > 0, "the killed process left committed pages in the WAL"
    shutil.move(wal, tmp_path / "wal-aside")
    before = state_files(project)
    assert_refused(project.run("resume", run_id), "state.db-wal is missing", "committed changes")
    for args in (("runs",), ("audit", "verify")):
        code, text = cli_in_process(*args, "--store", str(db_path(project)))
        assert code == 74 and "state.db-wal is missing" in text, text
    assert state_files(project) == before
    assert ledger(project) == {"first": 1, "second": 1}

    shutil.move(tmp_path / "wal-aside", wal)
    with _second_is_quick(project):
        resumed = project.run("resume", run_id)
    assert resumed.code == 0, resumed.text
    assert ledger(project) == {"first": 1, "second": 2, "third": 1}
    assert project.run("audit", "verify").code == 0


@contextlib.contextmanager
def _second_is_quick(project) -> Iterator[None]:
    """Make `sleep 30` in stage second return at once, without changing the runbook."""
    bin_dir = project.root / "fastbin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sleep").chmod(0o755)
    saved = project.env["PATH"]
    project.env["PATH"] = f"{bin_dir}:{saved}"
    try:
        yield
    finally:
        project.env["PATH"] = saved


# --- permissions and locks ------------------------------------------------------------------

def _without_dac_override() -> None:
    """In the child: drop the capabilities that let root ignore file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_store_is_refused_and_left_alone(project, ran):
    db = db_path(project)
    before = db.read_bytes()
    db.chmod(0o444)
    root = os.geteuid() == 0
    try:
        done = subprocess.run(project.argv("apply", "store.yaml"), cwd=project.root,
                              env=project.env, capture_output=True, text=True, timeout=60,
                              preexec_fn=_without_dac_override if root else None)
    finally:
        db.chmod(0o644)
    if root and "prctl" in done.stderr:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here, so root ignores file permissions")
    assert done.returncode == 74, done.stdout + done.stderr
    assert "read-only" in done.stderr and "writable" in done.stderr
    assert "Traceback" not in done.stderr
    assert db.read_bytes() == before
    assert ledger(project) == {}


HOLD = """
    import sqlite3, sys
    conn = sqlite3.connect({db!r}, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("holding", flush=True)
    sys.stdin.read()
    conn.execute("ROLLBACK")
"""


@contextlib.contextmanager
def write_lock_held(db: Path) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD.format(db=str(db)))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.communicate(input="", timeout=30)


def test_a_store_locked_by_another_process_is_refused_naming_it(project, ran):
    with write_lock_held(db_path(project)) as holder:
        result = project.run("apply", "store.yaml")
        assert_refused(result, "is locked by another process", f"pid {holder.pid}")
    assert ledger(project) == {}
    assert [r["id"] for r in project.runs()] == [ran], "the refused apply left a run behind"
    assert project.run("audit", "verify").code == 0


def test_a_store_locked_mid_run_stops_cleanly_and_resume_finishes(project, tree):
    project.write("store.yaml", RUNBOOK.replace("{pause}", "0.2"))
    started = tree.start("apply", "store.yaml")
    tree.wait_for((project.root / "second.started").exists, what="stage second to start")
    with write_lock_held(db_path(project)):     # second ends; its record cannot be written
        tree.wait_for(lambda: "is locked by another process" in started.output, timeout=30,
                      what="the run to report the locked store")
    code = started.wait(timeout=60)
    output = started.output
    assert code == 74, output
    assert "is locked by another process" in output and "Traceback" not in output
    tree.wait_quiet()
    run = project.runs()[0]
    assert run["status"] == "died"
    resumed = project.run("resume", run["id"])
    assert resumed.code == 0, resumed.text
    # `second` finished but could not be recorded: it is the one stage that runs again
    assert ledger(project) == {"first": 1, "second": 2, "third": 1}
    assert project.run("audit", "verify").code == 0


# --- a full disk ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[..., Path]]:
    """Mounts a small tmpfs on demand (root with CAP_SYS_ADMIN); skips where one cannot."""
    mounted: list[Path] = []

    def mount(size: str = "4m", inodes: int | None = None) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def on_disk(project, disk: Path) -> None:
    project.env["IACORCH_HOME"] = str(disk)


CHATTY = """
version: 1
name: store
stages:
  first: {kind: provision, idempotent: true, shell: {run: "echo first >> ledger"}}
  second:
    kind: provision
    needs: [first]
    idempotent: true
    shell:
      run: |
        echo second >> ledger
        for i in $(seq 20000); do echo "log line $i of a chatty tool, padded to use space"; done
  third: {kind: verify, needs: [second], idempotent: true, shell: {run: "echo third >> ledger"}}
"""


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes_once_space_is_freed(
        project, small_disk):
    disk = small_disk("4m")
    on_disk(project, disk)
    project.write("store.yaml", CHATTY)           # stage second logs about 1 MB
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (4096 - 400) * 1024)   # leave 400 KB
    result = project.run("apply", "store.yaml")
    assert result.code not in (0, 70), result.text
    assert "Traceback" not in result.text and "internal error" not in result.text
    assert "no space left" in result.err.lower() and "hint:" in result.err
    assert ledger(project)["third"] == 0, "a stage started after the disk filled"

    filler.unlink()
    runs = project.runs()
    assert len(runs) == 1, "the store must hold the run, not be re-created empty"
    assert project.run("audit", "verify").code == 0, "something was half-written"
    resumed = project.run("resume", runs[0]["id"], "--quiet")
    assert resumed.code == 0, resumed.text
    counts = ledger(project)
    assert counts["first"] == 1 and counts["third"] == 1
    assert counts["second"] <= 2              # in flight when the disk filled
    assert project.runs()[0]["status"] == "succeeded"


def test_out_of_inodes_for_a_stage_log_keeps_the_outcome_and_says_so(project, small_disk):
    disk = small_disk("4m", inodes=10)
    on_disk(project, disk)
    # stages that print need a log file each: the inodes run out as one starts printing
    project.write("store.yaml", RUNBOOK.replace("{pause}", "0").replace(
        '>> ledger', '>> ledger; echo logged'))
    result = project.run("apply", "store.yaml")
    assert "Traceback" not in result.text and "internal error" not in result.text
    # the stage whose log could not be written still ran once and its outcome stands:
    # failing it would make a retry or a resume run a step that already happened again
    assert result.code == 0, result.text
    assert ledger(project) == {"first": 1, "second": 1, "third": 1}
    assert "could not be written (no space left on device)" in result.err.lower()
    assert "hint:" in result.err
