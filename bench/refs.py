"""Two commits of iacorch on the engine's graphs, in alternation: did a change cost time?

    python bench/refs.py BASE [HEAD] [--rounds 7] [--shapes chain,independent,layered]
                                     [--flavours noop,work]

Each round runs `iacorch apply` of every shape and flavour of bench/engine.py once per
commit (whoever goes first rotates), each with fresh state. Reported per case: the median
wall time and the median CPU time (user + system of iacorch and its children, from
wait4) of each commit, and the median of the per-round ratios HEAD/BASE. CPU time is the
steadier figure on a busy machine: other processes stretch wall time, not CPU time.
Writes bench/results/refs.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import Code, CommandFailed, log, measure_command, median, table, write_results
from engine import FLAVOURS, SHAPES, _base_env, runbook_text


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child and what it waited for)."""
    try:
        wall, usage = measure_command(argv, cwd=cwd, env=env)
    except CommandFailed as exc:
        sys.exit(str(exc))
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit before the change")
    parser.add_argument("head", nargs="?", default="HEAD", help="the commit after (HEAD)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--flavours", default=",".join(FLAVOURS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iacorch-bench-refs-") as tmp:
        root = Path(tmp)
        codes = {"base": Code(root / "base", args.base), "head": Code(root / "head", args.head)}
        log(f"base: {codes['base'].describe}; head: {codes['head'].describe}")
        rows, cases = [], {}
        for shape in args.shapes.split(","):
            make_graph, size = SHAPES[shape]
            for flavour in args.flavours.split(","):
                case = root / f"{shape}-{flavour}"
                case.mkdir()
                (case / "graph.yaml").write_text(
                    runbook_text(f"{shape}-{flavour}", make_graph(size), FLAVOURS[flavour]))
                samples: dict[str, list[tuple[float, float]]] = {"base": [], "head": []}
                for index in range(args.rounds):
                    order = ["base", "head"] if index % 2 == 0 else ["head", "base"]
                    for which in order:
                        env = codes[which].env(_base_env())
                        env["IACORCH_HOME"] = str(case / f"state-{which}-{index}")
                        samples[which].append(timed(
                            [sys.executable, "-m", "iacorch", "apply", "graph.yaml", "-q",
                             "--concurrency", "2"], case, env))
                wall = {w: median([s[0] for s in samples[w]]) for w in samples}
                cpu = {w: median([s[1] for s in samples[w]]) for w in samples}
                wall_ratio = median([h[0] / b[0] for b, h in zip(samples["base"],
                                                                  samples["head"], strict=True)])
                cpu_ratio = median([h[1] / b[1] for b, h in zip(samples["base"],
                                                                 samples["head"], strict=True)])
                log(f"{shape}/{flavour}: wall {wall_ratio:.3f}x, cpu {cpu_ratio:.3f}x")
                rows.append([shape, flavour, size, wall["base"], wall["head"], wall_ratio,
                             cpu["base"], cpu["head"], cpu_ratio])
                cases[f"{shape}/{flavour}"] = {
                    "stages": size, "wall_base": wall["base"], "wall_head": wall["head"],
                    "wall_ratio": wall_ratio, "cpu_base": cpu["base"], "cpu_head": cpu["head"],
                    "cpu_ratio": cpu_ratio}
    print(table(["shape", "flavour", "stages", "base s", "head s", "head/base",
                 "base cpu s", "head cpu s", "cpu head/base"], rows))
    write_results("refs", codes["head"], {"base": codes["base"].describe,
                                          "rounds": args.rounds, "cases": cases})


if __name__ == "__main__":
    main()
