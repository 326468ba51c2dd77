"""The coordinator's Celery executor, with the broker and the store faked at their edges."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from iacorch.process import CancelToken
from iacorch.workers.executor import CeleryExecutor


class Broker:
    """A Celery app's producer pool: records connections, or fails like a broker that is down."""

    def __init__(self, down: bool = False) -> None:
        self.down, self.connected = down, threading.Event()

    @contextmanager
    def producer_or_acquire(self) -> Iterator[Any]:
        if self.down:
            raise ConnectionRefusedError("redis is down")
        yield SimpleNamespace(connection=SimpleNamespace(
            ensure_connection=lambda max_retries: self.connected.set()))


class Notices:
    """A LISTEN connection that never hears anything."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    @contextmanager
    def listen(self, channel: str) -> Iterator[Any]:
        yield SimpleNamespace(notifies=lambda: iter(lambda: self.stop.wait(), True))


def executor(broker: Broker) -> CeleryExecutor:
    leases: Any = SimpleNamespace(store=Notices())
    local: Any = SimpleNamespace()
    return CeleryExecutor(local, app=broker, leases=leases, pools={"web": "east"},
                          cancel=CancelToken(), lease_seconds=30.0)


def test_the_broker_is_connected_while_the_run_starts_not_at_its_first_send() -> None:
    broker = Broker()
    executor(broker)
    assert broker.connected.wait(5.0)


def test_a_broker_that_is_down_is_left_for_the_first_send_to_report(
        monkeypatch: pytest.MonkeyPatch) -> None:
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    executor(Broker(down=True))
    for thread in threading.enumerate():
        if thread.name == "broker-warm-up":
            thread.join(5.0)
    assert escaped == []
