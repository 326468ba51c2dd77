"""Values are data: never executed, re-templated or read as a tool's flag.

Hostile var values (command substitution, backticks, `;`, quotes, a newline, Jinja
and Terraform template syntax, an Ansible lookup, values that look like flags) are
passed with --var into shell scripts and argv, Terraform vars and workspaces,
Ansible extra vars and HTTP bodies; each sink must receive them byte for byte, and
none of the `touch pwned-*` inside them may ever run. Template sandbox escapes are
refused, a stage `env:` that makes a tool load code is refused at compile time
unless `allow_env` names it, and a secret never appears on a child's command line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"


def hostile_values(root: Path) -> list[str]:
    """Each would create a pwned-* file in `root` if anything executed it."""
    return [
        f"$(touch {root}/pwned-dollar)",
        f"`touch {root}/pwned-backtick`",
        f"a; touch {root}/pwned-semicolon",
        f"it's \"quoted\" ' \"; touch {root}/pwned-quote; \"",
        f"line one\ntouch {root}/pwned-newline",
        "{{ 7*7 }}",
        "{% for x in range(3) %}x{% endfor %}",
        f"{{{{ lookup('pipe', 'touch {root}/pwned-lookup') }}}}",
        "${path.module} %{ if true }x%{ endif }",
        "-destroy",
        "-chdir=/",
        "--help",
        "tab\there | pipe > redirect & amp",
    ]


def var_flags(values: list[str]) -> list[str]:
    return [arg for n, value in enumerate(values) for arg in ("--var", f"p{n}={value}")]


def runbook(values: list[str], stages: str) -> str:
    declared = "\n".join(f"  p{n}: {{type: string}}" for n in range(len(values)))
    return f"version: 1\nname: inject\nvars:\n{declared}\nstages:\n{stages}"


def every_var(values: list[str], indent: str) -> str:
    """A YAML list of `{{ vars.pN }}`, one item a line."""
    return "".join(f'\n{indent}- "{{{{ vars.p{n} }}}}"' for n in range(len(values)))


def assert_nothing_ran(root: Path) -> None:
    pwned = sorted(p.name for p in root.rglob("pwned-*"))
    assert pwned == [], f"a value was executed: {pwned}"


def test_shell_run_and_argv_receive_values_as_literal_data(project):
    values = hostile_values(project.root)
    quoted = " ".join(f"{{{{ vars.p{n} }}}}" for n in range(len(values)))
    stages = f"""
  script:
    kind: provision
    shell:
      run: printf '%s\\0' {quoted} > got-run.bin
  program:
    kind: provision
    shell:
      argv:
        - python3
        - -c
        - "import sys; open('got-argv.bin', 'wb').write('\\\\0'.join(sys.argv[1:]).encode())"
{every_var(values, "        ").lstrip(chr(10))}
"""
    project.write("inject.yaml", runbook(values, stages))
    result = project.run("apply", "inject.yaml", *var_flags(values))
    assert result.code == 0, result.text
    got_run = (project.root / "got-run.bin").read_bytes().split(b"\0")[:-1]
    assert [v.decode() for v in got_run] == values
    got_argv = (project.root / "got-argv.bin").read_bytes().decode().split("\0")
    assert got_argv == values
    assert_nothing_ran(project.root)
    print(f"INPUTS: {len(values)} hostile values through shell run and argv")


def test_terraform_vars_are_data_not_flags_or_expressions(project, require_tool):
    require_tool("terraform")
    shutil.copytree(FIXTURES / "echo_stack", project.root / "stack")
    values = hostile_values(project.root)
    stages = f"""
  stack:
    kind: provision
    terraform:
      dir: stack
      vars:
        values:{every_var(values, "          ")}
