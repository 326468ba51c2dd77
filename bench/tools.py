"""What orchestration costs on top of the tools themselves: iacorch vs a bash script.

Terraform part. Each stack holds 10 `terraform_data` resources, one with a
`local-exec` sleeping 0.5 s (no provider download needed). Every sample applies
fresh copies of the stacks, so every apply creates 10 resources.

Measured, as medians over alternating pairs (which side goes first alternates):

- single:  the TerraformDriver applying one stack (init, plan -out, show -json,
           apply, output -json) vs a bash script running the same commands
- chain5:  5 stacks, each fed the previous one's output, both sequential
- fanout8: 8 independent stacks: the driver in 8 threads (as the engine would
           run them) vs the bash script sequential and with `&` + `wait`;
           also the driver without its host-wide init lock, to price that lock
- engine:  `iacorch apply` on a generated runbook (chain5 and fanout8) vs bash,
           once `iacorch apply` runs; skipped with the reason otherwise

    python bench/tools.py [--pairs 5] [--only single,chain5,fanout8,engine]

Writes bench/results/tools.json (key "terraform"; other tools' keys are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from iacorch.drivers import terraform as terraform_driver
from iacorch.drivers.base import StageContext
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation
from iacorch.process import CancelToken, ProcessRunner

RESULTS = Path(__file__).parent / "results" / "tools.json"
RESOURCES = 10
SLEEP = 0.5

STACK_TF = """
variable "name" {
  type = string
}

variable "upstream" {
  type    = string
  default = ""
}

resource "terraform_data" "item" {
  count = %(count)d
  input = "${var.name}-${count.index}-${var.upstream}"
}

resource "terraform_data" "slow" {
  input = var.name
  provisioner "local-exec" {
    command = "sleep %(sleep)s"
  }
}

output "value" {
  value = "${var.name}:${length(terraform_data.item)}:${terraform_data.slow.id}"
}
"""

# The same commands the driver runs, one stack after another (or in the background).
BASH = r"""#!/usr/bin/env bash
set -euo pipefail
apply_stack() {  # stack_dir work_dir name upstream
  local dir=$1 work=$2
  mkdir -p "$work"
  printf '{"name": "%s", "upstream": "%s"}' "$3" "$4" > "$work/vars.json"
  export TF_DATA_DIR="$work/tfdata" TF_IN_AUTOMATION=1 TF_INPUT=0
  export TF_PLUGIN_CACHE_DIR="$PLUGIN_CACHE"
  cd "$dir"
  terraform init -input=false -no-color > /dev/null
  terraform plan -input=false -no-color -json -out="$work/tfplan" \
    -var-file="$work/vars.json" > /dev/null
  terraform show -json -no-color "$work/tfplan" > /dev/null
  terraform apply -input=false -no-color -json "$work/tfplan" > /dev/null
  terraform output -json -no-color > "$work/outputs.json"
  rm -f "$work/tfplan"
}
mode=$1; root=$2; count=$3
upstream=""
for i in $(seq 0 $((count - 1))); do
  case $mode in
    chain)
      apply_stack "$root/stacks/s$i" "$root/bash/s$i" "s$i" "$upstream"
      upstream=$(jq -r .value.value "$root/bash/s$i/outputs.json") ;;
    sequential)
      apply_stack "$root/stacks/s$i" "$root/bash/s$i" "s$i" "" ;;
    parallel)
      (apply_stack "$root/stacks/s$i" "$root/bash/s$i" "s$i" "") & ;;
  esac
done
wait
"""


def write_stacks(root: Path, count: int) -> None:
    """`count` fresh stacks under root/stacks/s<i>, with no state yet."""
    for i in range(count):
        stack = root / "stacks" / f"s{i}"
        stack.mkdir(parents=True)
        (stack / "main.tf").write_text(STACK_TF % {"count": RESOURCES - 1, "sleep": SLEEP})


def write_runbook(root: Path, count: int, chained: bool) -> Path:
    """A runbook applying the stacks, each fed its predecessor's output when `chained`."""
    lines = ["version: 1", f"name: bench-{'chain' if chained else 'fanout'}{count}",
             f"concurrency: {count}", "stages:"]
    for i in range(count):
        upstream = f'"{{{{ stages.s{i - 1}.outputs.value }}}}"' if chained and i else '""'
        lines += [f"  s{i}:", "    kind: provision", "    terraform:",
                  f"      dir: stacks/s{i}",
                  f"      vars: {{name: s{i}, upstream: {upstream}}}"]
    path = root / "runbook.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class DriverBench:
    """Applies stacks through TerraformDriver with hand-built stage contexts."""

    def __init__(self) -> None:
        self.runner = ProcessRunner()
        self.driver = terraform_driver.TerraformDriver()

    def close(self) -> None:
        self.runner.close()

    def apply(self, root: Path, index: int, upstream: str = "") -> StageResult:
        spec = StageSpec(
            run_id="bench", stage_id=f"s{index}", driver="terraform",
            operation=Operation.APPLY, root_dir=str(root),
            action={"dir": f"stacks/s{index}", "vars": {"name": f"s{index}", "upstream": upstream}},
            work_dir=str(root / "driver" / f"s{index}"), state_dir=str(root.parent / "state"))
        ctx = StageContext(spec=spec, process=self.runner, masker=Masker(),
                           cancel=CancelToken())
        result = self.driver.apply(ctx)
        if not result.ok:
            raise RuntimeError(f"driver apply failed: {result.error}\n{result.output_tail}")
        return result

    def chain(self, root: Path, count: int) -> None:
        upstream = ""
        for i in range(count):
            upstream = str(self.apply(root, i, upstream).outputs["value"])

    def fanout(self, root: Path, count: int) -> None:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda i: self.apply(root, i), range(count)))


