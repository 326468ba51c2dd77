"""Distributed benchmark: stages on `iacorch worker` processes over Redis, leases in PostgreSQL.

    python bench/distributed.py [--long] [--stacks N] [--rounds 5] [--trials 50]

Starts a throwaway PostgreSQL 15 cluster and redis-server on free loopback ports, and
real `iacorch worker --pool bench` processes. Three figures, each against a baseline
measured in the same run:

- overhead: chains of 5 and 105 no-op shell stages, `apply` with every stage on a worker
  (through Celery) vs the local executor, all four in alternation; a stage's cost is the
  slope (long - short) / 100, the per-stage overhead the median over rounds of the celery
  slope minus the local one (target <= 5 ms); what a run pays once is reported apart.
- drift: `iacorch drift` of N Terraform stacks (terraform_data; 200, 1,000 with --long)
  on 2 workers x concurrency 1 vs `xargs -P2` running the same terraform commands per
  stack (init with a fresh TF_DATA_DIR, plan -refresh-only, plan), in alternation;
  target <= 1.15x; the stages each worker ran are reported.
- fencing: --trials runs of a one-stage runbook whose tool appends to a ledger, with
  workers whose visibility timeout is 1 s (tasks are redelivered while they run); in
  about half the trials the worker running the tool is killed with SIGKILL mid-tool
  and replaced. Counted: ledger lines per trial (a duplicate start is a trial with
  more than one), redelivered copies, and for kills the seconds from the kill until
  the coordinator had the stage marked (target: lease + 15 s).

Writes bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Code,
    add_code_options,
    alternate,
    log,
    run_command,
    spread,
    table,
    write_results,
)

sys.path.insert(0, str(REPO))
from tests.services import PostgresCluster, RedisServer  # noqa: E402

CHAIN = (5, 105)    # stages in the short and the long chain
LEASE = 1.0
STACK = (REPO / "tests/integration/fixtures/terraform/label/main.tf").read_text()


class Setup:
    """The store, the broker, a scratch project and the workers of pool `bench`."""

    def __init__(self, root: Path, code: Code) -> None:
        self.root, self.code = root, code
        self.pg, self.redis = PostgresCluster(), RedisServer()
        self.pg.sql("CREATE DATABASE bench")
        (root / ".git").mkdir(parents=True)
        self.env = code.env({**os.environ, "IACORCH_STORE": self.pg.url("bench"),
                             "IACORCH_SHARED_DIR": str(root / "shared"),
                             "IACORCH_HOME": str(root / "home"), "IACORCH_USER": "bench",
                             "IACORCH_WORKER_LEASE": str(LEASE),
                             "IACORCH_VISIBILITY_TIMEOUT": "3600"})
        self.workers: list[subprocess.Popen[bytes]] = []

    def broker_env(self) -> dict[str, str]:
        return {**self.env, "IACORCH_BROKER": self.redis.url}

    def start_worker(self, visibility: float = 3600) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iacorch", "worker", "--pool", "bench"],
            env={**self.broker_env(), "IACORCH_VISIBILITY_TIMEOUT": str(visibility)},
            cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers = []

    def iacorch(self, *args: str, broker: bool) -> float:
        env = self.broker_env() if broker else self.env
        seconds, _ = run_command([sys.executable, "-m", "iacorch", *args], cwd=self.root,
                                 env=env)
        return seconds

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.pg.url("bench"), autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def close(self) -> None:
        self.stop_workers()
        self.redis.stop()
        self.pg.destroy()


# --- overhead -------------------------------------------------------------------------------

def overhead(setup: Setup, rounds: int) -> dict[str, Any]:
    """Per-stage cost as the slope between a short and a long chain, so that what a run
    pays once (importing Celery, connecting, the LISTEN) is reported apart."""
    for name, length in (("short", CHAIN[0]), ("long", CHAIN[1])):
        stages = "\n".join(
            f"  s{i}: {{kind: provision, {f'needs: [s{i - 1}], ' if i else ''}"
            "shell: {argv: [\"true\"]}}" for i in range(length))
        (setup.root / f"{name}.yaml").write_text(
            f"version: 1\nname: {name}\npool: bench\nstages:\n{stages}\n")
    setup.start_worker()
    setup.iacorch("apply", "short.yaml", "-q", broker=True)  # warm: worker up, schema made

    def case(name: str, broker: bool) -> Any:
        return lambda: setup.iacorch("apply", f"{name}.yaml", "-q", broker=broker)

    samples = alternate({f"{executor}-{name}": case(name, executor == "celery")
                         for executor in ("local", "celery") for name in ("short", "long")},
                        rounds, progress=log)
    setup.stop_workers()
    extra = CHAIN[1] - CHAIN[0]

    def slope(executor: str) -> list[float]:
        return [(long - short) / extra * 1000 for long, short in
                zip(samples[f"{executor}-long"], samples[f"{executor}-short"], strict=True)]

    per_stage = [c - loc for c, loc in zip(slope("celery"), slope("local"), strict=True)]
    fixed = [(c - loc) * 1000 for c, loc in
             zip(samples["celery-short"], samples["local-short"], strict=True)]
    return {"chains": list(CHAIN), "runs_s": {k: spread(v) for k, v in samples.items()},
            "local_ms_per_stage": spread(slope("local"), 2),
            "celery_ms_per_stage": spread(slope("celery"), 2),
            "overhead_ms_per_stage": spread(per_stage, 2),
            "overhead_ms_per_run_short_chain": spread(fixed, 1), "target_ms": 5.0}


# --- drift ----------------------------------------------------------------------------------

def drift(setup: Setup, stacks: int, rounds: int) -> dict[str, Any]:
    names = [f"s{i:04d}" for i in range(stacks)]
    for name in names:
        (setup.root / "stacks" / name).mkdir(parents=True)
        (setup.root / "stacks" / name / "main.tf").write_text(STACK)
        (setup.root / "stacks" / name / "bench.tfvars.json").write_text('{"label": "x"}')
    body = "\n".join(f"  {n}: {{kind: provision, terraform: {{dir: stacks/{n}, "
                     "vars: {label: x}}}" for n in names)
    (setup.root / "fleet.yaml").write_text(
        f"version: 1\nname: fleet\npool: bench\nconcurrency: 2\nstages:\n{body}\n")
    log(f"applying {stacks} stacks once (locally) so that drift has a baseline")
    setup.iacorch("apply", "fleet.yaml", "-q", broker=False)
    (setup.root / "stacks.txt").write_text("\n".join(names) + "\n")
    script = ("d=$(mktemp -d) && cd stacks/$1 && export TF_DATA_DIR=$d TF_IN_AUTOMATION=1 && "
              "terraform init -input=false -no-color >/dev/null && "
              "terraform plan -input=false -no-color -json -detailed-exitcode -refresh-only "
              "-lock=false -var-file=bench.tfvars.json >/dev/null && "
              "terraform plan -input=false -no-color -json -detailed-exitcode -lock=false "
              "-var-file=bench.tfvars.json >/dev/null; rm -rf $d")
    xargs = ["sh", "-c", f"xargs -P2 -n1 sh -c '{script}' _ < stacks.txt"]
    for _ in range(2):
        setup.start_worker()
    setup.iacorch("drift", "fleet.yaml", "-q", broker=True)  # warm both workers
    samples = alternate({
        "xargs": lambda: run_command(xargs, cwd=setup.root, env=setup.env)[0],
        "iacorch": lambda: setup.iacorch("drift", "fleet.yaml", "-q", broker=True)},
        rounds, progress=log)
    setup.stop_workers()
    split = setup.query("SELECT worker, count(*) FROM attempt_leases WHERE run_id = "
                        "(SELECT run_id FROM attempt_leases ORDER BY created_at DESC LIMIT 1) "
                        "GROUP BY worker ORDER BY worker")
    ratio = [a / b for a, b in zip(samples["iacorch"], samples["xargs"], strict=True)]
    return {"stacks": stacks, "xargs_s": spread(samples["xargs"]),
            "iacorch_s": spread(samples["iacorch"]), "ratio": spread(ratio, 3),
            "target_ratio": 1.15,
            "stages_per_worker": {str(w).split("@")[1]: n for w, n in split}}


# --- fencing --------------------------------------------------------------------------------

def fencing(setup: Setup, trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    for _ in range(2):
        setup.start_worker(visibility=1)
    ledgers = setup.root / "ledgers"
    ledgers.mkdir()
    kills, marked, copies = 0, [], []
    for trial in range(trials):
        ledger = ledgers / f"t{trial}"
        sleep = rng.uniform(1.0, 3.0)
        (setup.root / "once.yaml").write_text(
            "version: 1\nname: once\nstages:\n  once:\n    kind: provision\n    pool: bench\n"
            f"    shell: {{run: \"echo start >> {ledger}; sleep {sleep:.2f}\"}}\n")
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "iacorch", "apply", "once.yaml", "-q"], cwd=setup.root,
            env={**setup.broker_env(), "IACORCH_VISIBILITY_TIMEOUT": "60"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill = rng.random() < 0.5
        killed_at = None
        if kill:
            while not ledger.exists() and coordinator.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, sleep / 2))
            holder = _running_worker_pid(setup)
            if holder is not None:
                os.kill(holder, signal.SIGKILL)
                killed_at = time.monotonic()
                kills += 1
                setup.workers = [w for w in setup.workers if w.pid != holder]
                setup.start_worker(visibility=1)
        coordinator.wait(timeout=120)
        if killed_at is not None:
            marked.append(time.monotonic() - killed_at)
        lines = len(ledger.read_text().splitlines()) if ledger.exists() else 0
        copies.append(setup.query("SELECT copies FROM attempt_leases ORDER BY created_at DESC "
                                  "LIMIT 1")[0][0])
        log(f"trial {trial + 1}/{trials}: {'kill -9' if killed_at else 'redelivery'}, "
            f"{lines} start(s), {copies[-1]} cop(ies) delivered")
    time.sleep(3)  # copies still queued for killed workers: they must not start anything
    duplicates = sum(len(p.read_text().splitlines()) > 1 for p in ledgers.iterdir())
    setup.stop_workers()
    return {"trials": trials, "kills": kills, "duplicate_starts": duplicates,
            "trials_with_redelivered_copies": sum(c > 1 for c in copies),
            "lease_s": LEASE, "marked_after_kill_s": spread(marked, 2),
            "target_marked_s": LEASE + 15}


def _running_worker_pid(setup: Setup) -> int | None:
    rows = setup.query("SELECT worker FROM attempt_leases WHERE state = 'running' "
                       "ORDER BY created_at DESC LIMIT 1")
    return int(str(rows[0][0]).rsplit(".", 1)[1]) if rows and rows[0][0] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="1,000 stacks instead of 200")
    parser.add_argument("--stacks", type=int, help="stacks for the drift figure")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--drift-rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--only", choices=["overhead", "drift", "fencing"])
    add_code_options(parser)
    args = parser.parse_args()
    if shutil.which("terraform") is None:
        sys.exit("terraform is required on PATH")
    stacks = args.stacks or (1000 if args.long else 200)
    root = Path(tempfile.mkdtemp(prefix="iacorch-distributed-"))
    code = Code(root / "code", args.ref, args.worktree)
    setup = Setup(root / "project", code)
    results: dict[str, Any] = {}
    try:
        if args.only in (None, "overhead"):
            results["overhead"] = overhead(setup, args.rounds)
        if args.only in (None, "fencing"):
            results["fencing"] = fencing(setup, args.trials, args.seed)
        if args.only in (None, "drift"):
            results["drift"] = drift(setup, stacks, args.drift_rounds)
    finally:
        setup.close()
        shutil.rmtree(root, ignore_errors=True)
    path = write_results("distributed", code, results)
    rows = []
    if "overhead" in results:
        o = results["overhead"]
        rows.append(["per-stage overhead, celery vs local (ms)",
                     o["overhead_ms_per_stage"]["median"], "<= 5"])
        rows.append(["once per run, celery vs local (ms)",
                     o["overhead_ms_per_run_short_chain"]["median"], "-"])
    if "drift" in results:
        d = results["drift"]
        rows.append([f"drift of {d['stacks']} stacks, iacorch / xargs -P2",
                     d["ratio"]["median"], "<= 1.15"])
    if "fencing" in results:
        f = results["fencing"]
        rows.append([f"duplicate starts in {f['trials']} trials ({f['kills']} kill -9)",
                     f["duplicate_starts"], "0"])
        rows.append(["kill -9 to stage marked (s)", f["marked_after_kill_s"].get("median"),
                     f"<= {f['target_marked_s']:g}"])
    print(table(["figure", "median", "target"], rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
