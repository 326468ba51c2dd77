"""state.db as a file: its schema, how a new one appears, which files we refuse, and
what an SQLite failure on it means to the person running iacorch.

The schema version lives in `PRAGMA user_version`; MIGRATIONS[i] takes a file
from version i to i+1 inside one write transaction, so a file is never left
half-migrated. A file stamped by a newer iacorch, one that is not ours, or one
that is damaged is refused rather than altered.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import struct
import time
from pathlib import Path

from iacorch.errors import StoreError

APPLICATION_ID = 0x69614F72  # "iaOr", in the SQLite header: marks a file as ours

_V1 = (
    """CREATE TABLE runs (
        id TEXT PRIMARY KEY, runbook TEXT NOT NULL, runbook_path TEXT NOT NULL,
        workspace TEXT NOT NULL, plan_hash TEXT NOT NULL, vars TEXT NOT NULL,
        status TEXT NOT NULL, operation TEXT NOT NULL, started_at REAL NOT NULL,
        finished_at REAL, "user" TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
        error TEXT, details TEXT NOT NULL)""",
    "CREATE INDEX runs_by_start ON runs (started_at)",
    "CREATE INDEX runs_by_runbook ON runs (runbook, workspace, operation, status, started_at)",
    """CREATE TABLE stages (
        run_id TEXT NOT NULL, stage_id TEXT NOT NULL, attempt INTEGER NOT NULL,
        phase TEXT NOT NULL, status TEXT NOT NULL, started_at REAL, finished_at REAL,
        exit_code INTEGER, error TEXT, outputs TEXT NOT NULL, sensitive_outputs TEXT NOT NULL,
        changes TEXT, details TEXT NOT NULL,
        UNIQUE (run_id, phase, stage_id, attempt))""",
    """CREATE TABLE locks (
        key TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
        acquired_at REAL NOT NULL, heartbeat_at REAL NOT NULL, lease_seconds REAL NOT NULL)""",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, run_id TEXT,
        stage_id TEXT, actor TEXT, data TEXT NOT NULL, prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    "CREATE INDEX audit_by_run ON audit (run_id)",
    # Guards against mistakes, not against an attacker (who can drop them): the hash
    # chain is what detects tampering.
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TABLE approvals (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, gate TEXT NOT NULL,
        identity TEXT NOT NULL, decision TEXT NOT NULL, plan_hash TEXT NOT NULL,
        time REAL NOT NULL, comment TEXT, inputs TEXT NOT NULL)""",
    "CREATE INDEX approvals_by_run ON approvals (run_id, gate)",
    """CREATE TABLE drift (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, runbook TEXT NOT NULL,
        workspace TEXT NOT NULL, stage_id TEXT NOT NULL, status TEXT NOT NULL,
        findings TEXT NOT NULL, fingerprint TEXT NOT NULL, time REAL NOT NULL)""",
    "CREATE INDEX drift_by_runbook ON drift (runbook, stage_id, time)",
)

_V2 = (
    # one row per event a trigger received: its first copy's run (Store.claim_delivery)
    """CREATE TABLE deliveries (
        source TEXT NOT NULL, delivery_id TEXT NOT NULL, run_id TEXT NOT NULL,
        time REAL NOT NULL, PRIMARY KEY (source, delivery_id))""",
)

_V3 = (
    # API tokens of `iacorch serve`: only a SHA-256 of each token is kept (Store.add_token)
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY, "user" TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL, expires_at REAL, revoked_at REAL)""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)

_MAGIC = b"SQLite format 3\x00"
_WAL_INDEX_VERSION = 3007000
_PLAUSIBLE_VERSION = 10_000  # beyond this, user_version is damage, not a future schema
EMPTY_HINT = ("if it held your runs, it was truncated: restore it from a backup; to start "
              "a new store, delete the empty file (iacorch creates state.db itself), "
              "or use --store")
RESTORE_HINT = ("restore state.db from a backup, or move it aside to start afresh "
                "(iacorch never overwrites it); `sqlite3 state.db .recover` may salvage data")