"""
    project.write("inject.yaml", runbook(values, stages))
    result = project.run("apply", "inject.yaml", *var_flags(values))
    assert result.code == 0, result.text
    outputs = project.show(project.runs()[0]["id"])["stages"][0]["outputs"]
    assert outputs["values"] == values
    state = json.loads((project.root / "stack" / "terraform.tfstate").read_text())
    assert state["resources"], "-destroy was read as a flag: the resource is gone"
    assert_nothing_ran(project.root)


@pytest.mark.parametrize("workspace", ["-destroy", "-or-create=false"])
def test_a_workspace_that_looks_like_a_flag_is_a_name(project, require_tool, workspace):
    require_tool("terraform")
    shutil.copytree(FIXTURES / "echo_stack", project.root / "stack")
    project.write("ws.yaml", """
        version: 1
        name: ws
        vars: {ws: {type: string}}
        stages:
          stack:
            kind: provision
            terraform:
              dir: stack
              workspace: "{{ vars.ws }}"
              vars: {values: [one]}
        """)
    result = project.run("apply", "ws.yaml", "--var", f"ws={workspace}")
    assert result.code == 0, result.text
    assert (project.root / "stack" / "terraform.tfstate.d" / workspace).is_dir()


ANSIBLE_RETEMPLATES = (
    "drivers/ansible.py:_run writes extra vars as plain JSON, so Ansible templates every "
    "string in them again when the play uses it: '{{ 7*7 }}' arrives as '49' and "
    "\"{{ lookup('pipe', ...) }}\" runs a command on the controller")


def test_ansible_extra_vars_are_not_templated_again(project, require_tool):
    require_tool("ansible-playbook")
    shutil.copytree(FIXTURES / "playbooks", project.root / "playbooks")
    values = hostile_values(project.root)
    stages = f"""
  play:
    kind: configure
    ansible:
      playbook: playbooks/echo.yml
      inventory: [localhost]
      extra_vars:
        dest: {project.root}/got-ansible.json
        values:{every_var(values, "          ")}
"""
    project.write("inject.yaml", runbook(values, stages))
    result = project.run("apply", "inject.yaml", *var_flags(values))
    try:
        assert result.code == 0, result.text
        assert json.loads((project.root / "got-ansible.json").read_text()) == values
    finally:
        assert_nothing_ran(project.root)


def test_http_bodies_carry_values_verbatim(project, receiver):
    values = hostile_values(project.root)
    stages = f"""
  as-json:
    kind: verify
    http:
      url: {receiver.url}/json
      method: POST
      body:
        values:{every_var(values, "          ")}
  as-text:
    kind: verify
    http:
      url: {receiver.url}/text
      method: PUT
      body: "{{{{ vars.p0 }}}}|{{{{ vars.p4 }}}}|{{{{ vars.p5 }}}}"
"""
    project.write("inject.yaml", runbook(values, stages))
    result = project.run("apply", "inject.yaml", *var_flags(values))
    assert result.code == 0, result.text
    bodies = {r.path: r for r in receiver.requests}
    assert json.loads(bodies["/json"].body) == {"values": values}
    assert bodies["/json"].headers["Content-Type"] == "application/json"
    assert bodies["/text"].body.decode() == f"{values[0]}|{values[4]}|{values[5]}"
    assert_nothing_ran(project.root)


def test_a_header_value_cannot_add_a_header(project, receiver):
    project.write("hdr.yaml", f"""
        version: 1
        name: hdr
        vars: {{v: {{type: string}}}}
        stages:
          call:
            kind: verify
            http:
              url: {receiver.url}/h
              headers: {{X-Value: "{{{{ vars.v }}}}"}}
        """)
    result = project.run("apply", "hdr.yaml", "--var", "v=ok\r\nX-Injected: yes")
    assert result.code == 1, result.text
    assert all("X-Injected" not in r.headers for r in receiver.requests)


SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch pwned-cycler').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch pwned-lipsum').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ cycler|attr('__init__')|attr('__globals__') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(cycler) }}",
    "{{ vars|attr('__class__')|attr('__mro__') }}",
    "{% set n = namespace() %}{{ n.__init__ }}",
    "{{ env.__class__.__base__.__subclasses__() }}",
]


@pytest.mark.parametrize("template", SANDBOX_ESCAPES)
def test_template_sandbox_escapes_are_refused(project, template):
    body = json.dumps({"version": 1, "name": "escape", "stages": {"a": {
        "kind": "provision", "shell": {"run": f"echo {template} > rendered.txt"}}}})
    project.write("escape.yaml", body)
    result = project.run("apply", "escape.yaml")
    assert result.code in (1, 65), result.text
    assert "Traceback" not in result.text
    assert any(why in result.err for why in ("private attribute", "sandbox", "unsafe",
                                              "has no attribute")), result.err
    assert not (project.root / "rendered.txt").exists(), "the escape rendered"
    assert_nothing_ran(project.root)


# --- dangerous stage env ---------------------------------------------------------------------

ENV_RUNBOOK = """
version: 1
name: envcheck
{allow}
stages:
  s:
    kind: provision
    {action}:
{body}
      env: {{{name}: "x"}}