def run_bash(script: Path, mode: str, root: Path, count: int) -> None:
    env = {**os.environ, "PLUGIN_CACHE": str(root.parent / "state" / "terraform" /
                                             "plugin-cache")}
    subprocess.run(["bash", str(script), mode, str(root), str(count)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_engine(runbook: Path) -> None:
    home = runbook.parent / "home"
    done = subprocess.run([sys.executable, "-m", "iacorch", "apply", str(runbook)],
                          cwd=runbook.parent, env={**os.environ, "IACORCH_HOME": str(home)},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"iacorch apply exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-400:]}")


@contextlib.contextmanager
def no_init_lock() -> Iterator[None]:
    """The driver with its host-wide init lock replaced by nothing (to price the lock)."""
    original = terraform_driver._exclusive

    @contextlib.contextmanager
    def free(lock_path: Path, ctx: StageContext) -> Iterator[bool]:
        yield True

    terraform_driver._exclusive = free  # type: ignore[assignment]
    try:
        yield
    finally:
        terraform_driver._exclusive = original  # type: ignore[assignment]


def measure(sides: dict[str, Callable[[Path], object]], count: int, pairs: int,
            workdir: Path) -> dict[str, Any]:
    """Median seconds of each side over `pairs` rounds, the order rotating every round."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_no in range(pairs):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            root = Path(tempfile.mkdtemp(dir=workdir))
            write_stacks(root, count)
            started = time.perf_counter()
            sides[name](root)
            times[name].append(time.perf_counter() - started)
            shutil.rmtree(root)
    return {"median_s": {n: round(statistics.median(t), 3) for n, t in times.items()},
            "samples_s": {n: [round(x, 3) for x in t] for n, t in times.items()}}


def main() -> None:
    """Run the selected scenarios and merge the figures into bench/results/tools.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--only", default="single,chain5,fanout8,engine")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    if shutil.which("terraform") is None or shutil.which("jq") is None:
        sys.exit("needs terraform and jq on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="iacorch-bench-"))
    script = workdir / "apply.sh"
    script.write_text(BASH)
    (workdir / "state").mkdir()
    bench = DriverBench()
    found: dict[str, Any] = {}
    try:
        if "single" in wanted:
            found["single"] = measure({
                "driver": lambda root: bench.apply(root, 0),
                "bash": lambda root: run_bash(script, "sequential", root, 1)}, 1, args.pairs,
                workdir)
        if "chain5" in wanted:
            found["chain5"] = measure({
                "driver_sequential": lambda root: bench.chain(root, 5),
                "bash_sequential": lambda root: run_bash(script, "chain", root, 5)}, 5,
                args.pairs, workdir)
        if "fanout8" in wanted:
            def unlocked(root: Path) -> None:
                with no_init_lock():
                    bench.fanout(root, 8)
            found["fanout8"] = measure({
                "driver_8_threads": lambda root: bench.fanout(root, 8),
                "driver_8_threads_no_init_lock": unlocked,
                "bash_sequential": lambda root: run_bash(script, "sequential", root, 8),
                "bash_parallel": lambda root: run_bash(script, "parallel", root, 8)}, 8,
                args.pairs, workdir)
        if "engine" in wanted:
            found["engine"] = engine_figures(script, workdir, args.pairs)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    for scenario in ("single", "chain5"):
        if scenario in found:
            medians = found[scenario]["median_s"]
            driver, bash = list(medians.values())
            stacks = 1 if scenario == "single" else 5
            found[scenario]["overhead_per_stack_s"] = round((driver - bash) / stacks, 3)
    record(found, args)


def engine_figures(script: Path, workdir: Path, pairs: int) -> dict[str, Any]:
    probe = Path(tempfile.mkdtemp(dir=workdir))
    write_stacks(probe, 1)
    try:
        run_engine(write_runbook(probe, 1, chained=False))
    except RuntimeError as exc:
        return {"skipped": f"`iacorch apply` does not run yet: {exc}"}
    return {
        "chain5": measure({
            "iacorch_apply": lambda root: run_engine(write_runbook(root, 5, chained=True)),
            "bash_sequential": lambda root: run_bash(script, "chain", root, 5)}, 5, pairs,
            workdir),
        "fanout8": measure({
            "iacorch_apply": lambda root: run_engine(write_runbook(root, 8, chained=False)),
            "bash_parallel": lambda root: run_bash(script, "parallel", root, 8)}, 8, pairs,
            workdir)}


def record(found: dict[str, Any], args: argparse.Namespace) -> None:
    version = subprocess.run(["terraform", "version", "-json"], capture_output=True,
                             text=True).stdout
    all_results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    all_results["terraform"] = {
        "command": f"python bench/tools.py --pairs {args.pairs} --only {args.only}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "terraform_version": json.loads(version or "{}").get("terraform_version"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "system": platform.platform()},
        "stack": f"{RESOURCES} terraform_data resources, one with local-exec sleep {SLEEP}s",
        "results": found,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(all_results, indent=2) + "\n")
    print(json.dumps(all_results["terraform"], indent=2))


if __name__ == "__main__":
    main()
