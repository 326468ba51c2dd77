"""The PostgreSQL store's schema: versioned migrations applied once, under a lock.

The version lives in the one-row table `iacorch_schema` of the connection's current
schema (the first one on `search_path`). `upgrade` runs every missing migration in
one transaction while holding an advisory lock, so processes on several hosts that
open a new database at once apply each migration exactly once. A database stamped
by a newer iacorch, or one whose schema holds tables of the same names that are not
ours, is refused rather than altered.

Columns mirror state.db's (see iacorch.store.migrations): JSON stays text, so a row
reads back byte for byte as the codec wrote it and the audit digests stay stable;
`n` columns keep insertion order where SQLite's rowid does.
"""

from __future__ import annotations

from typing import Any

from iacorch.errors import StoreError

SCHEMA_TABLE = "iacorch_schema"

_V1 = (
    """CREATE TABLE runs (
        id TEXT PRIMARY KEY, n BIGINT GENERATED ALWAYS AS IDENTITY, runbook TEXT NOT NULL,
        runbook_path TEXT NOT NULL, workspace TEXT NOT NULL, plan_hash TEXT NOT NULL,
        vars TEXT NOT NULL, status TEXT NOT NULL, operation TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
        "user" TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, error TEXT,
        details TEXT NOT NULL)""",
    "CREATE INDEX runs_by_start ON runs (started_at, n)",
    "CREATE INDEX runs_by_runbook ON runs (runbook, workspace, operation, status, started_at)",
    """CREATE TABLE stages (
        n BIGINT GENERATED ALWAYS AS IDENTITY, run_id TEXT NOT NULL, stage_id TEXT NOT NULL,
        attempt INTEGER NOT NULL, phase TEXT NOT NULL, status TEXT NOT NULL,
        started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION, exit_code INTEGER,
        error TEXT, outputs TEXT NOT NULL, sensitive_outputs TEXT NOT NULL, changes TEXT,
        details TEXT NOT NULL,
        UNIQUE (run_id, phase, stage_id, attempt))""",
    """CREATE TABLE locks (
        key TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
        acquired_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL,
        lease_seconds DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE audit (
        seq BIGINT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
        run_id TEXT, stage_id TEXT, actor TEXT, data TEXT NOT NULL, prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    "CREATE INDEX audit_by_run ON audit (run_id, seq)",
    # Guards against mistakes, not against an attacker (who can drop them): the hash
    # chain is what detects tampering.
    """CREATE FUNCTION iacorch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
    """CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION iacorch_audit_append_only()""",
    """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION iacorch_audit_append_only()""",
    """CREATE TABLE approvals (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT NOT NULL,
        gate TEXT NOT NULL, identity TEXT NOT NULL, decision TEXT NOT NULL,
        plan_hash TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, comment TEXT,
        inputs TEXT NOT NULL)""",
    "CREATE INDEX approvals_by_run ON approvals (run_id, gate)",
    """CREATE TABLE drift (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id TEXT NOT NULL,
        runbook TEXT NOT NULL, workspace TEXT NOT NULL, stage_id TEXT NOT NULL,
        status TEXT NOT NULL, findings TEXT NOT NULL, fingerprint TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX drift_by_runbook ON drift (runbook, stage_id, time)",
)

_V2 = (
    # one row per event a trigger received: its first copy's run (Store.claim_delivery)
    """CREATE TABLE deliveries (
        source TEXT NOT NULL, delivery_id TEXT NOT NULL, run_id TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL, PRIMARY KEY (source, delivery_id))""",
)

_V3 = (
    # one row per stage attempt shipped to a worker pool (iacorch.store.pg_leases)
    """CREATE TABLE attempt_leases (
        attempt_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT NOT NULL,
        pool TEXT NOT NULL, rerunnable BOOLEAN NOT NULL, state TEXT NOT NULL,
        token BIGINT NOT NULL DEFAULT 0, worker TEXT, copies INTEGER NOT NULL DEFAULT 0,
        starts INTEGER NOT NULL DEFAULT 0,
        heartbeat_at DOUBLE PRECISION, lease_seconds DOUBLE PRECISION NOT NULL,
        cancel BOOLEAN NOT NULL DEFAULT FALSE, result TEXT,
        created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX attempt_leases_running ON attempt_leases (state, heartbeat_at)",
)

_V4 = (
    # API tokens of `iacorch serve`: only a SHA-256 of each token is kept (Store.add_token)
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY, "user" TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION)""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)
OUR_TABLES = ("runs", "stages", "locks", "audit", "approvals", "drift", "deliveries",
              "attempt_leases", "tokens")


ADVISORY_KEY = "hashtextextended(current_schema() || '/' || %s, 0)"
"""SQL for a 64-bit advisory lock key private to the current schema (placeholder: a name)."""


def upgrade(conn: Any, where: str) -> None:
    """Bring the current schema of `conn` (autocommit) to SCHEMA_VERSION, or refuse it."""
    with conn.transaction():
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            raise StoreError(f"{where}: the schema named by search_path does not exist",
                             hint="create it (CREATE SCHEMA ...) or drop `options=-csearch_path` "
                                  "from the store URL")
        conn.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_KEY})", ("migrate",))
        found = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))}
        if SCHEMA_TABLE not in found:
            if found & set(OUR_TABLES):
                raise StoreError(f"{where}: schema {schema!r} holds tables that are not an "
                                 "iacorch store (" + ", ".join(sorted(found & set(OUR_TABLES)))
                                 + ")", hint="point the store URL at another database or "
                                             "schema; iacorch will not modify this one")
            conn.execute(f"CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL)")
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
        version = conn.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where} was written by a newer iacorch (schema {version}; this "
                             f"one knows up to {SCHEMA_VERSION})",
                             hint="upgrade iacorch on this host to the version the others run")
        for steps in MIGRATIONS[version:]:
            for sql in steps:
                conn.execute(sql)
        if version != SCHEMA_VERSION:
            conn.execute(f"UPDATE {SCHEMA_TABLE} SET version = %s", (SCHEMA_VERSION,))
