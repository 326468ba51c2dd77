"""Running the pulumi CLI for the Automation API: own session, one SIGINT, then a kill.

The Automation API starts `pulumi` itself; `InterruptibleCommand` is the command
it is given, so that iacorch decides which signal the CLI gets, and when.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from iacorch.drivers.base import StageContext

_POLL_SECONDS = 0.05
TAIL_LINES = 40


class InterruptibleCommand:
    """The `pulumi` CLI for the Automation API, each run in its own session.

    Same interface as `pulumi.automation.PulumiCommand` (`command`, `version`,
    `run`), plus `interrupt` (one SIGINT: Pulumi finishes in-flight steps, saves
    its state and releases the lock) and `kill`. Once stopping, only `pulumi
    cancel` may start, so no new update begins after an interrupt.
    """

    def __init__(self, automation: Any, command: str, version: Any,
                 popen: Callable[..., Any] = subprocess.Popen) -> None:
        self.command, self.version = command, version
        self._automation, self._popen = automation, popen
        self._running: set[Any] = set()
        self._lock = threading.Lock()
        self._stopping = False

    @classmethod
    def create(cls, automation: Any) -> InterruptibleCommand:
        """Find the CLI and check its version; FileNotFoundError when it is not on PATH."""
        probe = automation.PulumiCommand()
        return cls(automation, probe.command, probe.version)

    def run(self, args: list[str], cwd: str, additional_env: Mapping[str, str],
            on_output: Callable[[str], Any] | None = None,
            on_error: Callable[[str], Any] | None = None, *, stdin: str | None = None) -> Any:
        """Run one CLI command; a non-zero exit raises the Automation API's CommandError.

        `stdin` is fed to the CLI (a secret config value; see `set_secret_config`);
        without it the CLI reads nothing: it must never wait on our terminal.
        """
        from pulumi.automation.errors import create_command_error

        if self._stopping and args[:1] != ["cancel"]:
            raise create_command_error(self._automation.CommandResult(
                stdout="", stderr="error: not started: iacorch is stopping this stage", code=-2))
        options = args[:args.index("--")] if "--" in args else args
        if "--non-interactive" not in options:
            args = ["--non-interactive", *args]
        env = {**os.environ, **additional_env, "PULUMI_AUTOMATION_API": "true"}
        out: list[str] = []
        err: list[str] = []
        with self._popen([self.command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                         cwd=cwd, env=env, encoding="utf-8", start_new_session=True) as proc:
            with self._lock:
                self._running.add(proc)
            try:
                pumps = [threading.Thread(target=_pump, args=(proc.stdout, on_output, out)),
                         threading.Thread(target=_pump, args=(proc.stderr, on_error, err))]
                for pump in pumps:
                    pump.start()
                try:
                    if stdin is not None:     # after the pumps: the CLI may print first
                        _feed(proc, stdin)
                finally:
                    for pump in pumps:
                        pump.join()
                code = proc.wait()
            finally:
                with self._lock:
                    self._running.discard(proc)
        result = self._automation.CommandResult(
            stdout="\n".join(out), stderr="\n".join(err), code=code)
        if code != 0:
            raise create_command_error(result)
        return result

    def set_secret_config(self, stack: str, key: str, value: str, cwd: str,
                          additional_env: Mapping[str, str]) -> None:
        """`pulumi config set --secret` with the value on stdin, not in the argv.

        The Automation API's `set_config` and `set_all_config` put every value on the
        command line, where any local user can read it in /proc/<pid>/cmdline.
        """
        self.run(["config", "set", "--secret", "--stack", stack, "--", key], cwd,
                 additional_env, stdin=value)

    @property
    def running(self) -> bool:
        """True while a CLI process started by this command has not been reaped."""
        with self._lock:
            return any(proc.returncode is None for proc in self._running)

    def interrupt(self) -> None:
        """One SIGINT to the CLI itself; it tells its plugins to stop."""
        self._stopping = True
        self._signal(signal.SIGINT, group=False)

    def kill(self) -> None:
        """SIGKILL to the CLI's whole process group (plugins and program included)."""
        self._stopping = True
        self._signal(signal.SIGKILL, group=True)

    def _signal(self, signum: int, *, group: bool) -> None:
        with self._lock:
            for proc in self._running:
                if proc.returncode is None:
                    with suppress(ProcessLookupError):
                        if group:
                            os.killpg(proc.pid, signum)
                        else:
                            os.kill(proc.pid, signum)


def _feed(proc: Any, text: str) -> None:
    """Give the CLI `text` as its whole input, or stop it: a CLI that read only part of a
    secret would store that part."""
    try:
        # `pulumi config set` drops one trailing newline from what it reads, so a value
        # that ends in one (a PEM block, a YAML `|` text) keeps it. Bytes, so that a
        # value from the environment that is not valid UTF-8 passes as it came.
        proc.stdin.buffer.write(os.fsencode(text + "\n"))
        proc.stdin.close()
    except BrokenPipeError:
        pass    # the CLI exited without reading: it reports its own error
    except BaseException:
        with suppress(ProcessLookupError):
            proc.kill()
        raise


def _pump(stream: Any, callback: Callable[[str], Any] | None, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        line = line.rstrip()
        if callback:
            callback(line)
        sink.append(line)
    stream.close()


class Watcher:
    """On cancel or timeout: one SIGINT to the CLI, then a kill when the grace runs out."""

    def __init__(self, ctx: StageContext, command: Any, grace: float) -> None:
        self._ctx, self._command, self._grace = ctx, command, grace
        self.reason: str | None = None          # "interrupted" or "timed out"
        self.killed = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pulumi-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        timeout = self._ctx.remaining_timeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(_POLL_SECONDS):
            if self._ctx.cancel.interrupted or (
                    deadline is not None and time.monotonic() >= deadline):
                break
        else:
            return
        self.reason = "interrupted" if self._ctx.cancel.interrupted else "timed out"
        self._ctx.log(f"pulumi: {self.reason}; asking the CLI to stop cleanly (SIGINT)")
        self._command.interrupt()
        give_up = time.monotonic() + self._grace
        while not self._done.wait(_POLL_SECONDS):
            if not self._command.running:
                continue      # stopped; the Automation API may still be collecting events
            if self._ctx.cancel.killed or time.monotonic() >= give_up:
                self._ctx.log("pulumi: the CLI did not stop; killing it")
                self.killed = True
                self._command.kill()
                return
