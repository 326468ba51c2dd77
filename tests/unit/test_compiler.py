"""The compiler: implicit dependencies, for_each, cycles, hashes, and located errors."""

import textwrap

import pytest

from iacorch.errors import RunbookError, UsageError
from iacorch.runbook.compiler import compile_runbook


def write(tmp_path, text, name="plan.yaml"):
    (tmp_path / ".git").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def compile_text(tmp_path, text, **kwargs):
    return compile_runbook(write(tmp_path, text), **kwargs)


def problems(tmp_path, text, **kwargs):
    with pytest.raises(RunbookError) as caught:
        compile_text(tmp_path, text, **kwargs)
    return caught.value.problems


BASE = """
version: 1
name: demo
vars:
  env: {default: dev}
  regions: {default: [eu, us], type: list}
  replicas: {default: 2, type: int}
stages:
  net:
    kind: provision
    shell: {run: "echo net"}
  hosts:
    kind: provision
    shell: {run: "echo {{ stages.net.outputs.subnet }} {{ vars.replicas }}"}
  web:
    kind: deploy
    for_each: "{{ vars.regions }}"
    shell: {run: "echo {{ item }} {{ stages.hosts.outputs.ip }}"}
  check:
    kind: verify
    needs: [web]
    http: {url: "http://127.0.0.1/{{ stages.web.outputs.eu.path }}"}
"""


def test_implicit_and_explicit_dependencies(tmp_path):
    plan = compile_text(tmp_path, BASE)
    assert plan.stages["hosts"].needs == ("net",)
    assert plan.stages["web[eu]"].needs == ("hosts",)
    assert set(plan.stages["check"].needs) == {"web[eu]", "web[us]"}
    assert plan.layers == (("net",), ("hosts",), ("web[eu]", "web[us]"), ("check",))


def test_for_each_expansion_carries_item(tmp_path):
    plan = compile_text(tmp_path, BASE)
    assert plan.expansions["web"] == ("web[eu]", "web[us]")
    assert plan.stages["web[us]"].item == "us"
    assert plan.stages["web[us]"].item_key == "us"


def test_for_each_uses_overridden_vars(tmp_path):
    plan = compile_text(tmp_path, BASE, cli_vars={"regions": "[ap, sa, eu]"})
    assert plan.expansions["web"] == ("web[ap]", "web[sa]", "web[eu]")


def test_plan_hash_is_stable_and_sensitive(tmp_path):
    first = compile_text(tmp_path, BASE).plan_hash
    assert compile_text(tmp_path, BASE).plan_hash == first
    reformatted = BASE.replace("kind: provision\n    shell:", "kind: provision  # note\n    shell:")
    assert compile_text(tmp_path, reformatted).plan_hash == first
    assert compile_text(tmp_path, BASE, cli_vars={"env": "prod"}).plan_hash != first
    assert compile_text(tmp_path, BASE.replace("echo net", "echo net2")).plan_hash != first


def test_cycle_is_printed_as_a_path(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          a: {kind: provision, needs: [c], shell: {run: "true"}}
          b: {kind: provision, needs: [a], shell: {run: "true"}}
          c: {kind: provision, shell: {run: "echo {{ stages.b.outputs.x }}"}}
        """)
    assert len(found) == 1
    message = found[0].message
    assert "cycle" in message
    cycle = message.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_unknown_stage_var_and_secret_are_located(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        vars: {env: {default: dev}}
        secrets: {token: {env: TOKEN}}
        stages:
          a:
            kind: provision
            needs: [bb]
            shell: {run: "echo {{ vars.evn }} {{ secrets.tokn }} {{ stages.zz.outputs.x }}"}
          b: {kind: verify, shell: {run: "true"}}
        """)
    messages = [p.message for p in found]
    assert any("needs `bb`" in m for m in messages)
    assert any("`vars.evn` is not declared" in m for m in messages)
    assert any("`secrets.tokn` is not declared" in m for m in messages)
    assert any("stage `zz`" in m for m in messages)
    hints = [p.hint or "" for p in found]
    assert any("vars.env" in h for h in hints) and any("secrets.token" in h for h in hints)
    needs = next(p for p in found if "needs `bb`" in p.message)
    assert (needs.location.line, needs.location.column) == (8, 13)
    assert "did you mean `b`" in needs.hint


