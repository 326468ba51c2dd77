"""Child processes: argv only, streamed and masked line by line, timed out politely.

Every driver that starts a program goes through `ProcessRunner.run`. A child runs
in its own session, so a terminal Ctrl-C reaches only iacorch; the engine then
forwards exactly one SIGINT through `CancelToken.interrupt()` (a second SIGINT
makes Terraform exit without saving state).

Children must not outlive an orchestrator that is `kill -9`'d. Instead of a
per-spawn PR_SET_PDEATHSIG (a `preexec_fn` forces fork() and is unsafe with
threads; a `setpriv` wrapper doubles the cost of a spawn and covers only the
direct child), each runner keeps one small guard process that holds the read end
of a pipe. When the orchestrator dies the pipe reaches EOF and the guard stops
every process group still registered with it: SIGINT, SIGTERM, SIGKILL after the
usual graces, so Terraform can still release its state lock.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from iacorch.model.masking import Masker

_READ_SIZE = 65536
_MAX_LINE = 1 << 20        # a line longer than this is cut into pieces
_TAIL_LINE = 2000          # characters of one line kept in ProcessResult.tail
_CANCEL_POLL = 0.1         # how often a running child looks at its CancelToken
_EXIT_POLL = 0.05          # only where pidfd_open is missing (not Linux, or Linux < 5.3)
_DRAIN = 0.5               # after exit, how long to wait for output a background job still holds


class CancelToken:
    """Shared by the engine and running stages: one interrupt, then perhaps a kill."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()
        self._killed = threading.Event()

    def interrupt(self) -> None:
        """Ask running children to stop: each gets exactly one SIGINT."""
        self._interrupted.set()

    def kill(self) -> None:
        """Stop now (a third Ctrl-C): SIGKILL, possible data loss."""
        self._interrupted.set()
        self._killed.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    @property
    def killed(self) -> bool:
        return self._killed.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout`, waking early on an interrupt; True when interrupted."""
        return self._interrupted.wait(timeout)


@dataclass(frozen=True, slots=True)
class ProcessResult:
    argv: tuple[str, ...]          # as started, masked
    exit_code: int | None          # None when the process could not start; 128+N after signal N
    duration: float
    tail: tuple[str, ...] = ()     # last lines of output, masked
    timed_out: bool = False
    interrupted: bool = False
    killed: bool = False
    start_error: str | None = None  # e.g. "terraform: not found on PATH"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.interrupted)


def which(program: str, env: Mapping[str, str] | None = None) -> str | None:
    """The full path `program` resolves to with the PATH of `env` (an overlay), or None."""
    path = (env or {}).get("PATH", os.environ.get("PATH", os.defpath))
    return shutil.which(program, path=path)


@functools.cache
def python_script_dirs() -> tuple[str, ...]:
    """Where the programs of iacorch's own Python dependencies (ansible-playbook) live.

    Next to the running interpreter (a venv, pipx), then the interpreter's scripts
    directory and, outside a venv, the user's (`pip install --user`): so that
    `.venv/bin/iacorch` works without activating anything.
    """
    import site
    import sysconfig

    found = [os.path.dirname(sys.executable), sysconfig.get_path("scripts")]
    if site.ENABLE_USER_SITE:
        found.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    return tuple(dict.fromkeys(d for d in found if d and os.path.isdir(d)))


def with_python_scripts(path: str | None) -> str:
    """`path` (a PATH value; None for iacorch's own) with `python_script_dirs()` first."""
    entries = (os.environ.get("PATH", os.defpath) if path is None else path).split(os.pathsep)
    first = python_script_dirs()
    return os.pathsep.join([*first, *(e for e in entries if e not in first)])


_Started = tuple[int, "subprocess.Popen[bytes] | None"]   # a child's pid, and its Popen if any


class ProcessRunner:
    """Starts children in their own session and owns their whole life."""

    def __init__(self, *, sigint_grace: float = 10.0, sigterm_grace: float = 5.0,
                 tail_lines: int = 40, orphan_guard: bool = True) -> None:
        self.sigint_grace = sigint_grace
        self.sigterm_grace = sigterm_grace
        self.tail_lines = tail_lines
        self._guard = _OrphanGuard(sigint_grace, sigterm_grace) if orphan_guard else None
        # Encoded once: copying and encoding os.environ for every child is a tenth of a
        # no-op stage. iacorch never changes its own environment while it runs.
        self._base_env = dict(os.environb)
        # posix_spawn, unlike Popen, does not close the descriptors a child should not
        # get: Python makes its own close-on-exec, and those iacorch inherited (a lock
        # its caller holds on fd 9, say) are made so here.
        self._posix_spawn_works = hasattr(os, "posix_spawn") and _close_inherited_on_exec()

    def close(self) -> None:
        """Stop the orphan guard (it also stops by itself when this process exits)."""
        if self._guard is not None:
            self._guard.close()

    def run(self, argv: Sequence[str], *, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            cancel: CancelToken | None = None, masker: Masker | None = None,
            on_line: Callable[[str], None] | None = None,
            stdin: bytes | None = None) -> ProcessResult:
        """Run `argv` to its end, streaming masked output lines to `on_line`.

        `env` is laid over os.environ as it was when this runner was made.
        `timeout` (seconds) and `cancel.interrupt()` send one SIGINT to the child's
        process group, then SIGTERM and SIGKILL after the graces; `cancel.kill()`
        sends SIGKILL at once. A program that cannot start gives `exit_code=None`
        and `start_error`, never an exception.
        """
        masker = masker or Masker()
        shown = tuple(masker.mask(str(a)) for a in argv)
        if cancel is not None and cancel.interrupted:
            return ProcessResult(shown, None, 0.0, interrupted=True, killed=cancel.killed)
        if timeout is not None and timeout <= 0:     # the stage's time is already used up
            return ProcessResult(shown, None, 0.0, timed_out=True)
        started = time.monotonic()
        child_env = None if env is None else {
            **self._base_env, **{os.fsencode(k): os.fsencode(str(v)) for k, v in env.items()}}
        child = self._spawn([str(a) for a in argv], cwd, child_env, stdin)
        if isinstance(child, str):
            return ProcessResult(shown, None, time.monotonic() - started,
                                 start_error=masker.mask(child))
        watch = _Watch(child, self, masker, on_line, stdin, cancel, timeout, started)
        try:
            watch.follow()
        except BaseException:
            watch.abandon()
            raise
        return watch.result(shown, time.monotonic() - started)

    def _spawn(self, argv: list[str], cwd: Path | str | None, env: dict[bytes, bytes] | None,
               stdin: bytes | None) -> _Child | str:
        """The started child, or a sentence saying why it could not start."""
        if not argv:
            return "cannot start an empty command"
        if cwd is not None and not os.path.isdir(cwd):
            return f"{argv[0]}: working directory {cwd} does not exist"
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        stdin_r, stdin_w = _devnull(), None
        if stdin is not None:
            stdin_r, stdin_w = os.pipe()
        ours = [fd for fd in (stdout_r, stderr_r, stdin_w) if fd is not None]
        child_fds = (stdin_r, stdout_w, stderr_w)
        try:
            # posix_spawn cannot change directory (not before Python 3.13), so it starts
            # only children that run where we run: `iacorch apply plan.yaml` in CI.
            spawned: _Started | None = None
            if self._posix_spawn_works and min(child_fds) > 2 and _runs_here(cwd):
                spawned = self._posix_spawn(argv, env if env is not None else os.environb,
                                            child_fds)
            started = spawned if spawned is not None else _popen(argv, cwd, env, child_fds)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for child_end in child_fds if stdin_w is not None else child_fds[1:]:
                os.close(child_end)   # /dev/null stays open for the next child
        if isinstance(started, str):
            for fd in ours:
                os.close(fd)
            return started
        pid, popen = started
        if self._guard is not None:
            self._guard.register(pid)
        return _Child(pid, stdout_r, stderr_r, stdin_w, popen)

    def _posix_spawn(self, argv: list[str], env: Mapping[bytes, bytes],
                     fds: tuple[int, int, int]) -> _Started | None:
        """Start `argv` with posix_spawn, about a quarter less CPU than Popen; None when it
        cannot start that way, so that Popen starts it or says why it cannot, in its words."""
        search = env.get(b"PATH")
        # Along the child's PATH, looked up at every start. posix_spawnp searches ours, in
        # C; where the child's differs, shutil.which searches it.
        spawn, program = os.posix_spawnp, argv[0]
        if os.sep not in program and (search is None or search != os.environb.get(b"PATH")):
            spawn, found = os.posix_spawn, shutil.which(program, path=os.fsdecode(
                search if search is not None else os.defpath.encode()))
            if found is None:
                return None
            program = found
        try:
            pid = spawn(program, argv, env, setsid=True, setsigdef=_DEFAULT_SIGNALS,
                        file_actions=[(os.POSIX_SPAWN_DUP2, fd, target)
                                      for target, fd in enumerate(fds)])
        except NotImplementedError:   # a libc without POSIX_SPAWN_SETSID
            self._posix_spawn_works = False
            return None
        except (OSError, ValueError):
            return None
        return pid, None


def _close_inherited_on_exec() -> bool:
    """Mark every descriptor above 2 close-on-exec; False where they cannot be listed."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in names:
        if int(name) > 2:
            with contextlib.suppress(OSError):   # the listing's own, closed by now
                os.set_inheritable(int(name), False)
    return True


def _runs_here(cwd: Path | str | None) -> bool:
    """Whether a child started in `cwd` would run in our own working directory."""
    if cwd is None:
        return True
    try:
        return os.fspath(cwd) == os.getcwd()
    except OSError:     # our directory was removed: let Popen change to `cwd`
        return False


def _popen(argv: list[str], cwd: Path | str | None, env: dict[bytes, bytes] | None,
           fds: tuple[int, int, int]) -> _Started | str:
    """Start `argv` with subprocess.Popen: in another directory, or where posix_spawn cannot."""
    restorer = _sigint_restorer()
    if restorer and (problem := _cannot_start(argv[0], cwd, env)):
        return problem  # through `env`, a missing program would be an exit code
    try:
        proc = subprocess.Popen([*restorer, *argv], cwd=cwd, env=env, start_new_session=True,
                                stdin=fds[0], stdout=fds[1], stderr=fds[2])
    except FileNotFoundError:
        return _not_found(argv[0])
    except PermissionError:
        return _not_executable(argv[0])
    except OSError as exc:
        return f"{argv[0]}: cannot execute: {exc.strerror or exc}"
    except ValueError as exc:       # e.g. a NUL byte in an argument
        return f"{argv[0]}: cannot start: {exc}"
    return proc.pid, proc


class _Child:
    """A started child: its process id, our ends of its pipes, and how it is reaped."""

    __slots__ = ("pid", "stdout", "stderr", "stdin", "popen", "returncode")

    def __init__(self, pid: int, stdout: int, stderr: int, stdin: int | None,
                 popen: subprocess.Popen[bytes] | None) -> None:
        self.pid, self.stdout, self.stderr, self.stdin = pid, stdout, stderr, stdin
        self.popen = popen
        self.returncode: int | None = None

    def wait(self) -> int:
        """Reap the child (it has exited, or been killed): its exit code, -N after signal N."""
        if self.returncode is None:
            if self.popen is not None:
                self.returncode = self.popen.wait()
            else:
                try:
                    self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
                except ChildProcessError:  # reaped by someone else: as subprocess, assume 0
                    self.returncode = 0
        return self.returncode

    def close_stdin(self) -> None:
        if self.stdin is not None:
            fd, self.stdin = self.stdin, None
            os.close(fd)

    def close(self) -> None:
        """Close our ends of the pipes."""
        self.close_stdin()
        for fd in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Watch:
    """One running child: its output, its deadline, its cancellation, its stop signals."""

    def __init__(self, child: _Child, runner: ProcessRunner, masker: Masker,
                 on_line: Callable[[str], None] | None, stdin: bytes | None,
                 cancel: CancelToken | None, timeout: float | None, started: float) -> None:
        self.child = child
        self.runner = runner
        self.masker = masker
        self.on_line = on_line
        self.cancel = cancel
        self.deadline = None if timeout is None else started + timeout
        self.tail: deque[str] = deque(maxlen=max(runner.tail_lines, 0))
        self.timed_out = self.interrupted = self.killed = False
        self.stop_step = 0                 # 0 none, 1 SIGINT sent, 2 SIGTERM sent, 3 SIGKILL sent
        self.next_step_at: float | None = None
        self.exited = self.finished = False
        self.pending_stdin = memoryview(stdin or b"")
        margin = 12 * max((len(s) for s in masker.secrets), default=0)
        # select.poll, not a selectors object: that layer cost ~17 µs of the ~250 µs of CPU
        # that starting and watching a no-op child takes.
        self.poller = select.poll()
        self.readers: dict[int, _LineSplitter] = {}
        for fd in (child.stdout, child.stderr):
            self.readers[fd] = _LineSplitter(_MAX_LINE, margin)
            self.poller.register(fd, _READABLE)
        if child.stdin is not None:
            os.set_blocking(child.stdin, False)
            self.poller.register(child.stdin, select.POLLOUT)
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(child.pid)
            self.poller.register(self.pidfd, _READABLE)

    def follow(self) -> None:
        """Stream output until the child exits, then drain what it left in the pipes."""
        while not self.exited:
            now = time.monotonic()
            self._check_stop_reasons(now)
            for fd, _ in self.poller.poll(self._wait_time(now)):
                self._handle(fd)
            if self.pidfd is None and not self.exited:
                self.exited = _has_exited(self.child.pid)
        if self.stop_step:
            # We were stopping the group and its leader is gone: stragglers that ignored
            # SIGINT would otherwise run on unwatched.
            self._signal(signal.SIGKILL)
        drain_until = time.monotonic() + _DRAIN
        while self.readers and (left := drain_until - time.monotonic()) > 0:
            for fd, _ in self.poller.poll(_milliseconds(left)):
                self._handle(fd)
        self._finish()

    def result(self, argv: tuple[str, ...], duration: float) -> ProcessResult:
        code = self.child.returncode
        exit_code = 128 - code if code is not None and code < 0 else code
        return ProcessResult(argv, exit_code, duration, tuple(self.tail), self.timed_out,
                             self.interrupted, self.killed)

    def abandon(self) -> None:
        """A bug or KeyboardInterrupt inside run(): leave no child behind."""
        if not self.exited:
            self._signal(signal.SIGKILL)
        self._finish()

    def _check_stop_reasons(self, now: float) -> None:
        if self.cancel is not None and self.cancel.killed and self.stop_step < 3:
            self.interrupted = self.killed = True
            self._step_to(3, now)
        elif self.cancel is not None and self.cancel.interrupted and not self.interrupted:
            self.interrupted = True
            self._begin_stop(now)
        if self.deadline is not None and now >= self.deadline and self.stop_step == 0:
            self.timed_out = True
            self._begin_stop(now)
        if self.next_step_at is not None and now >= self.next_step_at:
            self._step_to(self.stop_step + 1, now)

    def _begin_stop(self, now: float) -> None:
        if self.stop_step == 0:        # never a second SIGINT, whatever asks for it
            self._step_to(1, now)

    def _step_to(self, step: int, now: float) -> None:
        self.stop_step = step
        sig, grace = {1: (signal.SIGINT, self.runner.sigint_grace),
                      2: (signal.SIGTERM, self.runner.sigterm_grace),
                      3: (signal.SIGKILL, None)}[step]
        self._signal(sig)
        self.killed = self.killed or step == 3
        self.next_step_at = None if grace is None else now + grace

    def _signal(self, sig: signal.Signals) -> None:
        # The leader is not reaped before we decide it exited, so its pgid cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, sig)

    def _wait_time(self, now: float) -> int | None:
        """Milliseconds until something must be looked at; None: only when the child acts."""
        waits = [t - now for t in (self.next_step_at,) if t is not None]
        if self.deadline is not None and self.stop_step == 0:
            waits.append(self.deadline - now)
        if self.cancel is not None and self.stop_step < 3:
            waits.append(_CANCEL_POLL)
        if self.pidfd is None:
            waits.append(_EXIT_POLL)
        return _milliseconds(min(waits)) if waits else None

    def _handle(self, fd: int) -> None:
        if fd == self.pidfd:
            self.exited = True
            self.poller.unregister(fd)
        elif fd == self.child.stdin:
            self._write_stdin(fd)
        else:
            data = _read(fd)
            splitter = self.readers[fd]
            if not data:
                self.poller.unregister(fd)
                del self.readers[fd]
            for line in splitter.feed(data, final=not data):
                self._emit(line)

    def _write_stdin(self, fd: int) -> None:
        try:
            sent = os.write(fd, self.pending_stdin[:_READ_SIZE])
        except (BrokenPipeError, BlockingIOError) as exc:
            sent = 0 if isinstance(exc, BlockingIOError) else len(self.pending_stdin)
        self.pending_stdin = self.pending_stdin[sent:]
        if not self.pending_stdin:
            self.poller.unregister(fd)
            self.child.close_stdin()

    def _emit(self, line: str) -> None:
        masked = self.masker.mask(line)
        self.tail.append(masked if len(masked) <= _TAIL_LINE
                         else f"{masked[:_TAIL_LINE]}... ({len(masked) - _TAIL_LINE} more)")
        if self.on_line is not None:
            self.on_line(masked)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.runner._guard is not None:
            self.runner._guard.unregister(self.child.pid)
        self.child.wait()
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.child.close()


def _sigint_restorer() -> list[str]:
    """What to run a child through so that it gets the default SIGINT: a signal that this
    process ignores (as a background job of a non-interactive shell does) stays ignored
    across exec, and the engine stops children with SIGINT. Nothing when it is not ignored."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return []
    return _env_default_signal()


def _cannot_start(program: str, cwd: Path | str | None,
                  env: Mapping[bytes, bytes] | None) -> str | None:
    """The sentence Popen's error would give for `program`, found before starting it."""
    if os.sep in program:
        path = os.path.join(cwd or "", program)
        if not os.path.exists(path):
            return _not_found(program)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            return _not_executable(program)
        return None
    search = (env or os.environb).get(b"PATH", os.defpath.encode())
    return None if shutil.which(program, path=os.fsdecode(search)) else _not_found(program)


def _not_found(program: str) -> str:
    return f"{program}: {'no such file' if os.sep in program else 'not found on PATH'}"


def _not_executable(program: str) -> str:
    return f"{program}: cannot execute: permission denied"


@functools.cache
def _env_default_signal() -> list[str]:
    env = shutil.which("env")
    if env is None or subprocess.run([env, "--default-signal=INT", "true"],
                                     capture_output=True).returncode != 0:
        return []   # no GNU env (coreutils >= 8.31): the SIGTERM after the grace stops them
    return [env, "--default-signal=INT"]


_DEVNULL_LOCK = threading.Lock()
_devnull_fd: int | None = None


def _devnull() -> int:
    """One /dev/null for every child's stdin, open for the life of this process."""
    global _devnull_fd
    with _DEVNULL_LOCK:
        if _devnull_fd is None:
            _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _devnull_fd


_READABLE = select.POLLIN | select.POLLPRI
# What Popen's restore_signals resets, and SIGINT: ignored by a background job of a
# script, it would stay ignored across exec, and the engine stops children with it.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)


def _milliseconds(seconds: float) -> int:
    """A poll timeout: rounded up, so that a deadline is never polled for in a busy loop."""
    return max(0, math.ceil(seconds * 1000))


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _READ_SIZE)
    except OSError:
        return b""


def _has_exited(pid: int) -> bool:
    """True once `pid` has exited; WNOWAIT leaves it unreaped so its pgid stays ours."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _LineSplitter:
    """Bytes in, text lines out: UTF-8 with replacement, CR overwrites, long lines cut."""

    def __init__(self, limit: int, secret_margin: int) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[str] = []
        self._size = 0
        self._limit = limit
        self._margin = secret_margin

    def feed(self, data: bytes, final: bool = False) -> list[str]:
        """The lines completed by `data`; with `final`, also the unterminated last line."""
        text = self._decoder.decode(data, final)
        if "\n" in text:
            head, *lines = text.split("\n")
            lines.insert(0, "".join(self._pieces) + head)
            tail = lines.pop()
            self._pieces, self._size = ([tail], len(tail)) if tail else ([], 0)
        else:
            lines = []
            if text:
                self._pieces.append(text)
                self._size += len(text)
        if final and self._size:
            lines.append("".join(self._pieces))
            self._pieces, self._size = [], 0
        while self._size > self._limit:
            lines.append(self._cut())
        return [_as_shown(line) for line in lines]

    def _cut(self) -> str:
        # Cut at whitespace, away from the end, so a secret is not split and left unmasked.
        text = "".join(self._pieces)
        end = min(self._limit, max(len(text) - self._margin, len(text) // 2))
        cut = max(text.rfind(" ", 0, end), text.rfind("\t", 0, end)) + 1 or end
        self._pieces, self._size = [text[cut:]], len(text) - cut
        return text[:cut]


def _as_shown(line: str) -> str:
    """What a terminal would leave visible: CRLF ends a line, a lone CR restarts it."""
    line = line.removesuffix("\r")
    if "\r" in line:
        line = next((part for part in reversed(line.split("\r")) if part), "")
    return line


_GUARD_SCRIPT = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
groups, pending = set(), b""
fd = sys.stdin.fileno()
os.set_blocking(fd, False)
while True:
    # Poll rather than block: a reader blocked on the pipe is woken by every message,
    # which costs the orchestrator a wake-up per child started and per child ended.
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        time.sleep(0.1)
        continue
    if not data:
        break
    *lines, pending = (pending + data).split(b"\\n")
    for line in lines:
        (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
def alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False
graces = (float(sys.argv[1]), float(sys.argv[2]), 0.0)
for sig, grace in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), graces):
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    until = time.monotonic() + grace
    while groups and time.monotonic() < until:
        time.sleep(0.05)
        groups = {g for g in groups if alive(g)}
"""


class _OrphanGuard:
    """A helper process that stops our children's process groups if we die first."""

    def __init__(self, sigint_grace: float, sigterm_grace: float) -> None:
        self._graces = (sigint_grace, sigterm_grace)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken = False

    def register(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def unregister(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                self._proc.stdin.close()
                self._proc.wait()
            self._proc, self._broken = None, True

    def _send(self, message: str) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                if self._proc is None:
                    self._proc = self._start()
                assert self._proc.stdin is not None
                os.write(self._proc.stdin.fileno(), message.encode())
            except OSError:
                self._broken = True     # children still run; they just lose the guard

    def _start(self) -> subprocess.Popen[bytes]:
        # Its own session: a terminal Ctrl-C or a kill of our group must not take it with us.
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD_SCRIPT, *map(str, self._graces)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd="/", start_new_session=True, bufsize=0)