"""
ACTION_BODIES = {
    "shell": '      run: "true"',
    "terraform": "      dir: stack",
    "ansible": "      playbook: play.yml",
}
REFUSED_ENV = ["TF_CLI_ARGS", "TF_CLI_ARGS_apply", "TF_CLI_CONFIG_FILE", "LD_PRELOAD",
               "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP", "ANSIBLE_CALLBACK_PLUGINS",
               "ANSIBLE_LOOKUP_PLUGINS", "ANSIBLE_ACTION_PLUGINS", "ANSIBLE_LIBRARY",
               "BASH_ENV", "NODE_OPTIONS", "PATH"]
OTHER_LOADERS = {
    "ANSIBLE_PYTHON_INTERPRETER": "runs any program as the interpreter of every module "
                                  "(on hosts that do not set ansible_python_interpreter)",
    "ANSIBLE_COLLECTIONS_PATH": "loads modules and plugins from any directory",
    "ANSIBLE_VAULT_PASSWORD_FILE": "an executable vault password file is run",
    "PYTHONUSERBASE": ".pth files in its site-packages run code when ansible-playbook's "
                      "Python starts",
}


def env_runbook(project, action: str, name: str, allow: bool) -> Path:
    (project.root / "stack").mkdir(exist_ok=True)
    (project.root / "stack" / "main.tf").write_text("")
    (project.root / "play.yml").write_text("- hosts: all\n  tasks: []\n")
    return project.write("env.yaml", ENV_RUNBOOK.format(
        allow=f"allow_env: [{name}]" if allow else "", action=action,
        body=ACTION_BODIES[action], name=name))


@pytest.mark.parametrize("action", list(ACTION_BODIES))
@pytest.mark.parametrize("name", REFUSED_ENV)
def test_a_dangerous_stage_env_is_refused_at_compile_time(project, cli_main, action,
                                                        name):
    path = env_runbook(project, action, name, allow=False)
    code, text = cli_main("validate", str(path))
    assert code == 65, text
    assert "env.yaml:9:" in text and f"`{name}`" in text
    assert f"allow_env: [{name}]" in text
    env_runbook(project, action, name, allow=True)
    code, text = cli_main("validate", str(path))
    assert code == 0, text


@pytest.mark.parametrize("name", list(OTHER_LOADERS))
def test_other_code_loading_env_is_refused_too(project, cli_main, name):
    code, text = cli_main("validate", str(env_runbook(project, "shell", name, allow=False)))
    assert code == 65, text
    assert f"`{name}`" in text


def test_a_dangerous_env_in_a_rollback_action_is_refused(project):
    project.write("rb.yaml", """
        version: 1
        name: rb
        stages:
          s:
            kind: provision
            shell: {run: "true"}
            rollback:
              shell: {run: "true", env: {LD_PRELOAD: /tmp/evil.so}}
        """)
    refused = project.run("validate", "rb.yaml")
    assert refused.code == 65, refused.text
    assert "`LD_PRELOAD`" in refused.err


# --- secrets and command lines ---------------------------------------------------------------

def test_a_secret_in_a_script_never_reaches_a_command_line(project, canaries, watch_argv):
    project.write("argv.yaml", """
        version: 1
        name: argv
        secrets: {token: {env: CANARY_TOKEN}}
        stages:
          script:
            kind: provision
            shell: {run: "test -n {{ secrets.token }}; sleep 1; echo {{ secrets.token }}"}
        """)
    code, output, watch = watch_argv(project, "apply", "argv.yaml",
                                     env={"CANARY_TOKEN": canaries.env})
    assert code == 0, output
    assert any(b"sleep" in argv for argv in watch.seen.values()), "the script was not seen"
    assert watch.hits() == {}


def test_a_secret_in_argv_never_reaches_a_command_line(project, canaries, watch_argv):
    project.write("argv.yaml", """
        version: 1
        name: argv
        secrets: {token: {env: CANARY_TOKEN}}
        stages:
          program:
            kind: provision
            shell: {argv: [sh, -c, "sleep 1", "{{ secrets.token }}"]}
        """)
    code, output, watch = watch_argv(project, "apply", "argv.yaml",
                                     env={"CANARY_TOKEN": canaries.env})
    assert watch.hits() == {}, "the secret was on a command line"
    assert code in (0, 65), output
