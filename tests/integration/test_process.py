"""ProcessRunner against real children: streaming, masking, signals, orphans, start errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from iacorch.model.masking import Masker
from iacorch.process import CancelToken, ProcessRunner, which

pytestmark = pytest.mark.integration

PY = sys.executable

# A child that counts the signals it receives in a file, one name per line, and
# says "ready" once its handlers are installed. argv[1]: file, argv[2]: what to do on
# SIGINT ("count" keeps running, "exit" exits 130), argv[3]: "ignore-term" or "".
COUNTING_CHILD = textwrap.dedent("""
    import signal, sys, time
    path, on_int, term = sys.argv[1], sys.argv[2], sys.argv[3]
    def record(signum, frame):
        with open(path, "a") as f:
            f.write(signal.Signals(signum).name + "\\n")
        if signum == signal.SIGINT and on_int == "exit":
            sys.exit(130)
    signal.signal(signal.SIGINT, record)
    if term == "ignore-term":
        signal.signal(signal.SIGTERM, record)
    print("ready", flush=True)
    while True:
        time.sleep(0.01)
""")


@pytest.fixture
def runner():
    runner = ProcessRunner(sigint_grace=0.3, sigterm_grace=0.3)
    yield runner
    runner.close()


def received(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_lines_stream_in_order_while_the_child_runs_and_secrets_are_masked(runner, tmp_path):
    go_on = tmp_path / "go-on"
    script = (f"echo first; echo token=hunter2-secret; "
              f"while [ ! -f {go_on} ]; do sleep 0.01; done; echo last")
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "first":
            go_on.touch()     # the child waits for this: only a streaming reader gets here

    result = runner.run(["bash", "-c", script], masker=Masker(["hunter2-secret"]),
                        on_line=on_line, timeout=10)
    assert result.ok and not result.timed_out
    assert seen == ["first", "token=***", "last"]
    assert result.tail == ("first", "token=***", "last")
    assert "hunter2-secret" not in result.argv[2]


def test_stdout_and_stderr_both_reach_on_line(runner):
    seen: list[str] = []
    result = runner.run(["bash", "-c", "echo out; echo err >&2"], on_line=seen.append)
    assert result.exit_code == 0
    assert sorted(seen) == ["err", "out"]


def test_partial_lines_carriage_returns_and_invalid_utf8(runner):
    seen: list[str] = []
    script = r"printf 'par'; sleep 0.05; printf 'tial\n10%%\r50%%\r100%%\r\nbad \377 byte\nno end'"
    runner.run(["bash", "-c", script], on_line=seen.append)
    assert seen == ["partial", "100%", "bad \ufffd byte", "no end"]


def test_a_very_long_line_arrives_whole_in_bounded_pieces(runner):
    seen: list[str] = []
    result = runner.run([PY, "-c", "print('x' * 3_000_000); print('after')"],
                        on_line=seen.append)
    assert result.ok
    assert seen[-1] == "after"
    assert "".join(seen[:-1]) == "x" * 3_000_000
    assert max(len(line) for line in seen) <= 1 << 20
    assert len(result.tail[-2]) < 3000          # the tail keeps a readable prefix only


def test_100k_lines_lose_nothing(runner):
    seen: list[str] = []
    result = runner.run(["seq", "1", "100000"], on_line=seen.append)
    assert result.ok
    assert seen == [str(n) for n in range(1, 100001)]
    assert result.tail == tuple(str(n) for n in range(99961, 100001))


def test_env_is_an_overlay_and_stdin_is_fed_or_dev_null(runner, tmp_path):
    seen: list[str] = []
    runner.run(["bash", "-c", 'echo "$IACORCH_TEST_VAR $(command -v bash)"; pwd'],
               env={"IACORCH_TEST_VAR": "hello"}, cwd=tmp_path, on_line=seen.append)
    assert seen == [f"hello {which('bash')}", str(tmp_path)]

    payload = b"".join(b"line %d\n" % n for n in range(50_000))   # more than a pipe holds
    lines: list[str] = []
    result = runner.run(["cat"], stdin=payload, on_line=lines.append)
    assert result.ok and len(lines) == 50_000 and lines[-1] == "line 49999"

    quiet = runner.run(["cat"], on_line=lines.append, timeout=5)
    assert quiet.ok and not quiet.timed_out, "cat must see EOF on /dev/null, not wait"


def test_interrupt_sends_exactly_one_sigint(runner, tmp_path):
    signals = tmp_path / "signals"
    cancel = CancelToken()

    def on_line(line: str) -> None:
        cancel.interrupt()
        cancel.interrupt()   # the engine may be asked twice; the child must hear it once

    started = time.monotonic()
    result = runner.run([PY, "-c", COUNTING_CHILD, str(signals), "count", ""], cancel=cancel,
                        on_line=on_line, timeout=0.8)
    # The child survives SIGINT; the timeout passes during the grace; SIGTERM ends it.
    assert received(signals) == ["SIGINT"]
    assert result.interrupted and not result.timed_out and not result.killed
    assert result.exit_code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 3


def test_a_child_that_exits_on_sigint_ends_the_run_at_once(runner, tmp_path):
    signals = tmp_path / "signals"
    cancel = CancelToken()
    result = runner.run([PY, "-c", COUNTING_CHILD, str(signals), "exit", ""], cancel=cancel,
                        on_line=lambda line: cancel.interrupt())
    assert received(signals) == ["SIGINT"]
    assert result.exit_code == 130 and result.interrupted and not result.ok


def test_timeout_sends_exactly_one_sigint_then_escalates(runner, tmp_path):
    signals = tmp_path / "signals"
    result = runner.run([PY, "-c", COUNTING_CHILD, str(signals), "count", "ignore-term"],
                        timeout=1.0)
    assert received(signals) == ["SIGINT", "SIGTERM"]
    assert result.timed_out and result.killed and not result.interrupted
    assert result.exit_code == 128 + signal.SIGKILL
    assert result.tail == ("ready",)


def test_kill_sends_sigkill_at_once(tmp_path):
    runner = ProcessRunner(sigint_grace=30, sigterm_grace=30)
    signals = tmp_path / "signals"
    cancel = CancelToken()
    started = time.monotonic()
    result = runner.run([PY, "-c", COUNTING_CHILD, str(signals), "count", "ignore-term"],
                        cancel=cancel, on_line=lambda line: cancel.kill())
    runner.close()
    assert received(signals) == []
    assert result.killed and result.interrupted and result.exit_code == 128 + signal.SIGKILL
    assert time.monotonic() - started < 5


def test_kill_after_interrupt_skips_the_graces(tmp_path):
    runner = ProcessRunner(sigint_grace=30, sigterm_grace=30)
    signals = tmp_path / "signals"
    cancel = CancelToken()
    cancel_thread = threading.Timer(0.5, cancel.kill)

    def on_line(line: str) -> None:
        cancel.interrupt()
        cancel_thread.start()

    started = time.monotonic()
    result = runner.run([PY, "-c", COUNTING_CHILD, str(signals), "count", "ignore-term"],
                        cancel=cancel, on_line=on_line)
    runner.close()
    assert received(signals) == ["SIGINT"]
    assert result.killed and result.exit_code == 128 + signal.SIGKILL
    assert time.monotonic() - started < 5


def test_a_cancel_set_before_the_start_starts_nothing(runner, tmp_path):
    marker = tmp_path / "ran"
    cancel = CancelToken()
    cancel.interrupt()
    result = runner.run(["touch", str(marker)], cancel=cancel)
    assert result.interrupted and result.exit_code is None and not result.ok
    assert not marker.exists()


@pytest.mark.parametrize(("argv", "cwd", "message"), [
    (["iacorch-no-such-tool"], None, "iacorch-no-such-tool: not found on PATH"),
    (["./missing.sh"], None, "./missing.sh: no such file"),
    (["true"], "/no/such/dir", "true: working directory /no/such/dir does not exist"),
    ([], None, "cannot start an empty command"),
])
def test_a_program_that_cannot_start_is_a_value_not_an_exception(runner, argv, cwd, message):
    result = runner.run(argv, cwd=cwd)
    assert result.exit_code is None and not result.ok
    assert result.start_error == message


def test_a_file_that_is_not_executable(runner, tmp_path):
    script = tmp_path / "deploy.sh"
    script.write_text("echo hi\n")
    result = runner.run([str(script)])
    assert result.start_error == f"{script}: cannot execute: permission denied"


def test_a_signal_death_is_reported_as_128_plus_n(runner):
    result = runner.run(["bash", "-c", "kill -TERM $$"])
    assert result.exit_code == 128 + signal.SIGTERM and not result.ok


ORCHESTRATOR = textwrap.dedent("""
    import sys
    from iacorch.process import ProcessRunner
    def on_line(line):
        print(line, flush=True)
    # the child, and a background job in its process group, print their pids
    ProcessRunner(sigint_grace=0.2, sigterm_grace=0.2).run(
        ["bash", "-c", "sleep 30 & echo $!; echo $$; wait"], on_line=on_line)