def test_shape_errors_all_reported(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          none: {kind: provision}
          two: {kind: provision, shell: {run: "true"}, http: {url: "http://x"}}
          gate: {kind: approval, shell: {run: "true"}}
          odd: {kind: deploy, approvers: [alice], shell: {run: "true"}}
          nokind: {shell: {run: "true"}}
        """)
    text = "\n".join(p.message for p in found)
    assert "`none` has no action" in text
    assert "two actions" in text
    assert "approval gate `gate` cannot also run" in text
    assert "`approvers` belongs to approval gates" in text
    assert "`nokind` has no `kind`" in text


def test_unknown_key_gets_did_you_mean(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          a:
            kind: provision
            shell: {run: "true"}
            retires: {attempts: 2}
        """)
    assert found[0].message == "unknown key `retires` in stage `a`"
    assert found[0].hint == "did you mean `retries`?"
    assert (found[0].location.line, found[0].location.column) == (7, 5)


def test_yaml11_boolean_gets_a_quote_hint(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          gate: {kind: approval, on_timeout: no}
        """)
    assert "on_timeout" in found[0].message
    # quoting 'no' would not help here: say how YAML read it, and what to write instead
    assert found[0].hint == ("YAML read `no` as the boolean false; "
                             "use one of: reject, cancel, approve")


def test_for_each_over_a_scalar_is_an_error(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        vars: {n: {default: 3, type: int}}
        stages:
          a: {kind: provision, for_each: "{{ vars.n }}", shell: {run: "true"}}
        """)
    assert "must give a list or a mapping" in found[0].message
    assert found[0].location.line == 5


def test_dangerous_env_refused_unless_allowed(tmp_path):
    text = """
        version: 1
        name: demo
        {allow}
        stages:
          a: {{kind: provision, shell: {{run: "true", env: {{LD_PRELOAD: /tmp/x.so}}}}}}
        """
    found = problems(tmp_path, text.format(allow=""))
    assert "LD_PRELOAD" in found[0].message and "allow_env" in found[0].hint
    compile_text(tmp_path, text.format(allow="allow_env: [LD_PRELOAD]"))


def test_paths_must_exist_and_stay_inside_the_project(tmp_path):
    (tmp_path / "stacks").mkdir()
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          a: {kind: provision, terraform: {dir: stacks/missing}}
          b: {kind: provision, terraform: {dir: ../../etc}}
        """)
    assert "does not exist" in found[0].message and str(tmp_path / "stacks") in found[0].message
    assert "outside the project" in found[1].message


def _runbook(directory, stages):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "book.yaml"
    path.write_text(f"version: 1\nname: demo\nstages:\n{textwrap.indent(stages, '  ')}")
    return path


def _project_of(runbook):
    """The project the compiler checked `runbook` against, from its refusal of /etc."""
    runbook.write_text(runbook.read_text().split("stages:")[0]
                       + "stages:\n  out: {kind: provision, terraform: {dir: /etc}}\n")
    with pytest.raises(RunbookError) as caught:
        compile_runbook(runbook)
    return caught.value.problems[0].message.rsplit("outside the project ", 1)[1]


def test_state_made_by_running_in_plans_does_not_shrink_the_project(tmp_path, monkeypatch):
    # An older iacorch left plans/.iacorch behind; in a git repository the next command
    # (destroy, resume) must still accept ../stacks.
    monkeypatch.delenv("IACORCH_PROJECT", raising=False)
    (tmp_path / ".git").mkdir()
    (tmp_path / "stacks" / "net").mkdir(parents=True)
    (tmp_path / "plans" / ".iacorch").mkdir(parents=True)
    book = _runbook(tmp_path / "plans", "net: {kind: provision, terraform: {dir: ../stacks/net}}\n")
    assert compile_runbook(book).stages["net"].action["dir"] == "../stacks/net"
    assert _project_of(book) == str(tmp_path)


def test_the_project_is_never_the_home_directory_or_a_stray_state_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("IACORCH_PROJECT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".git").mkdir()          # a dotfiles repository in the home directory
    (tmp_path / ".iacorch").mkdir()      # iacorch once ran there
    infra = tmp_path / "work" / "infra"
    (infra / ".iacorch").mkdir(parents=True)
    book = _runbook(infra / "plans", "a: {kind: verify, shell: {run: 'true'}}\n")
    assert _project_of(book) == str(infra)     # the parent of plans/, not ~
    found = problems(infra / "plans", """
        version: 1
        name: demo
        stages:
          key: {kind: provision, terraform: {dir: ../../../.ssh, var_files: [x]}}
        """)
    assert "outside the project" in found[0].message


def test_iacorch_project_names_the_project_where_git_cannot(tmp_path, monkeypatch):
    (tmp_path / "stacks" / "net").mkdir(parents=True)
    book = _runbook(tmp_path / "deploy" / "prod",
                    "net: {kind: provision, terraform: {dir: ../../stacks/net}}\n")
    monkeypatch.delenv("IACORCH_PROJECT", raising=False)
    assert _project_of(book) == str(tmp_path / "deploy" / "prod")
    book = _runbook(tmp_path / "deploy" / "prod",
                    "net: {kind: provision, terraform: {dir: ../../stacks/net}}\n")
    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    assert compile_runbook(book).stages["net"].action["dir"] == "../../stacks/net"


def test_a_shell_cwd_must_exist_inside_the_project(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        vars: {anywhere: {default: /tmp}}
        stages:
          a: {kind: verify, shell: {run: "true", cwd: missing}}
          b: {kind: verify, shell: {run: "true", cwd: /etc}}
          c: {kind: verify, shell: {run: "true", cwd: "{{ vars.anywhere }}"}}
        """)
    assert len(found) == 2, found
    assert "does not exist" in found[0].message and "outside the project" in found[1].message


