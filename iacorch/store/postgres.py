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
from iacorch.store.pg_migrations import ADVISORY_KEY, upgrade
from iacorch.store.sql import AUDIT, LOCK, STAGE, TOKEN, SqlQueries, insert

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "install the extra: pip install 'iacorch[postgres]'"

_LOCK_UPSERT = (
    insert("locks", base.LOCK_COLUMNS).replace("?", "%s") + " ON CONFLICT (key) DO UPDATE SET "
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


class PostgresStore(SqlQueries):
    """A Store in a PostgreSQL database (the current schema of the URL's connection).

    `clock` replaces the database clock (tests move time by hand). `max_connections`
    bounds the pool: one per thread inside a transaction, plus short statements.
    """

    read_only = False
    PARAM, ORDER = "%s", "n"

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

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.query(sql, params)

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

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        row = base.run_to_row(run)
        added = self.changed(self._sql(insert("runs", base.RUN_COLUMNS)) + " "
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
        rows = self.query(f"SELECT {LOCK} FROM locks WHERE key = %s", (key,))
        return base.lock_from_row(rows[0]) if rows else None

    def put_lock(self, holder: LockHolder) -> None:
        self.query(_LOCK_UPSERT, (holder.key, holder.run_id, holder.host, holder.pid,
                                  holder.acquired_at, holder.heartbeat_at,
                                  holder.lease_seconds))

    def renew_lock(self, key: str, run_id: str) -> bool:
        with self.transaction():
            return self.changed("UPDATE locks SET heartbeat_at = %s WHERE key = %s "
                               "AND run_id = %s", (self.now(), key, run_id)) == 1

    def append_audit(self, kind: str, *, run_id: str | None = None,
                     stage_id: str | None = None, actor: str | None = None,
                     data: Mapping[str, Any] | None = None) -> AuditEntry:
        with self.transaction():
            self._serialize("audit")  # one writer at a time extends the chain, on any host
            last = self.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            prev_seq, prev_hash = last[0] if last else (0, chain.GENESIS_HASH)
            entry = chain.next_entry(prev_seq, prev_hash, kind, time=self.now(),
                                     run_id=run_id, stage_id=stage_id, actor=actor, data=data)
            self.query(self._sql(insert("audit", base.AUDIT_COLUMNS)),
                       (entry.seq, entry.time, entry.kind, entry.run_id, entry.stage_id,
                        entry.actor, chain.canonical_json(entry.data), entry.prev_hash,
                        entry.hash))
        return entry

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        outer = getattr(self._local, "conn", None) is not None
        with self.transaction():
            if not outer:  # one snapshot: a stage row and its audit entry together
                self.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = self.query(f"SELECT {AUDIT} FROM audit ORDER BY seq")
            stages = self.query(f"SELECT {STAGE} FROM stages ORDER BY n")
        return chain.verify_log((chain.entry_or_damaged(row) for row in rows), stages, head)

    # --- trigger deliveries -----------------------------------------------------------------

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

    def revoke_token(self, token_id: str, now: float) -> TokenRecord | None:
        """Mark the token revoked; a later call keeps the first time."""
        found = self._records(
            lambda row: TokenRecord(*row),
            f"UPDATE tokens SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s "
            f"RETURNING {TOKEN}", (now, token_id))
        return found[0] if found else None
