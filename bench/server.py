"""Server benchmark: `iacorch serve` against the CLI, measured in the same run.

    python bench/server.py [--quick] [--runs 1200] [--rounds 15] [--skip-browser]

One server (uvicorn in a subprocess, like `iacorch serve` in production) on a scratch
project with a fresh store. Measured, in this order:

- sustained executions: `--runs` runs of a 2-stage no-op runbook (`shell: {argv: [true]}`)
  started with `POST /api/runs` by 4 client threads, each run in its own workspace (so
  each has its own lock, as runs for many environments would), from the first request
  until the last run succeeded; reported per minute (target >= 2,000 on 2 cores);
- `GET /api/runs/{id}` with those runs (>= 1,000) in the store: median latency of
  `--rounds` x 20 requests on a kept-alive connection (target p50 <= 2 ms), against
  `iacorch show RUN --json` (the CLI's way to the same record) in alternation;
- webhook to first stage start: a signed delivery (`POST /hooks/...`) until the first
  stage's recorded start, against `iacorch apply` from process start to the same moment,
  in alternation (target p50 <= 50 ms; the CLI's start-up is the baseline);
- browser (unless --skip-browser): headless Chromium from launch, sign in, open the
  waiting run, approve, until the page shows the run going on (target <= 2 s).

Writes bench/results/server.json.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import Code, add_code_options, log, median, ratios, spread, table, write_results

NOOP = """
version: 1
name: noop-{n}
vars: {{ws: {{default: default}}}}
workspace: "{{{{ vars.ws }}}}"
triggers:
  - {{name: hook, webhook: {{secret: {{env: BENCH_HOOK_SECRET}}}}}}
stages:
  first: {{kind: provision, shell: {{argv: ["true"]}}}}
  second: {{kind: deploy, needs: [first], shell: {{argv: ["true"]}}}}
"""
GATED = """
version: 1
name: gated
stages:
  prep: {kind: provision, shell: {argv: ["true"]}}
  go: {kind: approval, needs: [prep], approvers: [alice]}
  after: {kind: deploy, needs: [go], shell: {argv: ["sleep", "1"]}}