""")


def test_children_die_with_a_kill_9d_orchestrator():
    parent = subprocess.Popen([PY, "-c", ORCHESTRATOR], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(parent.stdout.readline()), int(parent.stdout.readline())]
        assert not any(gone(pid) for pid in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 1.0
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(gone(pid) for pid in pids), "children outlived the orchestrator"
    finally:
        parent.kill()
        parent.wait()


def test_which_uses_the_path_of_the_overlay(tmp_path):
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert which("mytool", {"PATH": str(tmp_path)}) == str(tool)
    assert which("mytool") is None


def test_stragglers_of_a_stopped_group_do_not_run_on(runner, tmp_path):
    cancel = CancelToken()
    script = "(trap '' INT; sleep 30) & echo $!; sleep 30"
    pids: list[int] = []

    def on_line(line: str) -> None:
        pids.append(int(line))
        cancel.interrupt()

    result = runner.run(["bash", "-c", script], cancel=cancel, on_line=on_line)
    # 130 normally; 143 when the SIGINT lands while bash forks `sleep` (a bash race)
    assert result.interrupted and result.exit_code in (130, 143)
    deadline = time.monotonic() + 1.0
    while not gone(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(pids[0])


def test_a_used_up_timeout_starts_nothing(runner, tmp_path):
    marker = tmp_path / "ran"
    result = runner.run(["touch", str(marker)], timeout=0.0)
    assert result.timed_out and result.exit_code is None and not marker.exists()


def test_without_pidfd_the_exit_is_noticed_by_polling(runner, monkeypatch):
    monkeypatch.delattr(os, "pidfd_open")
    seen: list[str] = []
    result = runner.run(["bash", "-c", "echo one; exec >&-; sleep 0.2; exit 4"],
                        on_line=seen.append, timeout=5)
    assert seen == ["one"] and result.exit_code == 4 and not result.timed_out


IGNORING_ORCHESTRATOR = textwrap.dedent("""
    import signal, sys, threading
    from iacorch.process import CancelToken, ProcessRunner
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # as in a background job of a script
    cancel = CancelToken()
    threading.Timer(1.0, cancel.interrupt).start()
    result = ProcessRunner(sigint_grace=10.0).run(
        ["bash", "-c", "trap 'echo got SIGINT; exit 130' INT; sleep 20 & wait"],
        cancel=cancel, on_line=print, cwd=sys.argv[1] or None)
    print("exit", result.exit_code, flush=True)
