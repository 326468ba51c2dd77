"""One active run per runbook and workspace: a lease in the store, renewed by a heartbeat."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from iacorch.errors import LockedError
from iacorch.store.base import LockHolder, Store, acquire_lock

LEASE_SECONDS = 60.0


def lock_key(runbook: str, workspace: str) -> str:
    return f"{runbook}/{workspace}"


def _describe(holder: LockHolder) -> str:
    since = datetime.fromtimestamp(holder.acquired_at).strftime("%Y-%m-%d %H:%M:%S")
    return f"run {holder.run_id} (pid {holder.pid} on {holder.host}, since {since})"


class RunLock:
    """Holds the lock for a run; a daemon thread renews the lease until release."""

    def __init__(self, store: Store, key: str, run_id: str, *, host: str, pid: int,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.store, self.key, self.run_id = store, key, run_id
        self.host, self.pid, self.lease_seconds = host, pid, lease_seconds
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds; LockedError (exit 5) names the holder."""
        deadline = time.monotonic() + wait
        while True:
            holder = acquire_lock(self.store, self.key, self.run_id, host=self.host, pid=self.pid,
                                             lease_seconds=self.lease_seconds)
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"{self.key} is locked by {_describe(holder)}; run {self.run_id} was not "
                    "started and nothing of it was recorded",
                    hint="wait for it, pass --lock-timeout 10m to queue behind it, or, if that "
                         f"run is gone, `iacorch unlock {self.key} --reason TEXT`")
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        self._heartbeat = threading.Thread(target=self._renew, name="lock-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.store.renew_lock(self.key, self.run_id)
            except Exception:  # noqa: BLE001 - a missed heartbeat must not kill the run
                continue

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self.store.release_lock(self.key, self.run_id)