def create_file(path: Path) -> None:
    """Create a state.db at the current schema that appears whole or not at all.

    It is built under a temporary name and hard-linked into place; a link never
    replaces a file, so processes creating the store at once all end up opening
    the one complete file. Where hard links are not supported it is copied into
    a file only this process creates (O_EXCL), which others see whole within
    check_files' retries. Never an empty state.db: an empty file is refused.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the header
                upgrade(conn, tmp)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise translate(exc, path, 0.0) from exc
        _place(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


def _place(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        return  # another process created it first; theirs is complete
    except OSError:
        pass  # no hard links on this file system
    try:
        with path.open("xb") as out:
            try:
                out.write(tmp.read_bytes())
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                path.unlink(missing_ok=True)  # ours alone: never leave a partial store
                raise
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror}",
                         hint="free some disk space, or make its directory writable, "
                              "or use --store") from exc


def check_files(path: Path, *, attempts: int = 3, pause: float = 0.02) -> None:
    """Refuse, before SQLite opens it, a state file that SQLite would misread silently.

    SQLite reads a truncated file as if the missing pages were empty, and a WAL
    file lost after a crash as if its commits never happened; both are caught
    here from the file sizes and the wal-index (-shm) header. Another process
    checkpointing at this very moment can make a sound file look wrong for a
    few milliseconds, so a finding must persist across `attempts` to count.
    """
    for attempt in range(attempts):
        try:
            _check_files_once(path)
            return
        except StoreError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)


def _check_files_once(path: Path) -> None:
    wal = path.with_name(path.name + "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0  # before the db: see check_files
    if not path.exists():
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a file", hint="point --store at a state.db file")
    size = path.stat().st_size
    if size == 0:
        raise StoreError(f"{path} is empty (0 bytes): it is not an iacorch state store, "
                         "and iacorch does not initialise over an existing file",
                         hint=EMPTY_HINT)
    with path.open("rb") as f:
        header = f.read(100)
    if not header.startswith(_MAGIC):
        raise StoreError(f"{path} is not an SQLite database, or its header is damaged",
                         hint=RESTORE_HINT)
    if len(header) < 100:
        raise StoreError(f"{path} is truncated: only {size} bytes are left",
                         hint=RESTORE_HINT)
    _check_header(path, header)
    if wal_size == 0:
        _check_size(path, header, size)
    if not wal.exists():
        _check_wal_not_lost(path, path.with_name(path.name + "-shm"))


def _check_header(path: Path, header: bytes) -> None:
    """The fields of the 100-byte header whose legal values are fixed (fileformat2.html)."""
    page_size = _page_size(header)
    encoding, = struct.unpack(">I", header[56:60])
    schema_format, = struct.unpack(">I", header[44:48])
    damaged = [name for name, ok in (
        ("page size", page_size >= 512 and not page_size & (page_size - 1)),
        ("file format versions", header[18] in (1, 2) and header[19] in (1, 2)),
        ("payload fractions", tuple(header[21:24]) == (64, 32, 32)),
        ("schema format", schema_format in (0, 1, 2, 3, 4)),
        ("text encoding", encoding in (0, 1, 2, 3)),
        ("reserved bytes", not any(header[72:92])),
    ) if not ok]
    if damaged:
        raise StoreError(f"{path} has a damaged header ({', '.join(damaged)})",
                         hint=RESTORE_HINT)


def _page_size(header: bytes) -> int:
    size: int = struct.unpack(">H", header[16:18])[0]
    return 65536 if size == 1 else size


def _check_size(path: Path, header: bytes, size: int) -> None:
    page_size = _page_size(header)
    change_counter, pages = struct.unpack(">II", header[24:32])
    valid_for = struct.unpack(">I", header[92:96])[0]
    if size % page_size or (change_counter == valid_for and size < pages * page_size):
        raise StoreError(f"{path} is truncated: its header promises {pages} pages of "
                         f"{page_size} bytes but the file holds {size} bytes",
                         hint=RESTORE_HINT)


def _check_wal_not_lost(path: Path, shm: Path) -> None:
    try:
        with shm.open("rb") as f:
            index = f.read(136)
    except OSError:
        return
    if len(index) < 136:
        return
    # The wal-index header is in native byte order (SQLite's walformat.html).
    version, _, _, is_init = struct.unpack("=IIIB", index[:13])
    max_frame = struct.unpack("=I", index[16:20])[0]
    backfilled = struct.unpack("=I", index[96:100])[0]
    lost = version == _WAL_INDEX_VERSION and is_init and max_frame > backfilled
    if lost and not path.with_name(path.name + "-wal").exists():  # not created meanwhile
        raise StoreError(
            f"{path.name}-wal is missing next to {path}, but {shm.name} records "
            f"{max_frame - backfilled} WAL page(s) of committed changes not yet copied "
            "into the database: the most recent runs, stages and audit entries would be lost",
            hint=f"put {path.name}-wal back (from a backup or wherever it was moved); "
                 f"to accept the loss instead, move {shm.name} aside and run again")


def upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the open database to SCHEMA_VERSION, or refuse it (StoreError)."""
    version = schema_version(conn, path)
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn, path)  # another process may have migrated meanwhile
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; StoreError if it is not ours, damaged or too new."""
    # One statement, so one snapshot: never a half-seen migration by another process.
    app_id, version, tables = conn.execute(
        "SELECT a.application_id, v.user_version, (SELECT count(*) FROM sqlite_master) "
        "FROM pragma_application_id() AS a, pragma_user_version() AS v").fetchone()
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
        raise not_a_store(path)
    if not 0 <= version <= _PLAUSIBLE_VERSION or (version == 0 and tables):
        raise StoreError(f"{path} has a damaged header (schema version {version})",
                         hint=RESTORE_HINT)
    if version > SCHEMA_VERSION:
        raise StoreError(f"state.db was written by a newer iacorch (schema {version}, "
                         f"this one knows {SCHEMA_VERSION}): {path}",
                         hint="upgrade iacorch (pip install -U iacorch), or use another "
                              "state file with --store")
    return int(version)


def not_a_store(path: Path) -> StoreError:
    """The refusal of an SQLite file iacorch did not create (every state.db it creates is
    stamped with APPLICATION_ID and its schema in one commit)."""
    return StoreError(f"{path} is an SQLite database but not an iacorch state store",
                      hint="point --store (or $IACORCH_HOME) at another file; "
                           "iacorch will not modify this one")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file whose b-trees are damaged (cost: about 0.8 ms per MB)."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StoreError(f"{path} is damaged: " + "; ".join(problems), hint=RESTORE_HINT)


def translate(exc: sqlite3.Error, path: Path, busy_timeout: float) -> StoreError:
    """The StoreError a user should see for an SQLite failure on `path`."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        holders = lock_holders(path)
        who = f" ({', '.join(holders)})" if holders else ""
        return StoreError(f"{path} is locked by another process{who} and stayed locked for "
                          f"more than {busy_timeout:g} s",
                          hint="wait for that iacorch command to finish, or stop it; "
                               "`iacorch runs` shows what is running")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StoreError(f"{path} is damaged: {exc}", hint=RESTORE_HINT)
    if name.startswith("SQLITE_FULL"):
        return StoreError(f"no space left to write {path}; the change was rolled back, "
                          "nothing was half-written",
                          hint="free some disk space and run the command again; an "
                               "interrupted run continues with `iacorch resume RUN`")
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        if name == "SQLITE_READONLY_DIRECTORY":
            return StoreError(f"the directory of {path} is read-only: SQLite cannot create "
                              "state.db-wal and state.db-shm there",
                              hint=f"make {path.parent} writable, or use --store")
        return StoreError(f"{path} is read-only ({exc})",
                          hint="make the file and its directory writable: SQLite also writes "
                               "state.db-wal and state.db-shm beside it; or use --store")
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(f"cannot open {path} ({exc})",
                          hint="check that its directory exists and is writable: SQLite "
                               "creates state.db-wal and state.db-shm beside the file")
    if name.startswith("SQLITE_IOERR"):
        return StoreError(f"I/O error on {path} ({name}: {exc})",
                          hint="check the disk and the file's permissions (dmesg may say "
                               "more), then run the command again")
    return StoreError(f"state store error on {path}: {exc}",
                      hint="if this persists, report it with the output of "
                           "`sqlite3 state.db 'PRAGMA integrity_check'`")


def lock_holders(path: Path) -> list[str]:
    """Other processes holding POSIX locks on state.db or its -shm, as 'pid N: command'.

    Linux only (/proc/locks); best effort, for the error message.
    """
    try:
        ids = set()
        for file in (path, path.with_name(path.name + "-shm")):
            st = file.stat()
            ids.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
        pids: list[int] = []
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            pid = int(fields[4]) if len(fields) > 5 and fields[4].isdigit() else -1
            if fields[5:6] and fields[5] in ids and pid not in (-1, os.getpid(), *pids):
                pids.append(pid)
        return [f"pid {p}: {_command(p)}" for p in pids]
    except (OSError, ValueError, IndexError):
        return []


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= 80 else text[:77] + "..."
