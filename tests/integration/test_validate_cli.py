"""`iacorch validate` in a subprocess on bad runbooks: located errors with hints, the right
exit code, every problem of every file, and never a Python traceback."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
# Plain corpus files (no setup, no recipe) covering YAML, schema, template, graph and var errors.
CASES = ["duplicate-stage-id", "cycle", "tab-indentation", "template-unknown-var",
         "python-object-tag", "invalid-utf8", "unknown-stage-key", "on-timeout-no", "bad-cron",
         "rollback-two-actions", "required-var-not-given", "duration-template-not-a-duration",
         "var-int-default-unreadable"]
GOOD = """\
    version: 1
    name: fine
    stages:
      build: {kind: provision, shell: {run: make}}
    """


def expectation(name: str) -> dict[str, str]:
    header = (CORPUS / f"{name}.yaml").read_bytes().split(b"\n", 1)[0].decode()
    found = re.match(r"# expect: (.*)", header)
    assert found, header
    return dict(word.split("=", 1) for word in shlex.split(found.group(1)))


def add_case(project, name: str) -> str:
    shutil.copyfile(CORPUS / f"{name}.yaml", project.root / f"{name}.yaml")
    return f"{name}.yaml"


def assert_clean(result) -> None:
    assert "Traceback" not in result.text
    assert "internal error" not in result.text


@pytest.mark.parametrize("name", CASES)
def test_bad_runbook_is_located_with_a_hint(project, name):
    expect = expectation(name)
    result = project.run("validate", add_case(project, name))
    assert_clean(result)
    assert result.code == int(expect["exit"]), result.text
    assert f"{name}.yaml:{expect['line']}:{expect['col']}: error: " in result.err
    assert "  hint: " in result.err
    assert expect["message"] in result.err
    assert result.out == ""


def test_every_problem_of_every_runbook_is_reported(project):
    names = ["cycle", "needs-missing-stage", "unknown-top-level-key"]
    files = [add_case(project, name) for name in names]
    project.write("good.yaml", GOOD)
    result = project.run("validate", files[0], "good.yaml", *files[1:])
    assert_clean(result)
    assert result.code == 65, result.text
    for name in names:
        expect = expectation(name)
        assert f"{name}.yaml:{expect['line']}:{expect['col']}: error: " in result.err
    assert "ok: good.yaml" in result.out
    assert result.err.rstrip().endswith("3 problems in 3 of 4 runbooks")


def test_all_problems_of_one_runbook_are_reported(project):
    project.write("many.yaml", """\
        version: 1
        name: many
        concurrency: lots
        stages:
          build: {kind: provison, shell: {run: make}}
          test: {kind: verify, needs: [biuld], shell: {run: make test}}
        """)
    result = project.run("validate", "many.yaml")
    assert_clean(result)
    assert result.code == 65
    assert "many.yaml:3:14: error: `concurrency`: expected a whole number" in result.err
    assert "many.yaml:5:17: error: `stages.build.kind`" in result.err
    assert "2 problems in 1 of 1 runbook" in result.err


def test_a_missing_runbook_is_a_bad_invocation(project):
    result = project.run("validate", "plans/nope.yaml")
    assert_clean(result)
    assert result.code == 64
    assert "runbook file plans/nope.yaml does not exist" in result.err
    assert "hint: " in result.err


def test_a_missing_runbook_among_others_still_reports_the_others(project):
    result = project.run("validate", "nope.yaml", add_case(project, "cycle"))
    assert_clean(result)
    assert result.code == 64
    assert "nope.yaml does not exist" in result.err
    assert "cycle.yaml:5:3: error: the stages form a cycle: a -> b -> c -> a" in result.err


def test_a_directory_and_a_missing_var_file_are_bad_invocations(project):
    project.write("good.yaml", GOOD)
    directory = project.run("validate", ".")
    assert directory.code == 64 and "is a directory" in directory.err
    var_file = project.run("validate", "good.yaml", "--var-file", "nope.yaml")
    assert var_file.code == 64 and "--var-file nope.yaml: no such file" in var_file.err
    for result in (directory, var_file):
        assert_clean(result)


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("deep.yaml", b"a: " + b"[" * 200_000 + b"]" * 200_000 + b"\n", "nests deeper than"),
    ("bomb.yaml", b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%c: &%c [%s]\n" % (98 + i, 98 + i, b", ".join([b"*%c" % (97 + i)] * 10))
        for i in range(8)), "alias bomb"),
    ("binary.yaml", bytes(range(256)) * 64, "binary"),
], ids=["deep", "bomb", "binary"])
def test_hostile_input_is_refused_without_a_crash(project, name, content, fragment):
    (project.root / name).write_bytes(content)
    result = project.run("validate", name, timeout=60)
    assert_clean(result)
    assert result.code == 65, result.text
    assert fragment in result.err


def test_the_printed_schema_and_validate_agree(project):
    import json

    import jsonschema

    from iacorch.runbook.source import load_document

    printed = project.run("schema")
    assert printed.code == 0, printed.text
    validator = jsonschema.Draft202012Validator(json.loads(printed.out))
    for name, valid in (("x-keys-hold-anchors", True), ("two-actions", False),
                        ("shell-run-and-argv", False), ("stage-id-whitespace", False)):
        result = project.run("validate", add_case(project, name))
        assert_clean(result)
        data = load_document(project.root / f"{name}.yaml").data
        assert (result.code == 0) is valid, result.text
        assert validator.is_valid(data) is valid, name