""")


@pytest.mark.parametrize("cwd", ["", "/"], ids=["posix_spawn", "popen"])
def test_a_child_gets_the_sigint_even_when_iacorch_itself_ignores_it(cwd):
    started = time.monotonic()
    done = subprocess.run([PY, "-c", IGNORING_ORCHESTRATOR, cwd], capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.splitlines() == ["got SIGINT", "exit 130"], done.stdout + done.stderr
    assert time.monotonic() - started < 8.0, "the child needed the SIGTERM after the grace"


# Children that run in our own directory start with posix_spawn, others with Popen (which
# can change directory first). Both ways must look the same from the child and to the caller.
@pytest.fixture(params=["posix_spawn", "popen"])
def start(request, runner, tmp_path, monkeypatch):
    """run(argv, **kw) in tmp_path/work, started the parametrised way, which is checked."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work if request.param == "posix_spawn" else tmp_path)
    spawned: list[str] = []

    def spy(real):
        def spawn(path, argv, env, **kwargs):
            spawned.append(argv[0])
            return real(path, argv, env, **kwargs)
        return spawn

    for name in ("posix_spawn", "posix_spawnp"):   # PATH searched by libc, or by us
        monkeypatch.setattr(os, name, spy(getattr(os, name)))

    def run(argv, **kwargs):
        result = runner.run(argv, cwd=work, **kwargs)
        if request.param == "popen" or result.start_error is None:
            assert bool(spawned) is (request.param == "posix_spawn")
        spawned.clear()
        return result
    run.work = work
    return run


