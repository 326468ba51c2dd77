"""From an SQS message to the first stage start, with iacorch resident, against moto.

    python bench/triggers.py [--rounds 15] [--ref HEAD | --worktree]

A moto server runs on a free loopback port; `iacorch listen` and `iacorch serve --listen`
(resident processes, each with its own queue and state) read with long polling, and a
runbook of one `shell` stage is triggered by each message. Each round measures, in
rotating order:

- `listen`, `serve --listen`: from just before `send_message` to the run's first stage
  start, as the stage's `started_at` in state.db says (wall clock, same host);
- `transport`: the same queue round trip with nothing behind it: `send_message`, then a
  long-polling `receive_message` in this process gets it (the floor any consumer pays);
- `cold apply`: what a host without a resident process pays: `iacorch apply` of the same
  runbook started as a command, from its spawn to its first stage start.

Medians and ratios go to bench/results/triggers.json; docs/performance.md has the table.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Code,
    add_code_options,
    alternate,
    median,
    ratios,
    spread,
    table,
    write_results,
)

TARGET_P50 = 0.100   # seconds from message to first stage start, resident process
RUNBOOK = """\
version: 1
name: on-message-QUEUE
vars:
  version: {default: none}
stages:
  first: {kind: deploy, shell: {argv: ["true", "{{ vars.version }}"]}}
triggers:
  - name: deploys
    sqs: {queue: QUEUE}
    vars: {version: "{{ event.json.version }}"}
"""


def first_stage_start(home: Path, skip: set[str], timeout: float = 30.0) -> tuple[str, float]:
    """(run id, its first stage's started_at) of a finished run not in `skip`."""
    from iacorch.store.sqlite import SqliteStore

    deadline = time.monotonic() + timeout
    found: list[tuple[str, str, list[float]]] = []
    while time.monotonic() < deadline:
        if (home / "state.db").exists():
            store = SqliteStore(home / "state.db")
            try:
                found = [(run.id, run.status.value,
                          [r.started_at for r in store.stage_records(run.id).values()
                           if r.started_at]) for run in store.list_runs()]
            finally:
                store.close()
            for run_id, status, starts in found:
                if run_id not in skip and starts and status != "running":
                    return run_id, min(starts)
        time.sleep(0.002)
    raise RuntimeError(f"no new run reached its first stage within {timeout:.0f}s; "
                       f"runs: {found}; seen: {sorted(skip)}")


class Resident:
    """A long-running iacorch (`listen`, or `serve --listen`) reading its own queue."""

    def __init__(self, root: Path, env: dict[str, str], sqs: Any, queue: str,
                 command: list[str]) -> None:
        self.sqs, self.home = sqs, root / f"home-{queue}"
        self.queue = sqs.create_queue(QueueName=queue)["QueueUrl"]
        runbook = root / f"{queue}.yaml"
        runbook.write_text(RUNBOOK.replace("QUEUE", queue))
        self.seen: set[str] = set()
        self.sent = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iacorch", *command, str(runbook)], cwd=root,
            env={**env, "IACORCH_HOME": str(self.home)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True)

    def once(self) -> float:
        self.sent += 1
        began = time.time()
        self.sqs.send_message(QueueUrl=self.queue,
                              MessageBody=f'{{"version": "v{self.sent}"}}')
        run_id, started = first_stage_start(self.home, self.seen)
        self.seen.add(run_id)
        return started - began

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, log = self.proc.communicate(timeout=60)
        if self.proc.returncode not in (0, -signal.SIGTERM):
            raise SystemExit(f"{self.proc.args} exited {self.proc.returncode}:\n{log}")
        return log


class Bench:
    def __init__(self, root: Path, code: Code, endpoint: str) -> None:
        from tests.aws_fixtures import aws_env, client, free_port

        self.root = root
        self.sqs = client("sqs", endpoint)
        self.floor = self.sqs.create_queue(QueueName="floor")["QueueUrl"]
        (root / ".git").mkdir()
        self.env = {**code.env(), **aws_env(endpoint), "IACORCH_USER": "bench"}
        for name in ("IACORCH_STORE", "AWS_PROFILE", "GITHUB_ACTIONS"):
            self.env.pop(name, None)
        self.listen = Resident(root, self.env, self.sqs, "deploys", ["listen"])
        self.serve = Resident(root, self.env, self.sqs, "served", [
            "serve", "--port", str(free_port()), "--listen"])
        self.runbook = root / "deploys.yaml"
        self.cold = 0

    def stop(self) -> str:
        return self.listen.stop() + self.serve.stop()

    def transport_once(self) -> float:
        began = time.perf_counter()
        self.sqs.send_message(QueueUrl=self.floor, MessageBody='{"version": "floor"}')
        while True:
            got = self.sqs.receive_message(QueueUrl=self.floor, WaitTimeSeconds=20)
            if got.get("Messages"):
                elapsed = time.perf_counter() - began
                self.sqs.delete_message(QueueUrl=self.floor,
                                        ReceiptHandle=got["Messages"][0]["ReceiptHandle"])
                return elapsed

    def cold_once(self) -> float:
        self.cold += 1
        home = self.root / f"cold-{self.cold}"
        began = time.time()
        subprocess.run([sys.executable, "-m", "iacorch", "apply", str(self.runbook), "-q",
                        "--var", f"version=c{self.cold}"], cwd=self.root,
                       env={**self.env, "IACORCH_HOME": str(home)}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return first_stage_start(home, set())[1] - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warm-up", type=int, default=3,
                        help="messages sent before measuring (the listener's first imports)")
    add_code_options(parser)
    args = parser.parse_args()
    from tests.aws_fixtures import moto_server

    with tempfile.TemporaryDirectory(prefix="iacorch-bench-triggers-") as tmp, \
            moto_server() as endpoint:
        code = Code(Path(tmp), args.ref, args.worktree)
        work = Path(tmp) / "project"
        work.mkdir()
        bench = Bench(work, code, endpoint)
        try:
            for _ in range(args.warm_up):
                bench.listen.once()
                bench.serve.once()
            samples = alternate({"listen": bench.listen.once,
                                 "serve --listen": bench.serve.once,
                                 "transport": bench.transport_once,
                                 "cold apply": bench.cold_once}, args.rounds,
                                progress=lambda line: print(line, file=sys.stderr))
        except Exception:
            print(bench.stop(), file=sys.stderr)
            raise
        bench.stop()
    listen, served = samples["listen"], samples["serve --listen"]
    transport, cold = samples["transport"], samples["cold apply"]
    p50 = max(median(listen), median(served))
    print(table(["case", "p50 (ms)", "min (ms)", "max (ms)"], [
        [name, median(values) * 1e3, min(values) * 1e3, max(values) * 1e3]
        for name, values in samples.items()]))
    print(f"listen / transport: {median(ratios(listen, transport)):.2f}x; "
          f"serve --listen / transport: {median(ratios(served, transport)):.2f}x; "
          f"cold apply / listen: {median(ratios(cold, listen)):.1f}x; "
          f"target p50 <= {TARGET_P50 * 1e3:.0f} ms: {'met' if p50 <= TARGET_P50 else 'MISSED'}")
    path = write_results("triggers", code, {
        "rounds": args.rounds, "target_p50_seconds": TARGET_P50,
        "seconds": {name: spread(values) for name, values in samples.items()},
        "ratios": {"listen_over_transport": round(median(ratios(listen, transport)), 3),
                   "serve_over_transport": round(median(ratios(served, transport)), 3),
                   "cold_apply_over_listen": round(median(ratios(cold, listen)), 3)},
        "target_met": p50 <= TARGET_P50})
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    main()
