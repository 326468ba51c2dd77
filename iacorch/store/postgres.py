"""A Store in PostgreSQL, shared by every host that runs or inspects iacorch.

Connections come from a psycopg_pool pool. A `transaction()` binds one pooled
connection to the calling thread until it ends (nested blocks join it); any other
call takes a connection for one autocommit statement. Read-then-write steps are
serialized across processes and hosts with transaction-scoped advisory locks: one
for the audit chain's tail, one per lock key (so `acquire_lock`'s read and write
happen under it; the take-over rule itself stays in store.base). Leases are judged
by the database's clock, the one clock every host shares.

psycopg is an optional extra: this module is imported only for postgresql:// URLs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from iacorch.errors import StoreError
from iacorch.model.status import Phase, RunStatus
from iacorch.store import audit as chain
from iacorch.store import base
from iacorch.store.base import (
    KEEP,
    ApprovalRecord,
    AuditEntry,
    AuditVerification,
    DriftRecord,
    Keep,
    LockHolder,
    RunRecord,
    StageRecord,
    TokenRecord,
)
from iacorch.store.pg_migrations import ADVISORY_KEY, upgrade

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "install the extra: pip install 'iacorch[postgres]'"


def _cols(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _marks(names: tuple[str, ...]) -> str:
    return ", ".join(["%s"] * len(names))


_RUN, _STAGE, _LOCK = _cols(base.RUN_COLUMNS), _cols(base.STAGE_COLUMNS), _cols(base.LOCK_COLUMNS)
_AUDIT, _APPROVAL = _cols(base.AUDIT_COLUMNS), _cols(base.APPROVAL_COLUMNS)
_DRIFT, _TOKEN = _cols(base.DRIFT_COLUMNS), _cols(base.TOKEN_COLUMNS)
_STAGE_UPSERT = (
    f"INSERT INTO stages ({_STAGE}) VALUES ({_marks(base.STAGE_COLUMNS)}) "
    "ON CONFLICT (run_id, phase, stage_id, attempt) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in base.STAGE_COLUMNS[4:]))
_LOCK_UPSERT = (
    f"INSERT INTO locks ({_LOCK}) VALUES ({_marks(base.LOCK_COLUMNS)}) "
    "ON CONFLICT (key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in base.LOCK_COLUMNS[1:]))
_DB_CLOCK = "extract(epoch FROM clock_timestamp())::float8"


_IDLE_CHECK = 1.0   # seconds idle after which a pooled connection is pinged before use


def _stamp_idle(conn: psycopg.Connection[Any]) -> None:
    conn._iacorch_idle_since = time.monotonic()  # type: ignore[attr-defined]


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """Ping a connection that sat idle (the server may have restarted meanwhile); one
    used a moment ago is as good as a ping, which would double every round trip."""
    if time.monotonic() - getattr(conn, "_iacorch_idle_since", 0.0) > _IDLE_CHECK:
        conn.execute("")


def describe(url: str) -> str:
    """The URL as it may be shown: user, host, port and database, never a password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a URL libpq cannot parse still needs a safe name
        return "postgresql://(unparsable URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


