"""A third-party driver, pip-installed into its own venv, used from a runbook through the
real CLI: `validate`, `schema`, `plan` and `apply` know the `echo:` key it registers, and
its output reaches a downstream stage. Without the package, `echo:` is an unknown key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PLUGIN = Path(__file__).resolve().parents[1] / "data" / "plugin" / "iacorch_echo"
RUNBOOK = """\
version: 1
name: echo-demo
vars:
  who: {default: world}
stages:
  greet:
    kind: deploy
    echo: {message: "hello {{ vars.who }}", output: greeting}
    outputs: [greeting]
  show:
    kind: verify
    shell:
      run: echo "got {{ stages.greet.outputs.greeting }}" > greeting.txt
    rollback: {echo: {message: undone}}
"""


@pytest.fixture(scope="module")
def python_with_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv that sees this one's packages (iacorch among them) plus iacorch-echo,
    installed by pip from the local directory, offline."""
    venv = tmp_path_factory.mktemp("plugin") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # addsitedir, not a plain path: this venv's own .pth files (the editable iacorch) count
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "iacorch_dev.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-build-isolation", "--no-index", str(PLUGIN)],
                   check=True, capture_output=True)
    return python


def iacorch(python: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IACORCH_HOME": str(project / ".iacorch"), "IACORCH_USER": "tester"}
    return subprocess.run([str(python), "-m", "iacorch", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "echo.yaml").write_text(RUNBOOK)
    return tmp_path


def test_a_plugin_driver_validates_plans_and_applies(python_with_plugin: Path,
                                                    project: Path) -> None:
    validated = iacorch(python_with_plugin, project, "validate", "echo.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    schema = json.loads(iacorch(python_with_plugin, project, "schema").stdout)
    stage = schema["$defs"]["Stage"]
    assert stage["properties"]["echo"]["anyOf"][0] == {"$ref": "#/$defs/EchoAction"}
    assert {"required": ["echo"], "properties": {"echo": {"not": {"type": "null"}}}} \
        in stage["else"]["oneOf"]
    assert "echo" in schema["$defs"]["RollbackAction"]["properties"]

    planned = iacorch(python_with_plugin, project, "plan", "echo.yaml")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "greet: plan echo" in planned.stdout + planned.stderr

    applied = iacorch(python_with_plugin, project, "apply", "echo.yaml")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "echo: hello world" in applied.stdout + applied.stderr
    assert (project / "greeting.txt").read_text() == "got 'hello world'\n"


def test_a_broken_plugin_action_is_a_located_runbook_error(python_with_plugin: Path,
                                                           project: Path) -> None:
    (project / "echo.yaml").write_text(RUNBOOK.replace("message: \"hello", "mesage: \"hello"))
    result = iacorch(python_with_plugin, project, "validate", "echo.yaml")
    assert result.returncode == 65
    assert "echo.yaml:8" in result.stdout + result.stderr
    assert "did you mean `message`?" in result.stdout + result.stderr


def test_without_the_package_echo_is_an_unknown_key(project: Path) -> None:
    result = iacorch(Path(sys.executable), project, "validate", "echo.yaml")
    assert result.returncode == 65
    assert "unknown key `echo`" in result.stdout + result.stderr
