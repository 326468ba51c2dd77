"""Secrets never leave in anything iacorch writes.

Two canary secrets, one from the environment and one from a file, each with
characters that every encoding changes, are used by shell, Terraform (a sensitive
variable and output) and Ansible (a no_log task and a careless plain one) stages.
After an apply, a plan, a drift check, a failing apply with its rollback and an
explicit rollback, every byte iacorch wrote is searched for the canaries and their
simple encodings (base64 at every alignment, URL, JSON-escaped): the console output
of each command, every file under IACORCH_HOME (stage logs, artifacts, state.db
with its -wal and -shm, saved plans unzipped), the JUnit, JSON and Markdown
reports, and the webhook payloads. While the apply runs, /proc/<pid>/cmdline of
every process of the run is read every few milliseconds: no canary in any argv.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"

RUNBOOK = """
version: 1
name: secrets
vars:
  fail: {default: false, type: bool}
secrets:
  env_canary: {env: CANARY_TOKEN}
  file_canary: {file: canary.txt}
on_failure: rollback
notify:
  hook: {webhook: "{{ env.HOOK_URL }}", on: [succeeded, failed, rollback_failed, drift]}
stages:
  script:
    kind: provision
    idempotent: true
    shell:
      run: |
        echo "env canary: {{ secrets.env_canary }}"
        echo "file canary: {{ secrets.file_canary }}"
        printf '%s' {{ secrets.env_canary }} | base64
        python3 -c 'import json, os; print(json.dumps(os.environ["IACORCH_SECRET_FILE_CANARY"]))'
        python3 -c 'import json, os; print(json.dumps({"token": os.environ[
          "IACORCH_SECRET_ENV_CANARY"]}))' >> "$IACORCH_OUTPUT"
        sleep 1
    rollback:
      shell: {run: "echo undoing with {{ secrets.env_canary }}"}
  stack:
    kind: provision
    terraform:
      dir: stack
      vars: {token: "{{ secrets.env_canary }}", pause: 1}
  play:
    kind: configure
    needs: [stack]
    ansible:
      playbook: playbooks/secret.yml
      inventory: [localhost]
      extra_vars: {token: "{{ secrets.file_canary }}"}
  breaks:
    kind: verify
    needs: [script, play]
    when: "{{ vars.fail }}"
    shell:
      run: |
        echo "failing with {{ secrets.file_canary }}" >&2
        exit 3