def test_template_syntax_error_is_located(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          a:
            kind: provision
            shell: {run: "echo {{ vars.x "}
        """)
    assert "template syntax error" in found[0].message
    assert found[0].location.line == 6


def test_var_types_checked(tmp_path):
    with pytest.raises(UsageError, match="must be an integer"):
        compile_text(tmp_path, BASE, cli_vars={"replicas": "many"})
    with pytest.raises(UsageError, match="unknown var `replica`"):
        compile_text(tmp_path, BASE, cli_vars={"replica": "3"})
    assert compile_text(tmp_path, BASE, cli_vars={"replicas": "5"}).vars["replicas"] == 5


def test_approval_outputs_are_its_inputs(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          gate: {kind: approval, inputs: {region: {type: choice, choices: [eu, us]}}}
          go: {kind: deploy, shell: {run: "echo {{ stages.gate.outputs.regoin }}"}}
        """)
    assert "no output `regoin`" in found[0].message


def test_var_file_values_are_located_in_the_var_file(tmp_path):
    path = write(tmp_path, BASE)
    var_file = tmp_path / "prod.yaml"
    var_file.write_text("env: prod\nreplicas: many\n")
    with pytest.raises(UsageError) as caught:
        compile_runbook(path, var_files=[str(var_file)])
    assert caught.value.exit_code == 64
    assert caught.value.message == "var `replicas` must be an integer, got 'many'"
    assert (caught.value.location.file, caught.value.location.line) == (str(var_file), 2)
    assert "declared `type: int` at" in caught.value.hint
    var_file.write_text("env: prod\nreplica: 3\n")
    with pytest.raises(UsageError, match="unknown var `replica`") as caught:
        compile_runbook(path, var_files=[str(var_file)])
    assert caught.value.location.line == 2 and caught.value.hint == "did you mean `replicas`?"


def test_cli_var_errors_name_the_declaration_but_are_not_located_in_the_runbook(tmp_path):
    with pytest.raises(UsageError) as caught:
        compile_text(tmp_path, BASE, cli_vars={"replicas": "many"})
    assert caught.value.location is None  # the mistake is on the command line
    assert caught.value.hint.endswith("plan.yaml:6:3")


