"""An attempt's log file: `StageLog` writes it where the attempt runs, `LogTail` reads
it while it grows (`iacorch logs -f`, and a coordinator showing a worker's output).
Each line is masked before it is written and starts with `HH:MM:SS `."""

from __future__ import annotations

import os
import time
from typing import TextIO


def log_path(work_dir: str, attempt: int) -> str:
    """Where attempt `attempt` of a stage whose work dir is `work_dir` writes its log."""
    return os.path.join(work_dir, f"attempt-{attempt}.log")


class StageLog:
    """The attempt's log file, created with its directory on the first line: most quiet
    stages never need either. A log that cannot be written is remembered, not raised, so
    the driver's output loop goes on; the attempt then fails saying so."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.error: OSError | None = None
        self._file: TextIO | None = None

    def write(self, line: str) -> None:
        if self.error is not None:
            return
        try:
            if self._file is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.error = self.error or exc


class LogTail:
    """The complete lines added to an attempt's log since the last call (the file may not
    exist yet); a line still being written waits for its newline."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._offset, self._partial = 0, b""

    def new_lines(self, *, final: bool = False) -> list[str]:
        """Lines as written, with their time prefix; `final`: a last unended line too."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [line.decode("utf-8", errors="replace") for line in lines]


def without_time(line: str) -> str:
    """A log line without the `HH:MM:SS ` prefix `StageLog` writes."""
    return line[9:] if line[2:3] == ":" and line[5:6] == ":" and line[8:9] == " " else line
