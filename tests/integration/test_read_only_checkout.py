"""A checkout on a read-only mount: inspection works, runs are refused clearly.

The mount is made in a private user and mount namespace (`unshare -rm`), so the
test needs no privileges and leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration

RUNBOOK = """
version: 1
name: ro
stages:
  hello: {kind: provision, shell: {run: "echo hello"}}
"""


def read_only(project, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run with the project directory mounted read-only."""
    root = str(project.root)
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && cd "$1" && shift ' \
             '&& exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", root,
                           *project.argv(*args)], env=project.env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def can_mount(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-rm", "mount", "--bind", str(tmp_path), str(tmp_path)],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")


def test_inspection_works_and_a_run_is_refused_before_it_starts(project, can_mount):
    project.write("ro.yaml", RUNBOOK)
    applied = project.run("apply", "ro.yaml")
    assert applied.code == 0, applied.text
    run_id = project.runs()[0]["id"]

    listed = read_only(project, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    shown = read_only(project, "show", run_id)
    assert shown.returncode == 0 and "hello" in shown.stdout, shown.stderr
    verified = read_only(project, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr

    refused = read_only(project, "apply", "ro.yaml")
    assert refused.returncode == 74
    assert "read-only here: runs cannot be recorded, so nothing was started" in refused.stderr
    assert "Traceback" not in refused.stderr and "internal error" not in refused.stderr
    assert len(project.runs()) == 1


def test_a_fresh_read_only_checkout_says_where_state_could_not_go(project, can_mount):
    project.write("ro.yaml", RUNBOOK)
    for command in (("apply", "ro.yaml"), ("plan", "ro.yaml")):
        refused = read_only(project, *command)
        assert refused.returncode == 74, refused.stderr
        assert "cannot create the state directory" in refused.stderr
        assert "Read-only file system" in refused.stderr
        assert "internal error" not in refused.stderr