def test_every_problem_of_a_runbook_is_reported_at_once(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          a: {kind: provision, needs: [zz], shell: {run: "echo {{ vars.nope }}"}}
          b: {kind: provision, shell: {run: "true"}, http: {url: "http://x"}}
        schedules:
          nightly: {cron: "0 99 * * *"}
        drift:
          ignore: [{stage: c, reason: r}]
        """)
    assert [(p.location.line, p.location.column) for p in found] == [  # in reading order
        (4, 32), (4, 50), (5, 46), (7, 19), (9, 20)]
    assert [p.message.split(" ")[0] for p in found] == [
        "stage", "`vars.nope`", "stage", "`schedules.nightly.cron`:", "`drift.ignore`"]
    assert all(p.hint for p in found)


def test_plan_hash_is_the_same_in_every_process(tmp_path):
    """Python randomises str hashes per process: no set order may reach the hash."""
    import subprocess
    import sys

    path = write(tmp_path, """
        version: 1
        name: demo
        stages:
          a: {kind: provision, shell: {run: "true"}}
          b: {kind: provision, shell: {run: "true"}}
          c: {kind: provision, shell: {run: "true"}}
          d:
            kind: verify
            shell:
              run: "echo {{ stages.c.outputs.x }} {{ stages.a.outputs.y }} {{ stages.b.outputs.z }}"
        """)
    code = ("import sys; from iacorch.runbook.compiler import compile_runbook; "
            "print(compile_runbook(sys.argv[1]).plan_hash)")
    hashes = {subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin"},
                             check=True).stdout for seed in range(6)}
    assert len(hashes) == 1


def test_unquoted_true_in_argv_is_explained(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          a: {kind: verify, shell: {argv: [true]}}
        """)
    assert "reads as true" in found[0].message
    assert found[0].hint == 'write it in quotes: argv: ["true"]'
    assert (found[0].location.line, found[0].location.column) == (4, 35)


def test_a_secret_transformed_in_a_shell_script_is_an_error_elsewhere_it_is_not(tmp_path):
    """`shell.run` gets a secret as "${IACORCH_SECRET_X}": a filter would change that text."""
    found = problems(tmp_path, """
        version: 1
        name: demo
        secrets: {token: {env: TOKEN}}
        stages:
          call:
            kind: verify
            shell:
              run: |
                echo start
                curl "https://x/?t={{ secrets.token }}"
              env: {UPPER: "{{ secrets.token | upper }}"}
            rollback:
              shell: {run: "echo {{ 'Bearer ' ~ secrets.token }}"}
          check:
            kind: verify
            http: {url: "https://x/?t={{ secrets.token | urlencode }}"}
        """)
    assert [(p.location.line, p.location.column) for p in found] == [(13, 20)]
    assert found[0].message.startswith("`shell.run` applies an expression to `secrets.token`")
    assert '"$TOKEN"' in found[0].hint

# --- durations from vars, x- keys, destroy and dry_run -------------------------------------

RTO = """
version: 1
name: dr
vars:
  env: {default: dev}
  rto: {default: 15m}
  backoff: {default: 2, type: int}
deadline: "{{ vars.rto }}"
defaults:
  timeout: "{{ '1h' if vars.env == 'prod' else '10m' }}"
  retries: {attempts: 2, backoff: "{{ vars.backoff }}"}
stages:
  failover:
    kind: deploy
    timeout: "{{ vars.rto }}"
    retries: {attempts: 3, backoff: "{{ vars.backoff * 2 }}s"}
    shell: {run: "echo failover"}
  gate: {kind: approval, needs: [failover], timeout: "{{ vars.rto }}"}
  check: {kind: verify, needs: [gate], shell: {run: "echo ok"}}
"""


def test_durations_are_rendered_from_vars_when_the_runbook_compiles(tmp_path):
    plan = compile_text(tmp_path, RTO)
    assert plan.deadline == 900.0
    assert plan.stages["failover"].timeout == 900.0
    assert plan.stages["failover"].retry.backoff == 4.0
    assert plan.stages["gate"].approval.timeout == 900.0
    assert plan.stages["check"].timeout == 600.0          # the default, rendered
    assert plan.stages["check"].retry.backoff == 2.0
    prod = compile_text(tmp_path, RTO, cli_vars={"env": "prod", "rto": "4h"})
    assert (prod.deadline, prod.stages["check"].timeout) == (14400.0, 3600.0)
    assert prod.plan_hash != plan.plan_hash               # a timeout is part of what runs


