"""A new user's machine: iacorch installed in a venv that nobody activated.

The programs iacorch's own dependencies install (ansible-playbook) live next to the
venv's Python, not on PATH. `.venv/bin/iacorch` must find them there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent


def bare_path() -> str:
    """PATH without the venv and without any directory holding an ansible program."""
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and Path(d).resolve() != VENV_BIN.resolve()
            and not (Path(d) / "ansible-playbook").exists()]
    return os.pathsep.join(kept)


def test_ci_runs_with_a_path_that_holds_no_ansible() -> None:
    """.ci/run strips ansible and the venv from PATH, so CI is a fresh machine."""
    if os.environ.get("IACORCH_REQUIRE_TOOLS") != "1":
        pytest.skip("checked in CI only (IACORCH_REQUIRE_TOOLS=1)")
    entries = os.environ["PATH"].split(os.pathsep)
    assert str(VENV_BIN) not in entries, "CI must not put the venv on PATH"
    assert not any((Path(d) / "ansible-playbook").exists() for d in entries if d), \
        "CI must not find ansible-playbook on PATH: that hides a broken install"


def test_unactivated_venv_runs_an_ansible_stage(project, tmp_path: Path) -> None:
    console_script = VENV_BIN / "iacorch"
    if not (VENV_BIN / "ansible-playbook").exists() or not console_script.exists():
        pytest.skip("needs iacorch and ansible-core installed in this Python's venv")
    site = tmp_path / "site"
    site.mkdir()
    project.write("playbooks/hello.yml", f"""
        - hosts: localhost
          gather_facts: false
          tasks:
            - copy: {{dest: "{site}/hello.txt", content: "hello\\n"}}
        """)
    project.write("fresh.yaml", """
        version: 1
        name: fresh
        stages:
          hello:
            kind: configure
            ansible: {playbook: playbooks/hello.yml}
        """)
    env = {**project.env, "PATH": bare_path()}
    checked = subprocess.run([str(console_script), "validate", "fresh.yaml"], cwd=project.root,
                             env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and "was not found" not in checked.stderr, checked.stderr
    applied = subprocess.run([str(console_script), "apply", "fresh.yaml"], cwd=project.root,
                             env=env, capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (site / "hello.txt").read_text() == "hello\n"


def test_missing_ansible_says_where_iacorch_looked(project, tmp_path: Path) -> None:
    """A Python without ansible-core (a broken install): the error names where it looked."""
    bare_venv = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare_venv)], check=True)
    site_packages = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    (next((bare_venv / "lib").glob("python3*")) / "site-packages" / "iacorch.pth").write_text(
        f"import site; site.addsitedir({str(site_packages)!r})\n")
    project.write("playbooks/noop.yml", "- hosts: localhost\n  gather_facts: false\n"
                                        "  tasks: []\n")
    project.write("fresh.yaml", """
        version: 1
        name: fresh
        stages:
          hello: {kind: configure, ansible: {playbook: playbooks/noop.yml}}
        """)
    done = subprocess.run([str(bare_venv / "bin" / "python"), "-m", "iacorch", "apply",
                           "fresh.yaml"], cwd=project.root,
                          env={**project.env, "PATH": bare_path()},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 69, done.stderr
    assert "`ansible-playbook` was not found, and stage hello needs it" in done.stderr
    assert f"looked in {bare_venv / 'bin'}" in done.stderr
    assert "Traceback" not in done.stderr
