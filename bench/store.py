"""What a stage transition costs in state.db, and what checking the file on open costs.

    python bench/store.py [--dir DIR] [--transitions 400] [--rounds 7] [--batch 10]

A transition is one `record_stage` (pending -> running -> succeeded are three).
It is measured with `PRAGMA synchronous` NORMAL and FULL, each committed on its
own and grouped `--batch` at a time in `transaction()`. The files live in a
temporary directory under --dir (default: the current directory), so the
numbers are for the disk that would hold .iacorch/state.db. Results go to
bench/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iacorch.model.status import RunStatus, StageStatus
from iacorch.store.base import RunRecord, StageRecord
from iacorch.store.sqlite import SqliteStore

RESULTS = Path(__file__).parent / "results" / "store.json"
STATUSES = (StageStatus.PENDING, StageStatus.RUNNING, StageStatus.SUCCEEDED)


def _run(run_id: str) -> RunRecord:
    return RunRecord(id=run_id, runbook="webapp", runbook_path="plans/webapp.yaml",
                     workspace="prod", plan_hash="0" * 64, vars={"env": "prod"},
                     status=RunStatus.RUNNING, operation="apply", started_at=time.time())


def _transition(run_id: str, n: int) -> StageRecord:
    return StageRecord(run_id=run_id, stage_id=f"stage{n // 3}", attempt=1,
                       status=STATUSES[n % 3], started_at=time.time(),
                       outputs={"address": "10.0.0.7", "inventory": "web-1,web-2"},
                       details={"log": f".iacorch/runs/{run_id}/stage{n // 3}/log"})


def per_transition_us(path: Path, synchronous: str, batch: int, transitions: int) -> float:
    """Microseconds per record_stage, averaged over one round of `transitions`."""
    store = SqliteStore(path, synchronous=synchronous)
    run_id = f"run-{time.monotonic_ns()}"
    store.create_run(_run(run_id))
    started = time.perf_counter()
    for first in range(0, transitions, batch):
        with store.transaction():
            for n in range(first, min(first + batch, transitions)):
                store.record_stage(_transition(run_id, n))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed / transitions * 1e6


def open_cost_ms(path: Path, runs: int, rounds: int) -> dict[str, float]:
    """Median open time of a state.db holding `runs` runs of 10 stages, with/without check."""
    store = SqliteStore(path, synchronous="OFF")
    with store.transaction():
        for i in range(runs):
            run_id = f"run{i:08d}"
            store.create_run(_run(run_id))
            for n in range(30):
                store.record_stage(_transition(run_id, n))
            store.append_audit("run_finished", run_id=run_id, data={"status": "succeeded"})
    store.close()
    found: dict[str, float] = {"runs": runs, "mb": round(path.stat().st_size / 1e6, 1)}
    for label, limit in (("no_check_ms", 0), ("quick_check_ms", 2**62)):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            SqliteStore(path, quick_check_max_bytes=limit).close()
            times.append((time.perf_counter() - started) * 1e3)
        found[label] = round(statistics.median(times), 2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--transitions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--open-runs", default="100,1000", help="state.db sizes, in runs")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="iacorch-bench-") as tmp:
        for synchronous in ("NORMAL", "FULL"):
            for batch in (1, args.batch):
                path = Path(tmp) / f"{synchronous}-{batch}.db"
                samples = [per_transition_us(path, synchronous, batch, args.transitions)
                           for _ in range(args.rounds)]
                rows.append({"synchronous": synchronous, "batch": batch,
                             "median_us": round(statistics.median(samples), 1),
                             "min_us": round(min(samples), 1),
                             "max_us": round(max(samples), 1)})
        opens = [open_cost_ms(Path(tmp) / f"open-{n}.db", int(n), args.rounds)
                 for n in args.open_runs.split(",")]

    print(f"record_stage cost per transition ({args.transitions} transitions x "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f})")
    print(f"{'synchronous':<12}{'batch':>6}{'median µs':>12}{'min µs':>10}{'max µs':>10}")
    for row in rows:
        print(f"{row['synchronous']:<12}{row['batch']:>6}{row['median_us']:>12}"
              f"{row['min_us']:>10}{row['max_us']:>10}")
    print("\nopening state.db (median ms)")
    print(f"{'runs':>7}{'MB':>7}{'no check':>10}{'quick_check':>13}")
    for row in opens:
        print(f"{row['runs']:>7}{row['mb']:>7}{row['no_check_ms']:>10}{row['quick_check_ms']:>13}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "store",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
        "machine": platform.platform(), "dir": str(args.dir),
        "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
        "transitions": args.transitions, "rounds": args.rounds,
        "record_stage": rows, "open": opens,
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
