"""Micro-benchmark: `load_document` against plain `yaml.load(CSafeLoader)` on one big runbook.

    python bench/yaml_load.py [--stages 10000] [--repeat 7] [--no-gc-pause]

Generates a runbook with N stages (about 3 `needs` each, templated strings), writes it to a
temporary file, and prints the median wall time of each loader and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from iacorch.runbook import source


def generate(stages: int, seed: int = 7) -> str:
    """A syntactically realistic runbook with `stages` terraform stages."""
    rnd = random.Random(seed)
    lines = ["version: 1", "name: big", "description: generated benchmark runbook",
             "vars:", "  env: {default: dev}", "  replicas: {default: 2, type: int}",
             "defaults: {timeout: 15m, retries: {attempts: 2, backoff: 5s}}", "stages:"]
    for i in range(stages):
        lines += [f"  s{i}:", "    kind: provision"]
        if i:
            needs = sorted({f"s{rnd.randrange(i)}" for _ in range(3)})
            lines.append(f"    needs: [{', '.join(needs)}]")
        lines += ["    terraform:", f"      dir: ../stacks/s{i}",
                  '      workspace: "{{ vars.env }}"', "      vars:",
                  f'        subnet: "{{{{ stages.s{max(i - 1, 0)}.outputs.subnet }}}}"',
                  '        count: "{{ vars.replicas }}"', "    timeout: 10m"]
    return "\n".join(lines) + "\n"


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-gc-pause", action="store_true",
                        help="load with the cyclic GC running, to see what pausing it buys")
    args = parser.parse_args()
    if args.no_gc_pause:
        source._gc_paused = contextlib.nullcontext  # type: ignore[assignment]
    text = generate(args.stages)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(text, encoding="utf-8")
        assert source.load_document(path).data == yaml.load(text, Loader=yaml.CSafeLoader)
        # interleaved, so that load from other processes hits both sides alike
        baselines, ours_times = [], []
        for _ in range(args.repeat):
            baselines.append(seconds(lambda: yaml.load(text, Loader=yaml.CSafeLoader)))
            ours_times.append(seconds(lambda: source.load_document(path)))
        baseline, ours = statistics.median(baselines), statistics.median(ours_times)
    print(f"{args.stages} stages, {len(text) / 1e6:.1f} MB, median of {args.repeat}")
    print(f"yaml.load(CSafeLoader) {baseline:.3f} s")
    print(f"load_document          {ours:.3f} s")
    print(f"ratio                  {ours / baseline:.2f}")


if __name__ == "__main__":
    main()