class PostgresStore:
    """A Store in a PostgreSQL database (the current schema of the URL's connection).

    `clock` replaces the database clock (tests move time by hand). `max_connections`
    bounds the pool: one per thread inside a transaction, plus short statements.
    """

    read_only = False

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None,
                 max_connections: int = 8, connect_timeout: float = 10.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise StoreError("a postgresql:// store needs psycopg, which is not installed",
                             hint=INSTALL_HINT) from exc
        self.where = describe(url)
        self._clock = clock
        self._local = threading.local()
        self._psycopg = psycopg
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "iacorch",
                                  "connect_timeout": max(1, round(connect_timeout))}
        self._url, self._connect_kwargs = url, {k: v for k, v in kwargs.items()
                                                if k != "autocommit"}
        with self._errors():
            with psycopg.connect(url, **kwargs) as conn:  # fails fast, with libpq's reason
                upgrade(conn, self.where)
            self._pool = ConnectionPool(url, kwargs=kwargs, min_size=1,
                                        max_size=max(2, max_connections), open=True,
                                        check=_check_if_idle, reset=_stamp_idle,
                                        timeout=connect_timeout, name="iacorch")

    # --- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn psycopg and pool failures into StoreErrors that name the store, not its
        password."""
        from psycopg_pool import PoolTimeout

        try:
            yield
        except PoolTimeout as exc:
            raise StoreError(f"no connection to the PostgreSQL store {self.where} within "
                             f"the pool's timeout ({exc})",
                             hint="check that the server is up and reachable from this host, "
                                  "and that max_connections leaves room") from None
        except self._psycopg.OperationalError as exc:
            raise StoreError(f"cannot use the PostgreSQL store {self.where}: "
                             f"{str(exc).strip()}",
                             hint="check that the server is up and reachable from this host, "
                                  "and the URL's user, database and password") from None
        except self._psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store error on {self.where}: {str(exc).strip()}",
                             hint="if this persists, report it with the server's log") from None

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        bound = getattr(self._local, "conn", None)
        if bound is not None:
            yield bound
            return
        with self._errors(), self._pool.connection() as conn:
            yield conn

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (in this thread's transaction, if any); its rows, if any.

        For modules that keep their own tables in this database (pg_leases)."""
        with self._errors(), self._conn() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def changed(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; how many rows it changed."""
        with self._errors(), self._conn() as conn:
            return conn.execute(sql, params).rowcount

    def _records(self, decode: Callable[[tuple[Any, ...]], Any], sql: str,
                 params: tuple[Any, ...] = ()) -> list[Any]:
        return [self._decode(decode, row) for row in self.query(sql, params)]

    def _decode(self, decode: Callable[[Any], Any], raw: Any) -> Any:
        try:
            return decode(raw)
        except (ValueError, TypeError) as exc:  # JSON or enum text that no longer parses
            raise StoreError(f"{self.where} holds a damaged record: {exc}",
                             hint="restore the database from a backup") from exc

    def listen(self, channel: str) -> psycopg.Connection[Any]:
        """A connection of its own (not pooled) that LISTENs on `channel`; the caller
        reads `notifies()` from it and closes it."""
        with self._errors():
            conn = self._psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)
            conn.execute(f"LISTEN {channel}")
        return conn

    def _serialize(self, name: str) -> None:
        """Hold the advisory lock `name` until the enclosing transaction ends."""
        self.query(f"SELECT pg_advisory_xact_lock({ADVISORY_KEY})", (name,))

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """One commit for the writes inside, on one connection bound to this thread.

        Every PostgreSQL commit is durable (synchronous_commit), so `durable` asks
        nothing more. Other threads run their own transactions meanwhile.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._errors(), self._pool.connection() as conn:
            self._local.conn = conn
            try:
                with conn.transaction():
                    yield
            finally:
                self._local.conn = None

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        row = base.run_to_row(run)
        added = self.changed(f"INSERT INTO runs ({_RUN}) VALUES ({_marks(base.RUN_COLUMNS)}) "
                            "ON CONFLICT (id) DO NOTHING", row)
        if not added:
            raise ValueError(f"run {run.id} already exists")

    def update_run(self, run_id: str, *, status: RunStatus,
                   finished_at: float | None | Keep = KEEP, error: str | None | Keep = KEEP,
                   details: Mapping[str, Any] | None = None) -> None:
        with self.transaction():
            found = self.query("SELECT finished_at, error, details FROM runs WHERE id = %s "
                               "FOR UPDATE", (run_id,))
            if not found:
                raise base.run_not_found(run_id, [])
            old_finished, old_error, old_details = found[0]
            merged = {**self._decode(json.loads, old_details), **(details or {})}
            self.query("UPDATE runs SET status = %s, finished_at = %s, error = %s, "
                       "details = %s WHERE id = %s",
                       (RunStatus(status).value,
                        old_finished if finished_at is KEEP else finished_at,
                        old_error if error is KEEP else error,
                        base.dump_json(merged, "run details"), run_id))

    def get_run(self, run_id: str) -> RunRecord:
        found = self._records(base.run_from_row, f"SELECT {_RUN} FROM runs WHERE id = %s",
                              (run_id,))
        if not found and run_id:
            found = self._records(base.run_from_row,
                                  f"SELECT {_RUN} FROM runs WHERE left(id, %s) = %s "
                                  "ORDER BY started_at DESC LIMIT 6", (len(run_id), run_id))
        if len(found) != 1:
            raise base.run_not_found(run_id, [r.id for r in found])
        return found[0]

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
                  operation: str | None = None,
                  status: RunStatus | None = None) -> list[RunRecord]:
        filters = {"runbook": runbook, "operation": operation,
                   "status": None if status is None else RunStatus(status).value}
        used = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = %s" for k in used) or "TRUE"
        return self._records(base.run_from_row,
                             f"SELECT {_RUN} FROM runs WHERE {where} "
                             "ORDER BY started_at DESC, n DESC LIMIT %s",
                             (*used.values(), limit))

    def last_successful_run(self, runbook: str, workspace: str,
                            operation: str = "apply") -> RunRecord | None:
        found = self._records(base.run_from_row,
                              f"SELECT {_RUN} FROM runs WHERE runbook = %s AND workspace = %s "
                              "AND operation = %s AND status = %s "
                              "ORDER BY started_at DESC, n DESC LIMIT 1",
                              (runbook, workspace, operation, RunStatus.SUCCEEDED.value))
        return found[0] if found else None

    # --- stages ---------------------------------------------------------------------------

    def record_stage(self, record: StageRecord) -> None:
        self.query(_STAGE_UPSERT, base.stage_to_row(record))

    def stage_records(self, run_id: str,
                      phase: Phase = Phase.FORWARD) -> dict[str, StageRecord]:
        base.check_phase(phase)
        return base.latest_attempts(self._records(
            base.stage_from_row,
            f"SELECT {_STAGE} FROM stages WHERE run_id = %s AND phase = %s ORDER BY n",
            (run_id, Phase(phase).value)))

    def stage_attempts(self, run_id: str, stage_id: str) -> list[StageRecord]:
        return self._records(base.stage_from_row,
                             f"SELECT {_STAGE} FROM stages WHERE run_id = %s "
                             "AND stage_id = %s ORDER BY phase <> 'forward', attempt",
                             (run_id, stage_id))

    # --- locks ----------------------------------------------------------------------------

    def now(self) -> float:
        """The database's clock (every host judges leases by it), unless a clock was given."""
        if self._clock is not None:
            return self._clock()
        return float(self.query(f"SELECT {_DB_CLOCK}")[0][0])

    def now_sql(self) -> tuple[str, tuple[Any, ...]]:
        """`now()` as an SQL expression and its parameters: a statement that stamps a
        time then needs no round trip of its own to read the clock."""
        if self._clock is not None:
            return "%s", (self._clock(),)
        return _DB_CLOCK, ()

    def get_lock(self, key: str) -> LockHolder | None:
        """The holder of `key`; inside a transaction, the key stays ours until it ends,
        so a read-then-`put_lock` (acquire_lock) is atomic across hosts."""
        if getattr(self._local, "conn", None) is not None:
            self._serialize("lock/" + key)
        rows = self.query(f"SELECT {_LOCK} FROM locks WHERE key = %s", (key,))
        return base.lock_from_row(rows[0]) if rows else None

    def put_lock(self, holder: LockHolder) -> None:
        self.query(_LOCK_UPSERT, (holder.key, holder.run_id, holder.host, holder.pid,
                                  holder.acquired_at, holder.heartbeat_at,
                                  holder.lease_seconds))

    def renew_lock(self, key: str, run_id: str) -> bool:
        with self.transaction():
            return self.changed("UPDATE locks SET heartbeat_at = %s WHERE key = %s "
                               "AND run_id = %s", (self.now(), key, run_id)) == 1

    def release_lock(self, key: str, run_id: str) -> None:
        self.query("DELETE FROM locks WHERE key = %s AND run_id = %s", (key, run_id))

    def force_unlock(self, key: str, *, actor: str, reason: str) -> LockHolder | None:
        with self.transaction():
            holder = self.get_lock(key)
            if holder is not None:
                self.query("DELETE FROM locks WHERE key = %s", (key,))
                self.append_audit("force_unlock", run_id=holder.run_id, actor=actor,
                                  data={"reason": reason, **base.lock_audit_data(holder)})
        return holder

    def list_locks(self) -> list[LockHolder]:
        return self._records(base.lock_from_row, f"SELECT {_LOCK} FROM locks ORDER BY key")

    # --- audit ----------------------------------------------------------------------------

    def append_audit(self, kind: str, *, run_id: str | None = None,
                     stage_id: str | None = None, actor: str | None = None,
                     data: Mapping[str, Any] | None = None) -> AuditEntry:
        with self.transaction():
            self._serialize("audit")  # one writer at a time extends the chain, on any host
            last = self.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            prev_seq, prev_hash = last[0] if last else (0, chain.GENESIS_HASH)
            entry = chain.next_entry(prev_seq, prev_hash, kind, time=self.now(),
                                     run_id=run_id, stage_id=stage_id, actor=actor, data=data)
            self.query(f"INSERT INTO audit ({_AUDIT}) VALUES ({_marks(base.AUDIT_COLUMNS)})",
                       (entry.seq, entry.time, entry.kind, entry.run_id, entry.stage_id,
                        entry.actor, chain.canonical_json(entry.data), entry.prev_hash,
                        entry.hash))
        return entry

    def audit_entries(self, *, run_id: str | None = None) -> list[AuditEntry]:
        if run_id is None:
            return self._records(base.audit_from_row,
                                 f"SELECT {_AUDIT} FROM audit ORDER BY seq")
        return self._records(base.audit_from_row,
                             f"SELECT {_AUDIT} FROM audit WHERE run_id = %s ORDER BY seq",
                             (run_id,))

    def audit_head(self, *, run_id: str | None = None) -> AuditEntry | None:
        where, params = ("WHERE run_id = %s ", (run_id,)) if run_id is not None else ("", ())
        found = self._records(base.audit_from_row, f"SELECT {_AUDIT} FROM audit {where}"
                              "ORDER BY seq DESC LIMIT 1", params)
        return found[0] if found else None

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        outer = getattr(self._local, "conn", None) is not None
        with self.transaction():
            if not outer:  # one snapshot: a stage row and its audit entry together
                self.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = self.query(f"SELECT {_AUDIT} FROM audit ORDER BY seq")
            stages = self.query(f"SELECT {_STAGE} FROM stages ORDER BY n")
        return chain.verify_log((chain.entry_or_damaged(row) for row in rows), stages, head)

    # --- approvals and drift --------------------------------------------------------------

    def record_approval(self, approval: ApprovalRecord) -> None:
        """Store a decision; the caller audits it in the same transaction()."""
        self.query(f"INSERT INTO approvals ({_APPROVAL}) "
                   f"VALUES ({_marks(base.APPROVAL_COLUMNS)})", base.approval_to_row(approval))

    def approvals(self, run_id: str, gate: str | None = None) -> list[ApprovalRecord]:
        where, params = ("run_id = %s", (run_id,)) if gate is None else (
            "run_id = %s AND gate = %s", (run_id, gate))
        return self._records(base.approval_from_row,
                             f"SELECT {_APPROVAL} FROM approvals WHERE {where} "
                             "ORDER BY time, id", params)

    def record_drift(self, record: DriftRecord) -> None:
        self.query(f"INSERT INTO drift ({_DRIFT}) VALUES ({_marks(base.DRIFT_COLUMNS)})",
                   base.drift_to_row(record))

    def drift_history(self, runbook: str, *, stage_id: str | None = None,
                      limit: int = 50) -> list[DriftRecord]:
        where, params = ("runbook = %s", (runbook,)) if stage_id is None else (
            "runbook = %s AND stage_id = %s", (runbook, stage_id))
        return self._records(base.drift_from_row,
                             f"SELECT {_DRIFT} FROM drift WHERE {where} "
                             "ORDER BY time DESC, id DESC LIMIT %s", (*params, limit))

    def claim_delivery(self, source: str, delivery_id: str, run_id: str) -> str | None:
        """None for a new delivery, else the run its first copy started.

        A racing copy's INSERT waits on the first one's uncommitted row, then reads it.
        """
        with self.transaction():
            self.query("INSERT INTO deliveries (source, delivery_id, run_id, time) "
                       "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                       (source, delivery_id, run_id, self.now()))
            first = self.query("SELECT run_id FROM deliveries WHERE source = %s AND "
                               "delivery_id = %s", (source, delivery_id))[0][0]
        return None if first == run_id else str(first)

    # --- API tokens -------------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        self.query(f"INSERT INTO tokens ({_TOKEN}) VALUES ({_marks(base.TOKEN_COLUMNS)})",
                   (token.id, token.user, token.token_hash, token.created_at,
                    token.expires_at, token.revoked_at))

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        found = self._records(lambda row: TokenRecord(*row),
                              f"SELECT {_TOKEN} FROM tokens WHERE token_hash = %s",
                              (token_hash,))
        return found[0] if found else None

    def list_tokens(self) -> list[TokenRecord]:
        return self._records(lambda row: TokenRecord(*row),
                             f"SELECT {_TOKEN} FROM tokens ORDER BY created_at, id")

    def revoke_token(self, token_id: str, now: float) -> TokenRecord | None:
        """Mark the token revoked; a later call keeps the first time."""
        found = self._records(
            lambda row: TokenRecord(*row),
            f"UPDATE tokens SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s "
            f"RETURNING {_TOKEN}", (now, token_id))
        return found[0] if found else None
