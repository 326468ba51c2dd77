"""The run store: runs, stage attempts, locks, approvals, drift and the audit log.

`open_store` picks the implementation from a URL; the sqlite and memory modules
load only when asked for.
"""

from __future__ import annotations

from pathlib import Path

from iacorch.errors import UsageError
from iacorch.project import state_dir
from iacorch.store.base import (
    KEEP,
    ApprovalRecord,
    AuditEntry,
    AuditVerification,
    DriftRecord,
    LockHolder,
    RunRecord,
    StageRecord,
    Store,
)

__all__ = ["KEEP", "ApprovalRecord", "AuditEntry", "AuditVerification", "DriftRecord",
           "LockHolder", "RunRecord", "StageRecord", "Store", "is_postgres_url", "open_store"]

STATE_FILE = "state.db"


def is_postgres_url(url: str) -> bool:
    """Whether `url` names a PostgreSQL store."""
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str | None = None, runbook: Path | None = None) -> Store:
    """Open the store named by `url`.

    None: `state.db` in the project's state directory (`iacorch.project.state_dir`,
    the project of `runbook`, else of the current directory). `sqlite:///abs/path.db` (like
    file:///), `sqlite://rel/path.db` or a plain path: that SQLite file.
    `memory://`: a MemoryStore, gone when the process ends.
    `postgresql://user@host:port/db` (or `postgres://`, any libpq URL): a PostgresStore
    shared by every host that opens the same URL (needs the [postgres] extra).
    """
    if url == "memory://":
        from iacorch.store.memory import MemoryStore

        return MemoryStore()
    if url is not None and is_postgres_url(url):
        from iacorch.store.postgres import PostgresStore

        return PostgresStore(url)
    if url is None:
        path = state_dir(runbook) / STATE_FILE
    elif url.startswith("sqlite://"):
        path = Path(url.removeprefix("sqlite://"))
    elif "://" in url:
        raise UsageError(f"unsupported store URL {url.split('://')[0]}://...",
                         hint="use sqlite:///path/to/state.db, a plain path, "
                              "postgresql://user@host/db, or memory://")
    else:
        path = Path(url)
    if not str(path) or str(path) == ".":
        raise UsageError(f"store URL {url!r} names no file",
                         hint="use sqlite:///path/to/state.db or a plain path")
    from iacorch.store.sqlite import SqliteStore

    # Stage transitions commit with NORMAL (they survive a killed process; a power cut can
    # cost the last few, which resume runs again); decisions and run boundaries ask for
    # transaction(durable=True), which also syncs everything committed before them.
    return SqliteStore(path.expanduser(), synchronous="NORMAL")
