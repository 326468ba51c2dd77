"""Shared helpers for the benchmark scripts: timing, alternation, medians, results files.

The machine the benchmarks run on is small and noisy, so every figure they report is a
median, and every comparison is a ratio against a baseline measured in the same run,
interleaved with it (`alternate`), never an absolute time taken alone.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


def median(values: Sequence[float]) -> float:
    """The median of `values` (NaN for none, so a skipped case does not crash a table)."""
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and count of a sample, rounded for a results file."""
    if not values:
        return {"n": 0}
    return {"median": round(median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Pairwise ratios a[i] / b[i] of two samples taken in alternation."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def time_call(run: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def alternate(cases: Mapping[str, Callable[[], float]], rounds: int, *,
              progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run every case once per round, rotating which goes first; each case returns seconds.

    Interleaving puts the cases under the same background load, so the ratio of two cases
    taken in the same round is far steadier than either time alone.
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(cases[name]())
        if progress is not None:
            progress(f"round {index + 1}/{rounds}: " + ", ".join(
                f"{name} {samples[name][-1]:.3f}s" for name in names))
    return samples


class CommandFailed(RuntimeError):
    """A benchmarked command exited non-zero: its time would be meaningless."""


def run_command(argv: Sequence[str], *, cwd: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> tuple[float, int]:
    """Run `argv` with output discarded; (wall seconds, peak RSS of the child tree in KiB).

    The RSS comes from wait4() on this one child, so earlier children do not leak into it
    (as they would with getrusage(RUSAGE_CHILDREN)). stderr is kept for the error message.
    """
    elapsed, usage = measure_command(argv, cwd=cwd, env=env)
    return elapsed, usage.ru_maxrss


def measure_command(argv: Sequence[str], *, cwd: str | Path | None = None,
                    env: Mapping[str, str] | None = None) -> tuple[float, Any]:
    """Run `argv` with output discarded; (wall seconds, the child's rusage from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        tail = errors.decode(errors="replace").strip().splitlines()[-5:]
        raise CommandFailed(f"{' '.join(argv)} exited {proc.returncode} in {cwd}:\n  "
                            + "\n  ".join(tail))
    return elapsed, usage


class Code:
    """Which iacorch the benchmark measures, and how to point a child Python at it.

    Other people commit and edit the package while a long benchmark runs, so by default the
    package as committed at a ref (HEAD) is extracted once into a scratch directory and put
    first on the path: every run measures the same code, and the results name its commit.
    With `worktree=True` the installed (editable) work tree is measured, edits and all.
    """

    def __init__(self, scratch: Path, ref: str = "HEAD", worktree: bool = False) -> None:
        self.worktree = worktree
        self.path: Path | None = None
        found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref],
                               capture_output=True, text=True)
        self.commit = found.stdout.strip() or "unknown"
        if worktree:
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "iacorch"],
                                   capture_output=True, text=True).stdout.strip()
            self.describe = f"work tree at {self.commit}" + (" with local edits" if dirty else "")
            return
        self.path = scratch / f"iacorch-{self.commit}"
        self.path.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", self.commit, "iacorch"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(self.path)], input=archive, check=True)
        # Byte-compile as an installation would: with PYTHONDONTWRITEBYTECODE set, every run
        # would otherwise compile every module again (about 0.1 s of start-up).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(self.path)], check=True,
                       stdout=subprocess.DEVNULL)
        self.describe = f"commit {self.commit}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a child Python that imports this code."""
        env = dict(os.environ if base is None else base)
        if self.path is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.path), env.get("PYTHONPATH", "")) if p)
        return env

    def activate(self) -> None:
        """Make this process import this code (call before importing iacorch)."""
        if self.path is not None:
            sys.path.insert(0, str(self.path))
        if "iacorch" in sys.modules:
            raise RuntimeError("iacorch was imported before the code to measure was chosen")


def add_code_options(parser: Any) -> None:
    """--ref and --worktree, shared by the benchmark scripts."""
    parser.add_argument("--ref", default="HEAD",
                        help="measure the iacorch package as committed at this ref (default HEAD)")
    parser.add_argument("--worktree", action="store_true",
                        help="measure the installed work tree instead, uncommitted edits included")


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU, Python, OS, and the commit."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(),
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_results(name: str, code: Code, data: Mapping[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine and the measured code added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "code": code.describe, **data}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned numbers, for the terminal."""
    text = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for row in text:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: a case that did not run
            return "-"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)
