"""Per-spawn cost of the ways to keep children from outliving a kill -9'd orchestrator.

Runs `true` N times each way and prints the median and mean wall time per spawn:

- bare Popen (start_new_session, pipes): the floor, CPython's vfork path
- preexec_fn calling prctl(PR_SET_PDEATHSIG): forces fork(), whose cost grows with the heap
- `setpriv --pdeathsig KILL --` wrapper: keeps vfork, pays a second exec
- ProcessRunner.run without and with its orphan guard (what iacorch does)

    python bench/process_overhead.py [--spawns 500] [--heap-mib 0]

`--heap-mib` touches that much memory first, to stand in for an orchestrator with
pydantic, Jinja2 and ansible loaded.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from iacorch.process import ProcessRunner

PR_SET_PDEATHSIG = 1
SIGKILL = 9


def _popen(argv: list[str], preexec_fn: Callable[[], object] | None = None) -> None:
    subprocess.run(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                   capture_output=True, check=True, preexec_fn=preexec_fn)


def _measure(name: str, spawn: Callable[[], object], count: int) -> None:
    spawn()  # warm up: first-use costs (the guard process, page cache) are not per spawn
    times = []
    for _ in range(count):
        started = time.perf_counter()
        spawn()
        times.append(time.perf_counter() - started)
    print(f"{name:34s} median {statistics.median(times) * 1e3:6.2f} ms"
          f"   mean {statistics.mean(times) * 1e3:6.2f} ms")


def main() -> None:
    """Print the per-spawn figures for every option."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=500)
    parser.add_argument("--heap-mib", type=int, default=0)
    args = parser.parse_args()
    ballast = bytearray(args.heap_mib << 20)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1

    true = shutil.which("true") or "/bin/true"
    libc = ctypes.CDLL(None, use_errno=True)

    def set_pdeathsig() -> None:
        libc.prctl(PR_SET_PDEATHSIG, SIGKILL)

    bare = ProcessRunner(orphan_guard=False)
    guarded = ProcessRunner()
    print(f"{args.spawns} spawns of {true}, heap ballast {args.heap_mib} MiB")
    _measure("Popen, nothing", lambda: _popen([true]), args.spawns)
    _measure("Popen, preexec_fn prctl", lambda: _popen([true], preexec_fn=set_pdeathsig),
             args.spawns)
    setpriv = shutil.which("setpriv")
    if setpriv:
        _measure("Popen, setpriv --pdeathsig wrapper",
                 lambda: _popen([setpriv, "--pdeathsig", "KILL", "--", true]), args.spawns)
    _measure("ProcessRunner.run, no guard", lambda: bare.run([true]), args.spawns)
    _measure("ProcessRunner.run, orphan guard", lambda: guarded.run([true]), args.spawns)
    guarded.close()


if __name__ == "__main__":
    main()
