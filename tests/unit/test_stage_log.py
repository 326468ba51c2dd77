"""An attempt's log read while it grows: by `iacorch logs -f` and by a coordinator
showing the output of its attempts on workers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from iacorch.engine.stage_log import LogTail, StageLog, without_time
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.results import StageSpec
from iacorch.model.status import Operation
from iacorch.workers.output import AttemptOutput

SECRET = "s3cr3t-log-token"


def test_a_tail_returns_each_complete_line_once(tmp_path: Path) -> None:
    log = tmp_path / "attempt-1.log"
    tail = LogTail(log)
    assert tail.new_lines() == []  # no file yet
    log.write_bytes(b"one\ntw")
    assert tail.new_lines() == ["one"]
    with open(log, "ab") as handle:
        handle.write("o caf\u00e9".encode()[:-1])  # cut inside the two bytes of e-acute
    assert tail.new_lines() == []
    with open(log, "ab") as handle:
        handle.write("\u00e9".encode()[-1:] + b"\nthree")
    assert tail.new_lines() == ["two caf\u00e9"]
    assert tail.new_lines(final=True) == ["three"]
    assert tail.new_lines(final=True) == []


def test_the_time_prefix_the_writer_adds_is_removed_and_nothing_else(tmp_path: Path) -> None:
    writer = StageLog(str(tmp_path / "attempt-1.log"))
    writer.write("12:00:00 looks like a time")
    writer.close()
    (line,) = LogTail(tmp_path / "attempt-1.log").new_lines()
    assert without_time(line) == "12:00:00 looks like a time"
    assert without_time("no prefix") == "no prefix"


def spec(tmp_path: Path) -> StageSpec:
    return StageSpec(run_id="r1", stage_id="web", driver="shell", operation=Operation.APPLY,
                     action={}, root_dir=str(tmp_path), work_dir=str(tmp_path / "web"),
                     state_dir=str(tmp_path), attempt=2)


def test_output_of_an_attempt_elsewhere_is_shown_as_written_and_masked(
        tmp_path: Path) -> None:
    events: list[Event] = []
    shown = threading.Event()

    def emit(event: Event) -> None:
        events.append(event)
        shown.set()

    output = AttemptOutput(emit, interval=0.01)
    output.follow("a1", spec(tmp_path), Masker([SECRET]))
    writer = StageLog(str(tmp_path / "web" / "attempt-2.log"))
    writer.write(f"token={SECRET}")
    assert shown.wait(5.0)  # while the attempt still runs
    writer.write("last line")
    writer.close()
    output.done("a1")
    lines = [e.data["line"] for e in events]
    assert lines == ["token=***", "last line"]
    assert {(e.kind, e.run_id, e.stage_id) for e in events} == {(EventKind.STAGE_LOG, "r1",
                                                                 "web")}
    with open(tmp_path / "web" / "attempt-2.log", "a") as handle:
        handle.write("after done\n")
    time.sleep(0.05)
    assert len(events) == 2  # no longer followed
