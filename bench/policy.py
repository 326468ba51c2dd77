"""Policy evaluation: the example policies on 100 and 1,000 stages, and a graph rule
written with the precomputed facts against the same rule as a graph walk in Rego.

    python bench/policy.py [--quick] [--sizes 100,1000] [--rounds N]

For each size it generates a runbook in workspace prod (a random DAG with a fixed seed:
each stage needs up to three of the 50 before it; every 100th stage is an approval gate),
compiles it, and times in alternation, in this process with warm interpreters:

- `facts`: building the input (`policy.facts.policy_input`: each stage's kind, tool,
  workspace, upstream, downstream and the gates before it, and the two indexes);
- `decision`: facts + handing them to rego-cpp + reading deny, require_gate and
  approvers of the example policies (policies/): one policy decision, what `validate`,
  `apply` and every approval pay. Targets: <= 10 ms at 100 stages, <= 100 ms at 1,000;
- `with_facts`: the decision plus a rule listing the prod stages no gate guards, written
  with the facts (`count(s.gates_before) == 0`);
- `naive_walk`: the decision plus the same rule written as a policy without the facts
  must: a walk of the graph in Rego (`graph.reachable` from each stage over `upstream`).

Each case is timed as CPU time of this process (steady on a shared, loaded machine) and
as wall time. Medians, the ratio naive_walk / with_facts per round, and the targets go to
bench/results/policy.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Code,
    add_code_options,
    alternate,
    log,
    median,
    ratios,
    spread,
    table,
    write_results,
)

SEED = 1234
TARGETS = {100: 0.010, 1000: 0.100}
UNGATED_FACTS = """package bench

ungated := [id |
	s := input.stages[id]
	s.workspace == "prod"
	s.kind != "approval"
	count(s.gates_before) == 0
]
"""
UNGATED_NAIVE = """package bench

edges := {id: s.upstream | s := input.stages[id]}

walked_gates(s) := [g |
	some g in graph.reachable(edges, s.upstream)
	input.stages[g].kind == "approval"
]

ungated := [id |
	s := input.stages[id]
	s.workspace == "prod"
	s.kind != "approval"
	count(walked_gates(s)) == 0
]
"""


def generate_runbook(stages: int, seed: int = SEED) -> str:
    """`stages` stages in prod: shell stages in a random DAG, a gate every 100th stage."""
    rnd = random.Random(seed)
    lines = ["version: 1", f"name: policy-bench-{stages}", "vars:",
             "  env: {default: prod}", "concurrency: 4", "stages:"]
    for i in range(stages):
        window = range(max(0, i - 50), i)
        needs = rnd.sample(list(window), min(3, len(window)))
        lines.append(f"  s{i}:")
        if needs:
            lines.append(f"    needs: [{', '.join(f's{n}' for n in needs)}]")
        if i % 100 == 99:
            lines += ["    kind: approval", "    approvers: [alice, bob]", "    require: 2"]
            continue
        lines += ["    kind: deploy", f'    shell: {{run: "deploy s{i} --env prod"}}']
    return "\n".join(lines) + "\n"


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench(sizes: list[int], rounds: int, workdir: Path) -> list[dict[str, Any]]:
    from iacorch.policy.facts import policy_input
    from iacorch.policy.policy_set import load_policy_set
    from iacorch.policy.rego import RegoEngine
    from iacorch.policy.verdict import evaluate
    from iacorch.runbook.compiler import compile_runbook

    examples = load_policy_set(REPO / "policies")
    engines = {name: RegoEngine({**examples.rules, **extra}, examples.data,
                                examples.directory)
               for name, extra in (("decision", {}), ("with_facts", {"bench.rego": UNGATED_FACTS}),
                                   ("naive_walk", {"bench.rego": UNGATED_NAIVE}))}
    rows = []
    for size in sizes:
        path = workdir / f"policy-{size}.yaml"
        path.write_text(generate_runbook(size), encoding="utf-8")
        plan = compile_runbook(path)

        def decide(name: str, plan: Any = plan) -> Any:
            engine = engines[name]
            verdict = evaluate(engine, policy_input(plan))
            if name == "decision":
                return verdict, None
            return verdict, engine.query("data.bench.ungated")

        _, ungated = decide("with_facts")
        _, walked = decide("naive_walk")
        assert sorted(ungated) == sorted(walked), "the two rules must agree"
        walls: dict[str, list[float]] = {}

        def case(name: str, run: Callable[[], object],
                 walls: dict[str, list[float]] = walls) -> Callable[[], float]:
            def timed() -> float:
                cpu, wall = _timed(run)
                walls.setdefault(name, []).append(wall)
                return cpu
            return timed

        cpu = alternate({
            "facts": case("facts", lambda plan=plan: policy_input(plan)),
            **{name: case(name, lambda name=name: decide(name))
               for name in ("decision", "with_facts", "naive_walk")},
        }, rounds if size <= 100 else max(3, rounds // 3))
        decision = median(cpu["decision"])
        target = TARGETS.get(size)
        log(f"{size} stages (CPU): facts {median(cpu['facts']) * 1000:.1f} ms, decision "
            f"{decision * 1000:.1f} ms, with facts {median(cpu['with_facts']) * 1000:.1f} ms,"
            f" naive walk {median(cpu['naive_walk']) * 1000:.0f} ms")
        rows.append({
            "stages": size, "ungated_prod_stages": len(ungated),
            "cpu": {name: spread(values) for name, values in cpu.items()},
            "wall": {name: spread(values) for name, values in walls.items()},
            "naive_walk_over_with_facts": round(median(ratios(cpu["naive_walk"],
                                                              cpu["with_facts"])), 1),
            "target_s": target, "within_target_cpu": target is None or decision <= target,
            "within_target_wall": target is None or median(walls["decision"]) <= target})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="few rounds")
    add_code_options(parser)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rounds = 3 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="iacorch-policy-bench-"))
    try:
        code = Code(workdir, args.ref, args.worktree)
        code.activate()
        log(f"measuring iacorch at {code.describe}")
        rows = bench(sizes, rounds, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(["stages", "facts", "decision CPU", "decision wall", "target", "with facts",
                 "naive walk", "walk/facts"],
                [[r["stages"], _ms(r["cpu"]["facts"]), _ms(r["cpu"]["decision"]),
                  _ms(r["wall"]["decision"]),
                  f"{r['target_s'] * 1000:.0f} ms" if r["target_s"] else "-",
                  _ms(r["cpu"]["with_facts"]), _ms(r["cpu"]["naive_walk"]),
                  f"{r['naive_walk_over_with_facts']}x"] for r in rows]))
    path = write_results("policy", code, {"rounds": rounds, "load_average": os.getloadavg(),
                                          "sizes": rows})
    log(f"wrote {path}")
    if not all(r["within_target_cpu"] for r in rows):
        sys.exit(1)


def _ms(sample: dict[str, Any]) -> str:
    return f"{sample['median'] * 1000:.1f} ms"


if __name__ == "__main__":
    main()
