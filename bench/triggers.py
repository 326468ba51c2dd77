"""From an SQS message to the first stage start: `iacorch listen` against a moto server.

    python bench/triggers.py [--rounds 15] [--ref HEAD | --worktree]

A moto server runs on a free loopback port; `iacorch listen` (a resident process) reads a
queue with long polling, and a runbook of one `shell` stage is triggered by each message.
Each round measures, in rotating order:

- `listen`: from just before `send_message` to the run's first stage start, as the
  stage's `started_at` in state.db says (wall clock, same host);
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
name: on-message
vars:
  version: {default: none}
stages:
  first: {kind: deploy, shell: {argv: ["true", "{{ vars.version }}"]}}
triggers:
  - name: deploys
    sqs: {queue: deploys}
    vars: {version: "{{ event.json.version }}"}
"""


class Bench:
    def __init__(self, root: Path, code: Code, endpoint: str) -> None:
        from tests.aws_fixtures import aws_env, client

        self.root, self.code = root, code
        self.sqs = client("sqs", endpoint)
        self.deploys = self.sqs.create_queue(QueueName="deploys")["QueueUrl"]
        self.floor = self.sqs.create_queue(QueueName="floor")["QueueUrl"]
        (root / ".git").mkdir()
        self.runbook = root / "on-message.yaml"
        self.runbook.write_text(RUNBOOK)
        self.env = {**code.env(), **aws_env(endpoint), "IACORCH_USER": "bench"}
        for name in ("IACORCH_STORE", "AWS_PROFILE", "GITHUB_ACTIONS"):
            self.env.pop(name, None)
        self.listen_home = root / "listen-home"
        self.seen: set[str] = set()
        self.sent = 0
        self.cold = 0
        self.listener = subprocess.Popen(
            [sys.executable, "-m", "iacorch", "listen", str(self.runbook)], cwd=root,
            env={**self.env, "IACORCH_HOME": str(self.listen_home)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)

    def stop(self) -> str:
        self.listener.send_signal(signal.SIGTERM)
        _, log = self.listener.communicate(timeout=60)
        return log

    def _first_stage_start(self, home: Path, skip: set[str], timeout: float = 30.0
                           ) -> tuple[str, float]:
        """(run id, its first stage's started_at) of a run not in `skip`, when it has one."""
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

    def listen_once(self) -> float:
        self.sent += 1
        began = time.time()
        self.sqs.send_message(QueueUrl=self.deploys,
                              MessageBody=f'{{"version": "v{self.sent}"}}')
        run_id, started = self._first_stage_start(self.listen_home, self.seen)
        self.seen.add(run_id)
        return started - began

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
        return self._first_stage_start(home, set())[1] - began


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
                bench.listen_once()
            samples = alternate({"listen": bench.listen_once,
                                 "transport": bench.transport_once,
                                 "cold apply": bench.cold_once}, args.rounds,
                                progress=lambda line: print(line, file=sys.stderr))
        except Exception:
            print(bench.stop(), file=sys.stderr)
            raise
        log = bench.stop()
        if bench.listener.returncode != 0:
            raise SystemExit(f"the listener exited {bench.listener.returncode}:\n{log}")
    listen, transport, cold = samples["listen"], samples["transport"], samples["cold apply"]
    p50 = median(listen)
    print(table(["case", "p50 (ms)", "min (ms)", "max (ms)"], [
        [name, median(values) * 1e3, min(values) * 1e3, max(values) * 1e3]
        for name, values in samples.items()]))
    print(f"listen / transport: {median(ratios(listen, transport)):.2f}x; "
          f"cold apply / listen: {median(ratios(cold, listen)):.1f}x; "
          f"target p50 <= {TARGET_P50 * 1e3:.0f} ms: {'met' if p50 <= TARGET_P50 else 'MISSED'}")
    path = write_results("triggers", code, {
        "rounds": args.rounds, "target_p50_seconds": TARGET_P50,
        "seconds": {name: spread(values) for name, values in samples.items()},
        "ratios": {"listen_over_transport": round(median(ratios(listen, transport)), 3),
                   "cold_apply_over_listen": round(median(ratios(cold, listen)), 3)},
        "target_met": p50 <= TARGET_P50})
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    main()