def test_a_duration_template_that_gives_no_duration_is_located(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: dr
        vars:
          rto: {default: soon}
        deadline: "{{ vars.rto }}"
        stages:
          a:
            kind: deploy
            shell: {run: "true"}
            timeout: "{{ stages.b.outputs.limit }}"
            retries: {backoff: "{{ vars.rtp }}"}
          b: {kind: deploy, shell: {run: "true"}}
        """)
    assert [(p.location.line, p.location.column) for p in found] == [(5, 11), (10, 14), (11, 24)]
    assert found[0].message == "`deadline` renders to 'soon', which is not a duration"
    assert "15m" in found[0].hint
    assert found[1].message == ("`timeout` is computed when the runbook compiles, so it can "
                                "only use `vars`")
    assert found[2].message == "`vars.rtp` is not declared"
    assert found[2].hint == "did you mean `vars.rto`?"


def test_a_bad_duration_var_given_on_the_command_line_is_an_error(tmp_path):
    with pytest.raises(RunbookError) as caught:
        compile_text(tmp_path, RTO, cli_vars={"rto": "a while"})
    assert {p.message for p in caught.value.problems} == {
        "`deadline` renders to 'a while', which is not a duration",
        "`timeout` renders to 'a while', which is not a duration"}


def test_top_level_x_keys_are_ignored_and_hold_anchors(tmp_path):
    plan = compile_text(tmp_path, """
        version: 1
        name: demo
        x-retries: &retries {attempts: 3, backoff: 1s}
        x-shell: &make {run: make}
        stages:
          a: {kind: provision, retries: *retries, shell: *make}
          b: {kind: provision, retries: {<<: *retries, attempts: 5}, shell: *make}
        """)
    assert plan.stages["a"].retry == plan.stages["b"].retry.__class__(3, 1.0)
    assert plan.stages["b"].retry.attempts == 5
    found = problems(tmp_path, """
        version: 1
        name: demo
        y-shell: {run: make}
        stages:
          a: {kind: provision, shell: {x-run: make}}
        """)
    assert [p.message for p in found] == ["unknown key `y-shell` in the runbook",
                                          "unknown key `x-run` in `stages.a.shell`"]


def test_destroy_and_dry_run_are_compiled(tmp_path):
    plan = compile_text(tmp_path, """
        version: 1
        name: demo
        stages:
          net: {kind: provision, shell: {run: "echo net"}}
          app:
            kind: deploy
            shell: {run: "echo app"}
            dry_run: false
            rollback: none
            destroy: {shell: {run: "echo {{ stages.net.outputs.id }} {{ item }}"}}
        """)
    app = plan.stages["app"]
    assert (app.rollback, app.destroy, app.dry_run) == (
        "none", {"shell": {"run": "echo {{ stages.net.outputs.id }} {{ item }}"}}, False)
    assert app.needs == ()                  # a destroy action, like a rollback, adds no need
    assert plan.stages["net"].destroy is None and plan.stages["net"].dry_run is True


def test_a_destroy_action_is_checked_like_a_rollback(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          app:
            kind: deploy
            shell: {run: "echo app"}
            destroy: {shell: {run: "true", env: {LD_PRELOAD: x.so}}}
        """)
    assert [(p.location.line, p.location.column) for p in found] == [(7, 42)]
    assert "LD_PRELOAD" in found[0].message
    found = problems(tmp_path, """
        version: 1
        name: demo
        stages:
          web:
            kind: deploy
            shell: {run: "echo web"}
            destroy: {shell: {run: "true"}, http: {url: "http://x"}}
        """)
    assert [(p.location.line, p.location.column) for p in found] == [(7, 14)]
    assert found[0].message.startswith("`stages.web.destroy`: a destroy is `auto`, `none`, or "
                                       "exactly one action")


def test_a_stage_runs_on_its_own_pool_else_the_runbooks_and_gates_run_nowhere(tmp_path):
    plan = compile_text(tmp_path, """
        version: 1
        name: pools
        pool: linux
        stages:
          a: {kind: provision, shell: {run: "true"}}
          b: {kind: provision, pool: vpc-east, needs: [a], shell: {run: "true"}}
          go: {kind: approval, needs: [b]}
        finally:
          tidy: {shell: {run: "true"}}
        """)
    assert {s.id: s.pool for s in plan.stages.values()} == {
        "a": "linux", "b": "vpc-east", "go": None}
    assert plan.finally_stages["tidy"].pool == "linux"


def test_a_pool_name_must_suit_a_queue_name(tmp_path):
    found = problems(tmp_path, """
        version: 1
        name: pools
        stages:
          a: {kind: provision, pool: "east west", shell: {run: "true"}}
        """)
    assert found and found[0].location.line == 4
