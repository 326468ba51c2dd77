"""`iacorch plan --detailed-exitcode` and `iacorch drift` agree with the tools run by hand.

Each configuration walks through a table of states. In each state the answer iacorch
must give is computed by running the tool by hand on the same state with the same inputs:

- Terraform: the stack keeps its state in its own directory (local backend, the runbook's
  workspace), so a `terraform` run there with its own TF_DATA_DIR (one init per stack)
  sees what iacorch sees. The by-hand plan gets the vars iacorch writes to its tfvars
  file, as a var file of its own.
- Ansible: `ansible-playbook --check --diff` on the same playbook, localhost on the local
  connection, the same extra vars; "changes present" when its recap counts a change.

`plan --detailed-exitcode` must exit as `terraform plan -detailed-exitcode` does with the
plan's inputs (2 for Ansible when the check predicts a change). `drift` judges with the
inputs of the last successful apply, so its reference is the same tools run with those
recorded inputs (Terraform: `plan` and `plan -refresh-only`, 2 when either says 2): a var
given only on the command line is no drift; a taint, a `state rm`, a code change or a
change made by hand is. A stack iacorch never applied has no recorded inputs: drift says 1.
The table is documented in docs/drift-and-schedules.md; keep the two in step.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures" / "agreement"
NEVER_APPLIED = 1          # `iacorch drift` on a stage with no successful apply
_RECAP = re.compile(r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)", re.MULTILINE)


class World:
    """One configuration copied into a project, driven through the real CLI and by hand."""

    def __init__(self, project: Any, config: Config, tool: str) -> None:
        self.project, self.config, self.tool = project, config, tool
        self.dir = project.root / config.name
        self.code = config.source.read_text()
        for path in config.source.parent.rglob("*"):
            if path.is_file():
                target = self.dir / path.relative_to(config.source.parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(path.read_text())
        project.write("runbook.yaml", config.runbook)
        (project.root / "out").mkdir()
        self.by_hand_dir = project.root / "by-hand"
        self.by_hand_dir.mkdir()
        self.recorded: dict[str, Any] | None = None   # vars of the last successful apply
        self.applied_files: dict[str, tuple[bytes | None, int]] = {}   # out/ after it
        self.logs: list[str] = []                       # what iacorch said when it exited 1

    # -- iacorch --------------------------------------------------------------------------

    def iacorch(self, command: str, variables: Mapping[str, Any], *flags: str) -> int:
        result = self.project.run(command, "runbook.yaml", *flags, "-q",
                                  *(f"--var={k}={v}" for k, v in variables.items()))
        if result.code not in (0, 2):
            self.logs.append(f"iacorch {command} exited {result.code}:\n{result.text[-1500:]}")
        return result.code

    def apply(self, **variables: Any) -> None:
        result = self.project.run("apply", "runbook.yaml", "-q",
                                  *(f"--var={k}={v}" for k, v in variables.items()))
        assert result.code == 0, result.text
        self.recorded = {**self.config.defaults, **variables}
        out = self.project.root / "out"
        self.applied_files = {
            str(path.relative_to(out)): (None if path.is_dir() else path.read_bytes(),
                                         path.stat().st_mode & 0o7777)
            for path in sorted(out.rglob("*"))}

    def restore_files(self) -> None:
        """Put out/ back as the last apply left it, without running anything."""
        out = self.project.root / "out"
        shutil.rmtree(out)
        out.mkdir()
        for name, (content, mode) in self.applied_files.items():   # parents first
            path = out / name
            if content is None:
                path.mkdir()
            else:
                path.write_bytes(content)
            path.chmod(mode)

    # -- by hand --------------------------------------------------------------------------

    def by_hand(self, plan_inputs: Mapping[str, Any]) -> tuple[int, int | None]:
        """The tool by hand: with the plan's inputs, and as a drift check with the recorded
        inputs (None when nothing was recorded); a check whose inputs are the same is run
        once. The checks change nothing and take no lock, so they run at the same time."""
        recorded = self.recorded
        with ThreadPoolExecutor(3) as pool:
            plan = pool.submit(self.config.check, self, plan_inputs)
            checks: list[Future[int]] = []
            if recorded is not None:
                checks.append(plan if recorded == plan_inputs
                              else pool.submit(self.config.check, self, recorded))
                if self.config.refresh is not None:
                    checks.append(pool.submit(self.config.refresh, self, recorded))
            return plan.result(), max(c.result() for c in checks) if checks else None

    def private_file(self, data: Any) -> Path:
        """A JSON file of its own for one by-hand command (several run at once)."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.by_hand_dir,
                                         delete=False) as handle:
            json.dump(data, handle)
        return Path(handle.name)

    def terraform(self, *argv: str, variables: Mapping[str, Any] | None = None,
                  ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        if variables is not None:     # as iacorch passes them: a JSON var file
            args.append(f"-var-file={self.private_file(dict(variables))}")
        done = subprocess.run(["terraform", *args, "-no-color"], cwd=self.dir,
                              env={**self.project.env, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
                                   "TF_DATA_DIR": str(self.by_hand_dir / "tfdata")},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in ok, f"terraform {' '.join(argv)}:\n{done.stdout}{done.stderr}"
        return done

    def terraform_init(self) -> None:
        """One init for every by-hand command; the workspace selected as iacorch selects it."""
        self.terraform("init", "-input=false")
        if self.config.workspace:
            self.terraform("workspace", "select", "-or-create", self.config.workspace)

    def edit(self, *replacements: tuple[str, str]) -> None:
        text = self.code
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new)
        (self.dir / self.config.main).write_text(text)

    def restore_code(self) -> None:
        (self.dir / self.config.main).write_text(self.code)


def terraform_plan(world: World, variables: Mapping[str, Any], *flags: str) -> int:
    """`terraform plan -detailed-exitcode` by hand."""
    return world.terraform("plan", "-input=false", "-lock=false", "-detailed-exitcode",
                           *flags, variables=variables, ok=(0, 2)).returncode


def terraform_refresh(world: World, variables: Mapping[str, Any]) -> int:
    """`terraform plan -refresh-only -detailed-exitcode` by hand: drift's other half."""
    return terraform_plan(world, variables, "-refresh-only")


def ansible_check(world: World, variables: Mapping[str, Any]) -> int:
    """`ansible-playbook --check --diff` by hand: 2 when the recap counts a change."""
    inventory = world.private_file({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}})
    extra = world.private_file({"root": str(world.project.root / "out"), **variables})
    done = subprocess.run(
        [world.tool, "-i", str(inventory), "--check", "--diff", "-e", f"@{extra}",
         str(world.dir / world.config.main)], env={**world.project.env, "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    changed = [int(n) for n in _RECAP.findall(done.stdout)]
    assert changed, done.stdout
    return 2 if any(changed) else 0


@dataclass(frozen=True)
class Row:
    """One state: how to get there, what the tool by hand says, how to get back."""

    state: str
    tool: int                 # the tool by hand with the plan's inputs: 0 or 2
    drift: int                # iacorch drift: 0 in sync, 2 drift, 1 never applied
    enter: Callable[[World], object] = lambda world: None
    leave: Callable[[World], object] = lambda world: None
    plan_vars: Mapping[str, Any] = field(default_factory=dict)   # --var for plan and drift


@dataclass(frozen=True)
class Config:
    name: str
    main: str                          # the file a code change edits
    runbook: str
    defaults: Mapping[str, Any]
    check: Callable[[World, Mapping[str, Any]], int]      # the tool by hand: 0 or 2
    rows: tuple[Row, ...]
    refresh: Callable[[World, Mapping[str, Any]], int] | None = None   # drift checks it too
    workspace: str | None = None

    @property
    def source(self) -> Path:
        return FIXTURES / self.name / self.main


# -- what puts a stack in a state ---------------------------------------------------------


def taint(address: str) -> Callable[[World], object]:
    return lambda world: world.terraform("taint", address)


def state_rm(address: str) -> Callable[[World], object]:
    return lambda world: world.terraform("state", "rm", address)


def by_hand(*argv: str, **variables: Any) -> Callable[[World], object]:
    """Terraform run by hand with other inputs, as someone would outside iacorch."""
    return lambda world: world.terraform(*argv, "-auto-approve", "-input=false",
                                         variables={**world.config.defaults, **variables})


def edit(*replacements: tuple[str, str]) -> Callable[[World], object]:
    return lambda world: world.edit(*replacements)


def apply(**variables: Any) -> Callable[[World], object]:
    return lambda world: world.apply(**variables)


def restore(world: World) -> None:
    world.restore_code()


def restore_files(world: World) -> None:
    world.restore_files()


def adopt_anchor_back(world: World) -> None:
    """`state rm` the anchor, then an `import` block adopts it back with its old id."""
    state = json.loads(world.terraform("show", "-json").stdout)
    anchor = next(r["values"]["id"] for r in state["values"]["root_module"]["resources"]
                  if r["address"] == "terraform_data.anchor")
    world.terraform("state", "rm", "terraform_data.anchor")
    world.edit(('resource "terraform_data" "anchor" {',
                f'import {{\n  to = terraform_data.anchor\n  id = "{anchor}"\n}}\n\n'
                'resource "terraform_data" "anchor" {'))


def out_file(name: str, change: Callable[[Path], object]) -> Callable[[World], object]:
    return lambda world: change(world.project.root / "out" / name)


APPLIED = Row("applied, unchanged", 0, 0, enter=apply())

CHAIN = Config(
    name="chain", main="main.tf", workspace="staging",
    defaults={"label": "blue", "replicas": 2}, check=terraform_plan, refresh=terraform_refresh,
    runbook="""
        version: 1
        name: agree-chain
        vars:
          label: {default: blue}
          replicas: {default: 2, type: int}
        stages:
          stack:
            kind: provision
            terraform:
              dir: chain
              workspace: staging
              vars: {label: "{{ vars.label }}", replicas: "{{ vars.replicas }}"}
        """,
    rows=(
        Row("never applied", 2, NEVER_APPLIED),
        APPLIED,
        Row("a var changed on the command line", 2, 0, plan_vars={"label": "green"}),
        Row("applied with a var, planned without it", 2, 0, enter=apply(label="green"),
            leave=apply()),
        Row("a number var changed on the command line", 2, 0, plan_vars={"replicas": 3}),
        Row("code changed (a resource input)", 2, 2,
            enter=edit(("input = var.label", "input = upper(var.label)")), leave=restore),
        Row("code changed (an output only)", 2, 2,
            enter=edit(("value = terraform.workspace", 'value = "ws-${terraform.workspace}"')),
            leave=restore),
        Row("a resource tainted", 2, 2, enter=taint("terraform_data.node[1]"), leave=apply()),
        Row("a resource removed from state (state rm)", 2, 2,
            enter=state_rm("terraform_data.base"), leave=apply()),
        Row("state rm, then an import block adopts it back", 2, 2, enter=adopt_anchor_back,
            leave=lambda world: (world.apply(), world.restore_code())),
        Row("a resource renamed with a moved block", 2, 2, enter=edit(
            ('"terraform_data" "tail"', '"terraform_data" "last"'),
            ("terraform_data.tail.output", "terraform_data.last.output\n}\n\nmoved {\n"
             "  from = terraform_data.tail\n  to   = terraform_data.last")), leave=restore),
        Row("a resource dropped with a removed block", 2, 2, enter=edit(
            ('resource "terraform_data" "anchor" {\n}',
             "removed {\n  from = terraform_data.anchor\n  lifecycle {\n    destroy = false\n"
             "  }\n}")), leave=restore),
        Row("applied by hand with other inputs", 2, 2, enter=by_hand("apply", label="red"),
            leave=apply()),
        Row("destroyed by hand", 2, 2, enter=by_hand("destroy"), leave=apply()),
        Row("applied again by iacorch", 0, 0),
    ))

LOCALS = Config(
    name="locals", main="main.tf", defaults={"app": "web"}, check=terraform_plan,
    refresh=terraform_refresh,
    runbook="""
        version: 1
        name: agree-locals
        vars: {app: {default: web}}
        stages:
          stack:
            kind: provision
            terraform: {dir: locals, vars: {app: "{{ vars.app }}"}}
        """,
    rows=(
        Row("never applied", 2, NEVER_APPLIED),
        APPLIED,
        Row("a var changed on the command line", 2, 0, plan_vars={"app": "payments"}),
        Row("applied with a var, planned without it", 2, 0, enter=apply(app="payments"),
            leave=apply()),
        Row("code changed (a local)", 2, 2,
            enter=edit(('"svc-${var.app}"', '"service-${var.app}"')), leave=restore),
        Row("code changed (an output added)", 2, 2,
            enter=edit(("value = local.service\n}", 'value = local.service\n}\n\n'
                        'output "app" {\n  value = var.app\n}')), leave=restore),
        Row("applied by hand with other inputs", 2, 2, enter=by_hand("apply", app="other"),
            leave=apply()),
        Row("destroyed by hand", 2, 2, enter=by_hand("destroy"), leave=apply()),
        Row("applied again by iacorch", 0, 0),
    ))

ANSIBLE = Config(
    name="ansible", main="site.yml", defaults={"site": "alpha", "listen_port": 8080},
    check=ansible_check,
    runbook="""
        version: 1
        name: agree-ansible
        vars:
          site: {default: alpha}
          listen_port: {default: 8080, type: int}
        stages:
          site:
            kind: configure
            ansible:
              playbook: ansible/site.yml
              inventory: [localhost]
              extra_vars:
                root: "{{ runbook.dir }}/out"
                site: "{{ vars.site }}"
                listen_port: "{{ vars.listen_port }}"
        """,
    rows=(
        Row("never applied", 2, NEVER_APPLIED),
        APPLIED,
        Row("vars changed on the command line (a string, a number)", 2, 0,
            plan_vars={"site": "beta", "listen_port": 9090}),
        Row("playbook changed", 2, 2, enter=edit(('"welcome to', '"hello from')),
            leave=restore),
        Row("copied file edited by hand (copy)", 2, 2,
            enter=out_file("motd", lambda p: p.write_text("edited by hand\n")),
            leave=restore_files),
        Row("templated file edited by hand (template)", 2, 2,
            enter=out_file("app.conf", lambda p: p.write_text(p.read_text() + "debug = 1\n")),
            leave=restore_files),
        Row("managed line removed by hand (lineinfile)", 2, 2,
            enter=out_file("hosts", lambda p: p.write_text("")), leave=restore_files),
        Row("directory mode changed by hand (file)", 2, 2,
            enter=out_file("data", lambda p: p.chmod(0o700)), leave=restore_files),
        Row("managed file deleted by hand", 2, 2,
            enter=out_file("motd", Path.unlink), leave=apply()),
        Row("applied again by iacorch", 0, 0),
    ))


@dataclass
class Observed:
    """One row as it went: the tool by hand, and iacorch."""

    row: Row
    tool: int                 # the tool by hand, the plan's inputs
    plan: int                 # iacorch plan --detailed-exitcode
    tool_drift: int | None    # the tool by hand, the recorded inputs; None: nothing recorded
    drift: int                # iacorch drift

    @property
    def agrees(self) -> bool:
        expected_drift = NEVER_APPLIED if self.tool_drift is None else self.tool_drift
        return (self.tool == self.row.tool and self.plan == self.tool
                and self.drift == expected_drift == self.row.drift)

    def line(self) -> str:
        recorded = "-" if self.tool_drift is None else str(self.tool_drift)
        return (f"{'  ' if self.agrees else 'XX'} {self.row.state:<48} by hand {self.tool} "
                f"(table {self.row.tool}), plan {self.plan} | by hand with recorded inputs "
                f"{recorded}, drift {self.drift} (table {self.row.drift})")


def observe(world: World, row: Row) -> Observed:
    """Put the world in the row's state, ask the tool by hand and iacorch, then leave it."""
    row.enter(world)
    with ThreadPoolExecutor(1) as pool:      # by hand while iacorch runs: both only read
        by_hand = pool.submit(world.by_hand, {**world.config.defaults, **row.plan_vars})
        plan = world.iacorch("plan", row.plan_vars, "--detailed-exitcode")
        drift = world.iacorch("drift", row.plan_vars)
        tool, tool_drift = by_hand.result()
    row.leave(world)
    return Observed(row, tool, plan, tool_drift, drift)


@pytest.mark.parametrize("config", [CHAIN, LOCALS, ANSIBLE], ids=lambda c: c.name)
def test_plan_and_drift_agree_with_the_tool_by_hand(project, require_tool, config) -> None:
    world = World(project, config, require_tool(
        "ansible-playbook" if config.check is ansible_check else "terraform"))
    if config.check is terraform_plan:
        world.terraform_init()
    table = [observe(world, row) for row in config.rows]
    assert all(o.agrees for o in table), "\n".join([o.line() for o in table] + world.logs)