def test_both_ways_see_the_same_directory_environment_and_path(start, tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    tool = tools / "mytool"
    tool.write_text('#!/bin/sh\necho "mytool in $(pwd) with $IACORCH_TEST_VAR"\n')
    tool.chmod(0o755)
    seen: list[str] = []
    result = start(["mytool"], env={"PATH": f"{tools}:{os.environ['PATH']}",
                                    "IACORCH_TEST_VAR": "hello"}, on_line=seen.append)
    assert result.ok and seen == [f"mytool in {start.work} with hello"]


@pytest.mark.parametrize(("argv", "message"), [
    (["iacorch-no-such-tool"], "iacorch-no-such-tool: not found on PATH"),
    (["./missing.sh"], "./missing.sh: no such file"),
    (["./script.sh"], "./script.sh: cannot execute: permission denied"),
    (["true", "a\0b"], "true: cannot start: embedded null byte"),
])
def test_both_ways_explain_a_start_failure_alike(start, argv, message):
    (start.work / "script.sh").write_text("echo hi\n")     # not executable
    result = start(argv)
    assert result.exit_code is None and result.start_error == message


def test_both_ways_give_children_default_signal_dispositions(start):
    # Python ignores SIGPIPE; a child that inherited that would see EPIPE errors instead
    # of dying quietly at the end of a pipeline.
    result = start(["bash", "-o", "pipefail", "-c", "yes | head -n 1 >/dev/null"])
    assert result.exit_code == 128 + signal.SIGPIPE
    assert start(["bash", "-c", "kill -TERM $$"]).exit_code == 128 + signal.SIGTERM


@pytest.mark.parametrize("path_from", ["overlay", "iacorch"])
def test_both_ways_look_the_program_up_at_every_start(start, tmp_path, monkeypatch, path_from):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    def install(directory: Path) -> None:
        (directory / "mytool").write_text(f"#!/bin/sh\necho {directory.name}\n")
        (directory / "mytool").chmod(0o755)

    path = f"{first}:{second}:{os.environ['PATH']}"
    env: dict[str, str] | None = {"PATH": path}
    if path_from == "iacorch":     # no overlay: the child's PATH is ours, libc searches it
        monkeypatch.setenv("PATH", path)
        env = None
    seen: list[str] = []
    install(second)
    assert start(["mytool"], env=env, on_line=seen.append).ok
    install(first)          # as a stage that installs a newer tool earlier on PATH
    assert start(["mytool"], env=env, on_line=seen.append).ok
    (first / "mytool").unlink()
    assert start(["mytool"], env=env, on_line=seen.append).ok
    assert seen == ["second", "first", "second"]


def test_without_an_overlay_both_ways_pass_the_environment_as_it_is_now(start, monkeypatch):
    monkeypatch.setenv("IACORCH_TEST_LATE", "set after the runner was made")
    seen: list[str] = []
    assert start(["bash", "-c", 'echo "$IACORCH_TEST_LATE"'], on_line=seen.append).ok
    assert seen == ["set after the runner was made"]


@pytest.mark.parametrize("where", ["posix_spawn", "popen"])
def test_children_get_no_descriptor_but_their_pipes(where, tmp_path, monkeypatch):
    # As under `exec 9>lock; flock 9 iacorch apply ...`: a descriptor iacorch inherited
    # must not reach a stage's background job, which would hold the lock after the run.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work if where == "posix_spawn" else tmp_path)
    held = os.open(tmp_path / "lock", os.O_WRONLY | os.O_CREAT)
    os.set_inheritable(held, True)
    runner = ProcessRunner()
    try:
        seen: list[str] = []
        result = runner.run(["bash", "-c", "ls /proc/$$/fd; true"], cwd=work,  # bash's own
                            on_line=seen.append)
        assert result.ok and sorted(seen) == ["0", "1", "2"], seen
    finally:
        runner.close()
        os.close(held)
