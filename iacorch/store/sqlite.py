"""The default Store: one SQLite file in WAL mode, safe across threads and processes.

Every write runs in a `BEGIN IMMEDIATE` transaction, so read-then-write steps
(lock takeover, audit append) are atomic across processes too. Every SQLite
failure surfaces as a StoreError saying what happened to which file and what
to do; a failed transaction is rolled back whole.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

from iacorch.errors import StoreError
from iacorch.model.status import RunStatus
from iacorch.store import audit as chain
from iacorch.store import base
from iacorch.store.base import (
    KEEP,
    AuditEntry,
    AuditVerification,
    Keep,
    LockHolder,
    RunRecord,
    TokenRecord,
)
from iacorch.store.migrations import (
    RESTORE_HINT,
    SCHEMA_VERSION,
    check_files,
    create_file,
    not_a_store,
    quick_check,
    schema_version,
    translate,
    upgrade,
)
from iacorch.store.sql import AUDIT, LOCK, STAGE, TOKEN, SqlQueries, insert

# state.db files this process has connections to (see SqliteStore._open)
_OPEN_HERE: Counter[Path] = Counter()
_OPEN_HERE_LOCK = threading.Lock()
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_PRAGMA_NAME = re.compile(r"^[a-z_]+$")





def _writable(path: Path) -> bool:
    """Whether SQLite can write the file and create its -wal and -shm beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


