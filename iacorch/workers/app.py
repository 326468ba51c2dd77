"""The Celery application both sides use: broker settings and the one task.

Delivery settings follow the leases' needs: a task is acknowledged only after it ran
(`acks_late`), a worker takes one task at a time per slot (`prefetch_multiplier=1`), a
task whose worker process died goes back to the queue (`reject_on_worker_lost`), and
Redis redelivers an unacknowledged task only after the visibility timeout, which must
outlast the longest stage (a shorter one costs waiting copies, never a second start).
"""

from __future__ import annotations

import os
from typing import Any

from iacorch.errors import UsageError

BROKER_ENV = "IACORCH_BROKER"
VISIBILITY_ENV = "IACORCH_VISIBILITY_TIMEOUT"
DEFAULT_VISIBILITY = 6 * 3600.0
TASK = "iacorch.run_attempt"
INSTALL_HINT = "install the extra: pip install 'iacorch[workers]'"


def queue_of(pool: str) -> str:
    """The Celery queue of a worker pool."""
    return f"pool-{pool}"


def visibility_timeout() -> float:
    """$IACORCH_VISIBILITY_TIMEOUT in seconds (the same on coordinators and workers)."""
    raw = os.environ.get(VISIBILITY_ENV)
    if not raw:
        return DEFAULT_VISIBILITY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(f"${VISIBILITY_ENV} must be a number of seconds above 0, not {raw!r}",
                         hint="set it at least as long as the longest stage timeout")
    return value


def make_app(broker_url: str) -> Any:
    """A Celery app on `broker_url` with the delivery settings above."""
    try:
        from celery import Celery
    except ImportError as exc:
        raise UsageError("running stages on workers needs Celery, which is not installed",
                         hint=INSTALL_HINT) from exc
    app = Celery("iacorch", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, worker_prefetch_multiplier=1, task_reject_on_worker_lost=True,
        # restore tasks of dead consumers at every idle poll (~1 s), not every tenth
        broker_transport_options={"visibility_timeout": visibility_timeout(),
                                  "unacked_restore_throttle": 1},
        task_ignore_result=True, task_serializer="json", accept_content=["json"],
        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
        worker_send_task_events=False, task_send_sent_event=False,
        broker_connection_max_retries=None)
    return app