"""


@pytest.fixture
def secret_project(project, require_tool, receiver, canaries):
    require_tool("terraform")
    require_tool("ansible-playbook")
    shutil.copytree(FIXTURES / "secret_stack", project.root / "stack")
    shutil.copytree(FIXTURES / "playbooks", project.root / "playbooks")
    project.write("secrets.yaml", RUNBOOK)
    (project.root / "canary.txt").write_text(canaries.file + "\n")
    (project.root / "canary.txt").chmod(0o600)
    project.env["CANARY_TOKEN"] = canaries.env
    project.env["HOOK_URL"] = f"{receiver.url}/hook"
    return project


def files_iacorch_wrote(project) -> list[Path]:
    """Everything under IACORCH_HOME, and the reports asked for under out/."""
    roots = [Path(project.env["IACORCH_HOME"]), project.root / "out"]
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def readable_bytes(path: Path) -> list[tuple[str, bytes]]:
    """The file, and each member when it is a zip (Terraform's saved plans are)."""
    data = path.read_bytes()
    found = [(str(path), data)]
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            found += [(f"{path}!{name}", archive.read(name)) for name in archive.namelist()]
    return found


def test_no_canary_in_any_byte_iacorch_wrote(secret_project, canaries, receiver,
                                            watch_argv):
    project = secret_project
    reports = ("--report", "out/{}.xml", "--report", "out/{}.json", "--summary", "out/{}.md")
    console: dict[str, str] = {}

    def cli(label: str, *args: str, expect: int) -> str:
        result = project.run(*args)
        assert result.code == expect, f"{label}: {result.text}"
        console[label] = result.text
        return result.text

    code, output, argv = watch_argv(project, "apply", "secrets.yaml",
                                    *[a.format("apply") for a in reports])
    assert code == 0, output
    console["apply"] = output
    run_id = project.runs()[0]["id"]
    assert argv.seen, "no process of the run was seen"
    assert argv.hits() == {}, "a canary was on a command line"
    print(f"ARGV: {len(argv.seen)} process command lines read during the apply, no canary")

    shown = project.show(run_id)
    stages = {s["id"]: s for s in shown["stages"]}
    assert stages["stack"]["outputs"]["token"] == "(sensitive)"   # a sensitive output
    for stage, name in (("script", "token"), ("play", "echoed")):   # outputs that hold one
        assert stages[stage]["outputs"][name] in ("(sensitive)", "***")
    assert "***" in (project.run("logs", run_id, "script").out)   # masked, not dropped

    cli("show", "show", run_id, "--json", expect=0)
    cli("logs", "logs", run_id, expect=0)
    cli("plan", "plan", "secrets.yaml", "--json", *[a.format("plan") for a in reports],
        expect=0)
    drift = project.run("drift", "secrets.yaml", "--report", "out/drift.json",
                        "--summary", "out/drift.md")
    assert drift.code in (0, 2), drift.text
    console["drift"] = drift.text
    cli("failing apply", "apply", "secrets.yaml", "--var", "fail=true",
        *[a.format("failed") for a in reports], expect=1)
    failed_id = project.runs()[0]["id"]
    assert project.runs()[0]["status"] == "rolled_back"
    cli("failed logs", "logs", failed_id, expect=0)
    cli("rollback", "rollback", run_id, expect=1)
    cli("runs", "runs", "--json", expect=0)
    cli("audit", "audit", "verify", expect=0)

    hits: dict[str, list[str]] = {}
    for label, text in console.items():
        found = canaries.hits(text.encode())
        if found:
            hits[f"console of {label}"] = found
    scanned = 0
    for path in files_iacorch_wrote(project):
        for name, data in readable_bytes(path):
            scanned += 1
            found = canaries.hits(data)
            if found:
                hits[name] = found
    for request in receiver.requests:
        found = canaries.hits(request.body)
        if found:
            hits[f"webhook {request.path}"] = found
    assert receiver.requests, "the webhook channel was never called"
    print(f"CANARY: {len(console)} console outputs, {scanned} files and "
          f"{len(receiver.requests)} webhook payloads searched for "
          f"{len(canaries.needles)} forms: {len(hits)} hits")
    assert hits == {}, "canary found:\n" + "\n".join(f"  {k}: {v}" for k, v in hits.items())


def scan_home(project, canaries, *outputs: str) -> dict[str, list[str]]:
    """Canary hits in the given console outputs and every file under IACORCH_HOME."""
    hits = {f"console {n}": canaries.hits(text.encode()) for n, text in enumerate(outputs)}
    for path in files_iacorch_wrote(project):
        for name, data in readable_bytes(path):
            hits[name] = canaries.hits(data)
    return {where: found for where, found in hits.items() if found}


def test_outputs_a_script_wrote_stay_on_disk_only_masked(project, canaries):
    """$IACORCH_OUTPUT is a file in the state dir: what the script wrote there stays."""
    project.write("out.yaml", """
        version: 1
        name: out
        secrets: {token: {env: CANARY_TOKEN}}
        stages:
          emit:
            kind: provision
            shell:
              run: |
                printf '{"token": "%s", "plain": "ok"}\\n' "$IACORCH_SECRET_TOKEN" \\
                  >> "$IACORCH_OUTPUT"
          use: {kind: verify, shell: {run: "test {{ stages.emit.outputs.plain }} = ok"}}
        """)
    result = project.run("apply", "out.yaml", env={"CANARY_TOKEN": canaries.env})
    assert result.code == 0, result.text
    assert scan_home(project, canaries, result.text) == {}
    kept = next(Path(project.env["IACORCH_HOME"]).rglob("*.outputs.jsonl")).read_text()
    assert '"plain": "ok"' in kept and "***" in kept


def test_a_secret_printed_json_escaped_is_masked(project, canaries):
    project.write("quoted.yaml", """
        version: 1
        name: quoted
        secrets: {token: {env: QUOTED_TOKEN}}
        stages:
          show:
            kind: provision
            shell:
              run: >-
                python3 -c 'import json, os;
                print(json.dumps({"token": os.environ["IACORCH_SECRET_TOKEN"]}));
                print(json.dumps(os.environ["IACORCH_SECRET_TOKEN"], ensure_ascii=False))'
        """)
    result = project.run("apply", "quoted.yaml", env={"QUOTED_TOKEN": canaries.quoted})
    assert result.code == 0, result.text
    assert scan_home(project, canaries, result.text) == {}


GATED_SECRET = """
version: 1
name: gated-secret
secrets: {token: {env: CANARY_TOKEN}}
stages:
  go: {kind: approval, approvers: [alice]}
  stack:
    kind: provision
    needs: [go]
    terraform: {dir: stack, vars: {token: "{{ secrets.token }}"}}
"""


def test_a_plan_kept_for_approval_is_private_and_gone_once_applied(project, require_tool,
                                                                  canaries):
    """A saved plan holds the variable values Terraform needs to apply it, secrets
    included: while it waits for the gate it is readable by its owner only, and it is
    removed once applied; nothing else iacorch wrote holds the canary."""
    require_tool("terraform")
    shutil.copytree(FIXTURES / "secret_stack", project.root / "stack")
    project.write("gated.yaml", GATED_SECRET)
    env = {"CANARY_TOKEN": canaries.env}
    waiting = project.run("apply", "gated.yaml", env={**env, "IACORCH_USER": "carol"})
    assert waiting.code == 3, waiting.text
    run_id = project.runs()[0]["id"]
    plans = list(Path(project.env["IACORCH_HOME"]).rglob("tfplan"))
    assert len(plans) == 1 and plans[0].stat().st_mode & 0o077 == 0, plans
    approved = project.run("approve", run_id, "go", "--resume",
                           env={**env, "IACORCH_USER": "alice"})
    assert approved.code == 0, approved.text
    assert list(Path(project.env["IACORCH_HOME"]).rglob("tfplan")) == []
    assert scan_home(project, canaries, waiting.text, approved.text) == {}


HTTP_SECRETS = """
version: 1
name: http-secrets
secrets:
  token: {env: CANARY_TOKEN}
  password: {env: QUOTED_TOKEN}
on_failure: continue
stages:
  call:
    kind: verify
    http: {url: "{{ env.RECEIVER }}/ok?token={{ secrets.token | urlencode }}"}
  refused:
    kind: verify
    http:
      url: "{{ env.RECEIVER }}/no?token={{ secrets.token | urlencode }}"
      expect: {status: 201}
  login:
    kind: verify
    http: {url: "http://tester:{{ secrets.password | urlencode }}@{{ env.RECEIVER_HOST }}/in"}
"""


def test_a_secret_urlencoded_into_an_http_url_or_given_as_its_password_is_masked(
        project, canaries, receiver):
    """The URL is shown on the console, in the stage log, in the failure kept in state.db
    and in the audit log: in none of them, in no encoding, is the secret readable."""
    from base64 import b64encode
    from urllib.parse import quote

    project.write("http.yaml", HTTP_SECRETS)
    project.env.update(CANARY_TOKEN=canaries.env, QUOTED_TOKEN=canaries.quoted,
                       RECEIVER=receiver.url, RECEIVER_HOST=receiver.url.split("//")[1])
    reports = ("--report", "out/apply.xml", "--report", "out/apply.json",
               "--summary", "out/apply.md")
    applied = project.run("apply", "http.yaml", *reports)
    assert applied.code == 1, applied.text                # `refused` fails by design
    run_id = project.runs()[0]["id"]
    stages = {s["id"]: s["status"] for s in project.show(run_id)["stages"]}
    assert stages == {"call": "succeeded", "refused": "failed", "login": "succeeded"}
    assert f"/ok?token={quote(canaries.env)}" in [r.path for r in receiver.requests]
    login = next(r for r in receiver.requests if r.path == "/in")
    credentials = b64encode(f"tester:{canaries.quoted}".encode()).decode()
    assert login.headers["Authorization"] == f"Basic {credentials}"
    assert "/ok?token=***" in applied.text and "status 200, expected 201" in applied.text

    outputs = [applied.text]
    for args in (("plan", "http.yaml", "--json"), ("show", run_id, "--json"),
                 ("logs", run_id), ("runs", "--json"), ("audit", "verify")):
        result = project.run(*args)
        assert result.code == 0, result.text
        outputs.append(result.text)
    assert scan_home(project, canaries, *outputs) == {}