"""
SECRET = "bench-secret"
COPIES = 4


class Bench:
    def __init__(self, root: Path, code: Code) -> None:
        import httpx

        self.root, self.code = root, code
        (root / ".git").mkdir(parents=True)
        (root / "plans").mkdir()
        for n in range(COPIES):
            (root / "plans" / f"noop-{n}.yaml").write_text(NOOP.format(n=n))
        (root / "plans" / "gated.yaml").write_text(GATED)
        self.env = code.env({**os.environ, "IACORCH_HOME": str(root / ".iacorch"),
                             "IACORCH_USER": "bench", "BENCH_HOOK_SECRET": SECRET})
        self.tokens = {user: self.cli("token", "create", user).strip()
                       for user in ("bench", "alice")}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # the server's own messages go to $BENCH_SERVER_LOG when set
        with open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "wb") as server_log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "iacorch", "serve", "--port", str(self.port)], cwd=root,
                env=self.env, stdout=server_log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=60,
                                 headers={"Authorization": f"Bearer {self.tokens['bench']}"})
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "iacorch", *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True)
        if done.returncode not in (0, 3):
            raise RuntimeError(f"iacorch {' '.join(args)}: {done.stderr}")
        return done.stdout

    def close(self) -> None:
        self.http.close()
        self.server.terminate()
        self.server.wait(timeout=30)

    # -- sustained executions ------------------------------------------------------------
    def throughput(self, total: int, clients: int = 4) -> dict[str, Any]:
        import httpx

        started: list[str] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(index: int) -> None:
            with httpx.Client(base_url=self.url, timeout=120, headers=self.http.headers) as http:
                for n in range(index, total, clients):
                    try:
                        answer = http.post("/api/runs", json={
                            "runbook": f"plans/noop-{n % COPIES}.yaml", "vars": {"ws": f"w{n}"}})
                    except httpx.HTTPError as exc:
                        with lock:
                            errors.append(repr(exc))
                        continue
                    with lock:
                        if answer.status_code == 201:
                            started.append(answer.json()["run_id"])
                        else:
                            errors.append(answer.text)

        begin = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        while True:
            done = [r for r in self.http.get("/api/runs", params={"limit": 10_000}).json()
                    if r["id"] in set(started) and r["status"] in ("succeeded", "failed")]
            if len(done) >= len(started):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - begin
        failed = sum(r["status"] != "succeeded" for r in done)
        return {"runs": len(started), "failed_runs": failed, "refused": len(errors),
                "first_refusals": errors[:3], "seconds": round(elapsed, 3),
                "per_minute": round(len(started) / elapsed * 60)}

    # -- GET /api/runs/{id} against `iacorch show` -------------------------------------------
    def get_run(self, rounds: int) -> dict[str, Any]:
        runs = self.http.get("/api/runs", params={"limit": 1000}).json()
        in_store = len(self.http.get("/api/runs", params={"limit": 10_000}).json())
        api: list[float] = []
        cli: list[float] = []
        for index in range(rounds):
            run_id = runs[(index * 37) % len(runs)]["id"]
            for _ in range(20):
                start = time.perf_counter()
                answer = self.http.get(f"/api/runs/{run_id}")
                api.append(time.perf_counter() - start)
                assert answer.status_code == 200
            start = time.perf_counter()
            self.cli("show", run_id, "--json")
            cli.append(time.perf_counter() - start)
        return {"runs_in_store": in_store, "api_seconds": spread(api, 6),
                "cli_show_seconds": spread(cli), "cli_over_api": round(median(cli) /
                                                                       median(api), 1)}

    # -- webhook to first stage start, against `iacorch apply` -------------------------------
    def first_stage(self, rounds: int) -> dict[str, Any]:
        hook: list[float] = []
        cli: list[float] = []
        for index in range(rounds):
            body = json.dumps({"round": index}).encode()
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            begin = time.time()
            answer = self.http.post("/hooks/plans/noop-0.yaml/hook", content=body, headers={
                "X-Hub-Signature-256": signature, "X-GitHub-Delivery": f"bench-{index}",
                "Content-Type": "application/json"})
            assert answer.status_code == 202, answer.text
            hook.append(self._first_start(answer.json()["run_id"]) - begin)
            begin = time.time()
            self.cli("apply", "plans/noop-1.yaml", "-q")
            newest = self.http.get("/api/runs", params={"limit": 1}).json()[0]["id"]
            cli.append(self._first_start(newest) - begin)
        return {"webhook_seconds": spread(hook), "cli_apply_seconds": spread(cli),
                "cli_over_webhook": round(median(ratios(cli, hook)), 1)}

    def _first_start(self, run_id: str) -> float:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stages = self.http.get(f"/api/runs/{run_id}").json()["stages"]
            first = next((s for s in stages if s["id"] == "first"), None)
            if first and first["started_at"]:
                return float(first["started_at"])
            time.sleep(0.01)
        raise RuntimeError(f"run {run_id}: no first stage")

    # -- browser ---------------------------------------------------------------------------
    def browser(self, rounds: int) -> dict[str, Any]:
        from playwright.sync_api import expect, sync_playwright

        args = ["--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
        timings: list[float] = []
        with sync_playwright() as playwright:
            for _ in range(rounds):
                run_id = self.http.post("/api/runs", json={"runbook": "plans/gated.yaml",
                                                            "lock_timeout": 60}).json()["run_id"]
                while self.http.get(f"/api/runs/{run_id}").json()["run"]["status"] \
                        != "waiting_approval":
                    time.sleep(0.02)
                begin = time.perf_counter()
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                     args=args)
                page = browser.new_page()
                page.goto(f"{self.url}/login")
                page.fill("#token", self.tokens["alice"])
                page.click("button[type=submit]")
                page.goto(f"{self.url}/runs/{run_id}")
                page.click("button.approve")
                expect(page.locator("#run-status")).to_have_text("running", timeout=10_000)
                timings.append(time.perf_counter() - begin)
                browser.close()
                while self.http.get(f"/api/runs/{run_id}").json()["run"]["status"] == "running":
                    time.sleep(0.05)
        return {"login_to_running_seconds": spread(timings, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and rounds")
    parser.add_argument("--runs", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--skip-browser", action="store_true")
    add_code_options(parser)
    args = parser.parse_args()
    runs, rounds = (300, 5) if args.quick else (args.runs, args.rounds)
    with tempfile.TemporaryDirectory(prefix="iacorch-bench-server-") as scratch:
        code = Code(Path(scratch) / "code", args.ref, args.worktree)
        bench = Bench(Path(scratch) / "project", code)
        try:
            log(f"throughput: {runs} runs through POST /api/runs")
            result: dict[str, Any] = {"throughput": bench.throughput(runs)}
            log(f"GET /api/runs/{{id}} against iacorch show, {rounds} rounds")
            result["get_run"] = bench.get_run(rounds)
            log(f"webhook against iacorch apply, {rounds} rounds")
            result["first_stage"] = bench.first_stage(rounds)
            if not args.skip_browser:
                log("browser: sign in, approve, see the run go on")
                result["browser"] = bench.browser(max(3, rounds // 3))
        finally:
            bench.close()
    throughput, get, first = result["throughput"], result["get_run"], result["first_stage"]
    rows: list[list[Any]] = [
        ["executions per minute (2-stage no-op, API)", throughput["per_minute"], ">= 2,000"],
        [f"GET /api/runs/{{id}} p50 ms ({get['runs_in_store']} runs)",
         get["api_seconds"]["median"] * 1000, "<= 2"],
        ["iacorch show --json p50 ms", get["cli_show_seconds"]["median"] * 1000, "baseline"],
        ["webhook -> first stage p50 ms", first["webhook_seconds"]["median"] * 1000, "<= 50"],
        ["iacorch apply -> first stage p50 ms", first["cli_apply_seconds"]["median"] * 1000,
         "baseline"],
        ["apply / webhook (median of ratios)", first["cli_over_webhook"], ""],
    ]
    if "browser" in result:
        rows.append(["browser login -> approve -> running p50 s",
                     result["browser"]["login_to_running_seconds"]["median"], "<= 2"])
    print(table(["figure", "value", "target"], rows))
    path = write_results("server", code, result)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
