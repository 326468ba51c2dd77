#!/usr/bin/env python3
"""Run the `console` blocks of docs/examples.md for real and write their output there.

  python scripts/examples_transcript.py            rewrite the blocks with real output
  python scripts/examples_transcript.py --check    exit 1, with a diff, when the page
                                                   differs from real output

The commands run in order, in a fresh copy of the examples (plans/, stacks/,
playbooks/, scripts/ in a temporary project with $IACORCH_HOME inside it), without a
terminal, stdout and stderr together. The prose is kept; each block's `$ ` lines are
kept (run ids in them become the id the previous command printed) and what follows
them is replaced: the output, then `[exit N]` after every `iacorch` command and after
any other command that fails.

The services run on free ports, written back as the documented ones (the copy's
defaults are rewritten), so a check never collides with a running lab or site. What
differs from run to run is normalised by `normalise` before comparing (VARYING: run
ids, times, durations, pids, hashes, Terraform ids, tool versions, the HTTP Date, a
stage's time when it rounds to 0, and the health check's connection-refused attempts
before the site is up); lines of a block whose stages run in parallel are compared
sorted (PARALLEL). The page shows the values of the run that wrote it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "examples.md"
COPIED = ("plans", "stacks", "playbooks", "scripts")
SKIPPED = shutil.ignore_patterns(".terraform", "terraform.tfstate.d", "*.tfstate*",
                                 ".terraform.lock.hcl", "__pycache__", "Pulumi.*.yaml")
# The documented ports: the quickstart per environment, the DR lab's router/primary/standby.
PORTS = (8089, 8090, 8091, 8180, 8181, 8182)
BLOCK = re.compile(r"(```console\n)(.*?)(```)", re.S)
RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{4,6}\b")  # ids had 4 random digits once
EXIT = re.compile(r"^\[exit (\d+)\]$")
# Commands that run stages in parallel: their blocks' lines interleave freely.
PARALLEL = ("iacorch apply plans/dr-failover.yaml", "iacorch plan plans/dr-failover.yaml")
# (pattern, replacement) applied in order by `normalise`.
VARYING = [
    (RUN_ID, "RUN"),
    (re.compile(r"\b\d\d:\d\d:\d\d\b"), "HH:MM:SS"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "Ns"),
    (re.compile(r": ok in Ns\b"), ": ok"),   # a stage's time is left out when it rounds to 0
    (re.compile(r"\bpid \d+ *"), "pid PID "),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "UUID"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "HASH"),
    (re.compile(r"^Date: .*$", re.M), "Date: DATE"),
    (re.compile(r"\b(Terraform|Python)[ /]\d+\.\d+\.\d+\b"), r"\1 VERSION"),
    # How often the health check finds the site not yet listening depends on timing.
    (re.compile(r"^.*attempt \d+/\d+: .* -> no response .*\n", re.M), ""),
    (re.compile(r"attempt \d+/"), "attempt N/"),
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def normalise(text: str) -> str:
    """`text` with what varies between runs replaced by placeholders."""
    for pattern, replacement in VARYING:
        text = pattern.sub(replacement, text)
    return text


class Transcript:
    """Runs the page's commands in a project directory holding a copy of the examples."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.ports = {documented: free_port() for documented in PORTS}
        tools = str(Path(sys.executable).parent)   # iacorch and ansible-playbook
        self.env = {**env, "IACORCH_HOME": str(root / ".iacorch"), "IACORCH_USER": "alice",
                    "PYTHONUNBUFFERED": "1", "PATH": tools + os.pathsep + env.get("PATH", "")}
        for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "TERM"):
            self.env.pop(name, None)
        if not Path(self.env.get("TF_CLI_CONFIG_FILE") or "/").is_file():
            self.env.pop("TF_CLI_CONFIG_FILE", None)   # else Terraform warns on every command
        self.last_run = ""
        self._use_free_ports()

    def _use_free_ports(self) -> None:
        for path in [*(self.root / "plans").glob("*.yaml"), self.root / "scripts/dr/lab"]:
            path.write_text(self._ports(path.read_text(), self.ports))

    @staticmethod
    def _ports(text: str, mapping: dict[int, int]) -> str:
        return re.sub(r"\b\d{4,5}\b", lambda m: str(mapping.get(int(m[0]), m[0])), text)

    def run(self, command: str) -> tuple[str, str, int]:
        """Run one `$ ` command; (the command as shown, its output as shown, exit code)."""
        if self.last_run:
            command = RUN_ID.sub(self.last_run, command)
        actual = self._ports(command, self.ports)
        if command.startswith("export "):       # keep the variable for later commands
            name = command.split()[1].split("=")[0]
            actual = f'{actual} && printf %s "${name}"'
        done = subprocess.run(["bash", "-c", actual], cwd=self.root, env=self.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        output = done.stdout.replace("\r\n", "\n")
        if command.startswith("export "):
            self.env[name] = output
            output = ""
        runs = RUN_ID.findall(output)
        if command.startswith("iacorch ") and runs:
            self.last_run = runs[0]
        return command, self.shown(output), done.returncode

    def shown(self, output: str) -> str:
        """Output as the page shows it: the documented ports, the checkout at ~/iacorch."""
        for root in {str(self.root.resolve()), str(self.root)}:
            output = output.replace(root, "~/iacorch")
        back = {real: documented for documented, real in self.ports.items()}
        return self._ports(output, back)

    def block(self, text: str) -> str:
        """A console block's text with each command's output replaced by real output."""
        lines = []
        for command in [line[2:] for line in text.splitlines() if line.startswith("$ ")]:
            command, output, code = self.run(command)
            lines.append(f"$ {command}\n{output}")
            if output and not output.endswith("\n"):
                lines.append("\n")
            if command.startswith("iacorch ") or code:
                lines.append(f"[exit {code}]\n")
        return "".join(lines)

    def page(self, page: str) -> str:
        """The page with every console block rerun, in order."""
        return BLOCK.sub(lambda m: m[1] + self.block(m[2]) + m[3], page)


def comparable(block: str) -> list[str]:
    """A block's normalised lines, sorted when one of its commands runs stages in parallel."""
    lines = normalise(block).splitlines()
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    parallel = any(command.startswith(p) for command in commands for p in PARALLEL)
    return sorted(lines) if parallel else lines


def differences(page: str, real: str) -> str:
    """A readable diff of the console blocks that differ after normalising, or ''."""
    found = []
    shown, actual = BLOCK.findall(page), BLOCK.findall(real)
    if len(shown) != len(actual):
        return f"{len(shown)} console blocks on the page, {len(actual)} run"
    for number, (old, new) in enumerate(zip(shown, actual, strict=True), 1):
        a, b = comparable(old[1]), comparable(new[1])
        if a != b:
            found.append(f"console block {number}:\n" + "\n".join(difflib.unified_diff(
                a, b, "docs/examples.md", "real output", lineterm="")))
    return "\n\n".join(found)


def run_examples(page: str, root: Path, env: dict[str, str]) -> str:
    """The page rerun in `root`, which must hold a copy of the examples; stops the DR lab."""
    try:
        return Transcript(root, env).page(page)
    finally:
        lab = root / ".iacorch" / "dr-lab"
        if lab.exists():
            subprocess.run([str(root / "scripts/dr/lab"), "down"], cwd=root,
                           env={**env, "IACORCH_HOME": str(root / ".iacorch")},
                           capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    """Rewrite docs/examples.md with real output, or with --check compare it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--page", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    page = args.page.read_text()
    with tempfile.TemporaryDirectory(prefix="iacorch-examples-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()                  # marks the project root
        for name in COPIED:
            shutil.copytree(ROOT / name, root / name, ignore=SKIPPED)
        real = run_examples(page, root, dict(os.environ))
    if not args.check:
        args.page.write_text(real)
        return 0
    diff = differences(page, real)
    print(diff or f"{args.page}: every console block matches real output")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