class SqliteStore(SqlQueries):
    """A Store in one SQLite file.

    `synchronous` FULL (the default) makes every commit survive power loss;
    NORMAL survives a killed process only (see bench/store.py for the cost).
    A file up to `quick_check_max_bytes` gets `PRAGMA quick_check` on open, so a
    damaged file is refused before anything is written to it (it costs about
    0.8 ms per MB; larger files are checked only as queries touch their pages).
    `pragmas` are applied last, per connection (tuning, or fault injection such
    as max_page_count in tests).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 busy_timeout: float = 5.0, quick_check_max_bytes: int = 32 * 2**20,
                 clock: Callable[[], float] = time.time,
                 pragmas: Mapping[str, int | str] | None = None) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = Path(path).absolute()
        self._file_key = Path(os.path.realpath(self.path))   # one file, however it is named
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._synchronous = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self.read_only = False
        try:
            self._conn = self._open(synchronous.upper(), quick_check_max_bytes,
                                    dict(pragmas or {}))
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._error(exc) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}",
                             hint="check the permissions of the file and its directory") from exc

    def _open(self, synchronous: str, quick_check_max_bytes: int,
              pragmas: dict[str, int | str]) -> sqlite3.Connection:
        with _OPEN_HERE_LOCK:
            if not _OPEN_HERE[self._file_key]:
                # Never while this process has the file open: closing any descriptor of it
                # drops every POSIX lock the process holds there (SQLite's own connections'
                # included), and another process would then take the WAL away.
                check_files(self.path)
            conn = self._connect(synchronous, quick_check_max_bytes, pragmas)
            _OPEN_HERE[self._file_key] += 1
            return conn

    def _connect(self, synchronous: str, quick_check_max_bytes: int,
                 pragmas: dict[str, int | str]) -> sqlite3.Connection:
        size = self.path.stat().st_size if self.path.exists() else 0
        if size and not _writable(self.path):
            return self._open_read_only(size <= quick_check_max_bytes)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {self.path.parent}: "
                             f"{exc.strerror}", hint="create it, or use --store") from exc
        if not self.path.exists():
            create_file(self.path)
        # mode=rw: SQLite never creates the file, so it never initialises one we did not make
        conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=rw", uri=True,
                               timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA cell_size_check = ON")  # catch damaged pages as they are read
            if schema_version(conn, self.path) == 0:  # before changing anything
                raise not_a_store(self.path)
            if 0 < size <= quick_check_max_bytes:
                quick_check(conn, self.path)
            journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if journal != "wal":
                raise StoreError(f"cannot use write-ahead logging for {self.path} "
                                 f"(journal mode stays {journal!r})",
                                 hint="keep state.db on a local file system, not NFS/SMB")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            upgrade(conn, self.path)
            for name, value in pragmas.items():
                if not _PRAGMA_NAME.match(name) or not re.match(r"^\w+$", str(value)):
                    raise ValueError(f"bad pragma {name}={value!r}")
                conn.execute(f"PRAGMA {name} = {value}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_read_only(self, check: bool) -> sqlite3.Connection:
        """A store on a read-only mount (or without write permission) for inspection.

        `runs`, `show`, `logs` and `audit verify` work; anything that writes fails
        with SQLite's read-only error, which names the cause. Without a write-ahead
        log to read, the file is opened as immutable: SQLite then needs no -shm file,
        which a read-only directory could not hold.
        """
        self.read_only = True
        wal = self.path.with_name(self.path.name + "-wal")
        immutable = "&immutable=1" if not wal.exists() or not wal.stat().st_size else ""
        conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro{immutable}", uri=True,
                               timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            version = schema_version(conn, self.path)
            if version == 0:
                raise not_a_store(self.path)
            if version != SCHEMA_VERSION:
                raise StoreError(f"{self.path} is read-only here and needs an upgrade to "
                                 "this iacorch's schema",
                                 hint="open it once where it is writable, or use the iacorch "
                                      "that wrote it")
            if check:
                quick_check(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    # --- plumbing -----------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error | UnicodeDecodeError) -> StoreError:
        if isinstance(exc, UnicodeDecodeError):
            # sqlite3 cannot decode the error text of a file whose schema bytes are damaged
            return StoreError(f"{self.path} is damaged: its schema text is not valid UTF-8",
                              hint=RESTORE_HINT)
        return translate(exc, self.path, self.busy_timeout)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the state store {self.path} is already closed",
                             hint="this is a bug in iacorch; please report it")
        return self._conn

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db().execute(sql, params)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._error(exc) from exc

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db().execute(sql, params).fetchall()
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise self._error(exc) from exc

    def _records(self, decode: Callable[[tuple[Any, ...]], Any], sql: str,
                 params: tuple[Any, ...] = ()) -> list[Any]:
        return [self._decode(decode, row) for row in self._rows(sql, params)]

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self.transaction():
            self._exec(sql, params)

    def _decode(self, decode: Callable[[Any], Any], raw: Any) -> Any:
        try:
            return decode(raw)
        except (ValueError, TypeError) as exc:  # JSON or enum text that no longer parses
            raise StoreError(f"{self.path} holds a damaged record: {exc}",
                             hint=RESTORE_HINT) from exc

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """Group the writes inside into one commit; roll all back on an exception.

        `durable=True` syncs this commit (and every earlier one) to disk even when the
        store runs with synchronous=NORMAL, so it survives power loss.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            upgrade = durable and self._synchronous != "FULL"
            if upgrade:
                self._exec("PRAGMA synchronous = FULL")
            self._exec("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._exec("COMMIT")
            except BaseException:
                self._rollback()
                raise
            finally:
                self._depth = 0
                if upgrade:
                    self._exec(f"PRAGMA synchronous = {self._synchronous}")

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            with suppress(sqlite3.Error):  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock, _OPEN_HERE_LOCK:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                _OPEN_HERE[self._file_key] -= 1

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        row = base.run_to_row(run)
        with self.transaction():
            if self._exec("SELECT 1 FROM runs WHERE id = ?", (run.id,)).fetchone():
                raise ValueError(f"run {run.id} already exists")
            self._exec(insert("runs", base.RUN_COLUMNS), row)

    def update_run(self, run_id: str, *, status: RunStatus,
                   finished_at: float | None | Keep = KEEP, error: str | None | Keep = KEEP,
                   details: Mapping[str, Any] | None = None) -> None:
        with self.transaction():
            found = self._exec("SELECT finished_at, error, details FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if found is None:
                raise base.run_not_found(run_id, [])
            merged = {**self._decode(json.loads, found[2]), **(details or {})}
            self._exec("UPDATE runs SET status = ?, finished_at = ?, error = ?, details = ? "
                       "WHERE id = ?",
                       (RunStatus(status).value, found[0] if finished_at is KEEP else finished_at,
                        found[1] if error is KEEP else error,
                        base.dump_json(merged, "run details"), run_id))

    # --- locks ----------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def get_lock(self, key: str) -> LockHolder | None:
        row = self._exec(f"SELECT {LOCK} FROM locks WHERE key = ?", (key,)).fetchone()
        return None if row is None else base.lock_from_row(row)

    def put_lock(self, holder: LockHolder) -> None:
        with self.transaction():
            self._exec(f"INSERT OR REPLACE INTO locks ({LOCK}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (holder.key, holder.run_id, holder.host, holder.pid, holder.acquired_at,
                        holder.heartbeat_at, holder.lease_seconds))

    def renew_lock(self, key: str, run_id: str) -> bool:
        with self.transaction():
            cur = self._exec("UPDATE locks SET heartbeat_at = ? WHERE key = ? AND run_id = ?",
                             (self._clock(), key, run_id))
            return cur.rowcount == 1

    def append_audit(self, kind: str, *, run_id: str | None = None,
                     stage_id: str | None = None, actor: str | None = None,
                     data: Mapping[str, Any] | None = None) -> AuditEntry:
        with self.transaction():
            last = self._exec("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            prev_seq, prev_hash = last if last else (0, chain.GENESIS_HASH)
            entry = chain.next_entry(prev_seq, prev_hash, kind, time=self._clock(),
                                     run_id=run_id, stage_id=stage_id, actor=actor, data=data)
            self._exec(insert("audit", base.AUDIT_COLUMNS),
                       (entry.seq, entry.time, entry.kind, entry.run_id, entry.stage_id,
                        entry.actor, chain.canonical_json(entry.data), entry.prev_hash,
                        entry.hash))
        return entry

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        with self._lock:
            outer = self._depth > 0
            if not outer:
                self._exec("BEGIN")  # one snapshot: a stage row and its audit entry together
            try:
                rows = self._rows(f"SELECT {AUDIT} FROM audit ORDER BY seq")
                stages = self._rows(f"SELECT {STAGE} FROM stages ORDER BY rowid")
            finally:
                if not outer:
                    self._rollback()
        return chain.verify_log((chain.entry_or_damaged(row) for row in rows), stages, head)

    # --- trigger deliveries -----------------------------------------------------------------

    def claim_delivery(self, source: str, delivery_id: str, run_id: str) -> str | None:
        """None for a new delivery, else the run its first copy started."""
        with self.transaction():
            self._exec("INSERT OR IGNORE INTO deliveries (source, delivery_id, run_id, time) "
                       "VALUES (?, ?, ?, ?)", (source, delivery_id, run_id, self.now()))
            first = self._exec("SELECT run_id FROM deliveries WHERE source = ? AND "
                               "delivery_id = ?", (source, delivery_id)).fetchone()[0]
        return None if first == run_id else str(first)

    # --- API tokens ---------------------------------------------------------------------------

    def revoke_token(self, token_id: str, now: float) -> TokenRecord | None:
        with self.transaction():
            self._exec("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                       (now, token_id))
            found = self._records(lambda row: TokenRecord(*row),
                                  f"SELECT {TOKEN} FROM tokens WHERE id = ?", (token_id,))
        return found[0] if found else None

