"""The editor schema (`iacorch schema`) and `iacorch validate` agree.

Every file of the bad-runbook corpus (tests/data/bad), every example in plans/ and every
runbook shown in docs/runbook.md is judged by both: bad ones rejected by both, good ones
accepted by both. A mistake JSON Schema cannot see is listed below with the reason, and
the test checks that the schema indeed lets it through, so the list stays true.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from iacorch.errors import IacorchError
from iacorch.model.runbook_schema import json_schema
from iacorch.runbook.compiler import compile_runbook
from iacorch.runbook.source import load_document, load_text
from tests.unit.test_bad_runbooks import CASES, Case, materialize

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = jsonschema.Draft202012Validator(json_schema())

# The loader refuses these before there is any data for a schema to look at.
_NOT_YAML = "not YAML the loader accepts"
_LOADER = "the loader refuses it (an editor's YAML parser reports it, not the schema)"
NOT_DATA = {
    "alias-bomb": _LOADER, "binary-garbage": _NOT_YAML, "control-character": _NOT_YAML,
    "deep-nesting-10000": _LOADER, "duplicate-key": _LOADER, "duplicate-stage-id": _LOADER,
    "empty-file": _LOADER, "huge-file": _LOADER, "invalid-utf8": _NOT_YAML,
    "not-a-mapping": _LOADER, "nul-byte": _NOT_YAML, "python-object-tag": _LOADER,
    "scalar-document": _LOADER, "stray-closing-bracket": _NOT_YAML,
    "stray-comma": _NOT_YAML, "tab-indentation": _NOT_YAML,
    "template-not-quoted-expression": _NOT_YAML, "template-not-quoted": _NOT_YAML,
    "two-documents": _LOADER, "unclosed-bracket": _NOT_YAML, "unclosed-quote": _NOT_YAML,
    "unknown-tag": _LOADER, "yaml-syntax-error": _NOT_YAML, "zero-bytes": _LOADER,
}

# Mistakes that need more than the shape of one value to see.
_TEMPLATE = "what a template refers to, or its syntax, is the template checker's"
_GRAPH = "relations between stages (names, needs, the graph)"
_FILES = "files on disk, relative to the runbook"
_ENV = "`allow_env` may permit any name, and JSON Schema cannot compare two values"
BEYOND_THE_SCHEMA = {
    "approval-require-too-many": "compares `require` with how many `approvers` there are",
    "bad-cron": "the range of each cron field is croniter's to check",
    "bad-timezone": "the time zones this machine knows",
    "cycle": _GRAPH,
    "dangerous-env-ansible-callbacks": _ENV,
    "dangerous-env-in-rollback": _ENV,
    "dangerous-env-ld-preload": _ENV,
    "dangerous-env-pythonpath": _ENV,
    "dangerous-env-tf-cli-args": _ENV,
    "dir-escapes-dotdot": _FILES,
    "dir-escapes-symlink": _FILES,
    "dir-missing": _FILES,
    "drift-ignore-unknown-stage": _GRAPH,
    "duration-template-not-a-duration": "the value of a var",
    "duration-template-uses-stage": _TEMPLATE,
    "finally-and-stage-same-id": "keys of two different mappings",
    "finally-kind-under-stages": "`stages:` and `finally:` share one stage model; which kind "
                                 "belongs where is the section's rule",
    "for-each-duplicate-items": "items become stage ids through `name`, `id` or `key`",
    "for-each-not-a-list": "the value of a var",
    "for-each-too-many-items": "the value of a var",
    "for-each-uses-stage": _TEMPLATE,
    "http-url-not-http": "a URL is parsed (scheme, host, port), and a templated one only once "
                         "rendered",
    "http-url-with-space": "a URL is parsed, and a template may hold spaces inside `{{ }}`",
    "secret-filtered-in-shell-run": _TEMPLATE,
    "item-without-for-each": _TEMPLATE,
    "jinja-syntax-error": _TEMPLATE,
    "jinja-unclosed-block": _TEMPLATE,
    "needs-itself": _GRAPH,
    "needs-missing-stage": _GRAPH,
    "notify-webhook-unknown-secret": _TEMPLATE,
    "playbook-missing": _FILES,
    "required-var-not-given": "a var missing from the command line is no mistake of the file",
    "template-memory-bomb": _TEMPLATE,
    "template-private-attribute": _TEMPLATE,
    "template-stage-id-with-dash": _TEMPLATE,
    "template-unknown-filter": _TEMPLATE,
    "template-unknown-output": _TEMPLATE,
    "template-unknown-root": _TEMPLATE,
    "template-unknown-secret": _TEMPLATE,
    "template-unknown-stage": _TEMPLATE,
    "template-unknown-var": _TEMPLATE,
    "unknown-notify-channel": "names under `notify:`",
    "var-default-not-a-choice": "compares `default` with `choices`",
}


def schema_errors(data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:100]}"
            for e in VALIDATOR.iter_errors(data)]


def validate_error(path: Path) -> str | None:
    """What `iacorch validate` says about the runbook (None: it is valid)."""
    try:
        compile_runbook(path)
    except IacorchError as exc:
        return exc.render()
    return None


def test_the_lists_name_only_corpus_files():
    names = {case.name for case in CASES}
    assert set(NOT_DATA) <= names and set(BEYOND_THE_SCHEMA) <= names
    assert not set(NOT_DATA) & set(BEYOND_THE_SCHEMA)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_schema_and_validate_agree_on_the_corpus(case: Case, tmp_path, monkeypatch):
    path = materialize(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    verdict = validate_error(Path(path.name))
    if case.exit == 0:
        assert verdict is None, verdict
        assert schema_errors(load_document(path.name).data) == []
        return
    assert verdict is not None, "validate accepts a runbook of the bad corpus"
    if case.name in NOT_DATA:
        with pytest.raises(IacorchError):
            load_document(path.name)
        return
    found = schema_errors(load_document(path.name).data)
    if case.name in BEYOND_THE_SCHEMA:
        assert found == [], (f"the schema now sees this mistake: remove {case.name} from "
                             f"BEYOND_THE_SCHEMA ({found})")
    else:
        assert found, f"the schema accepts what validate rejects:\n{verdict}"


@pytest.mark.parametrize("path", sorted((ROOT / "plans").glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_are_valid_for_both(path: Path):
    assert validate_error(path) is None
    assert schema_errors(load_document(path).data) == []


def test_the_runbooks_in_the_docs_pass_the_schema():
    text = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
              if b.startswith("version: 1")]
    assert blocks
    for block in blocks:
        assert schema_errors(load_text(block, "docs/runbook.md").data) == [], block


STAGE = "{kind: deploy, shell: {run: make}}"


@pytest.mark.parametrize(("valid", "stages", "extra"), [
    (True, "a: {kind: verify, when: 1, http: {url: 'http://x', expect: {status: '200'}}}", ""),
    (True, "a: {kind: verify, http: {url: 'http://x', expect: {status: ['200', 204]}}}", ""),
    (False, "a: {kind: verify, when: 2, shell: {run: make}}", ""),
    (True, "a: {kind: deploy, idempotent: 'No', retries: {attempts: '3'}, shell: {run: m}}",
     ""),
    (False, "a: {kind: deploy, retries: {attempts: 'three'}, shell: {run: m}}", ""),
    (True, f"a: {STAGE}", "concurrency: '8'"),
    (False, f"a: {STAGE}", "concurrency: '0'"),
    (True, "gate: {kind: approval, approvers: [al], terraform: null}", ""),
    (False, "gate: {kind: approval, shell: {run: make}}", ""),
    (False, "a: {kind: deploy, shell: {run: make}, terraform: {dir: .}}", ""),
    (False, "a: {kind: deploy, shell: {run: make, argv: [make]}}", ""),
    (True, f"a: {STAGE}", "finally: {tell: {needs: [], shell: {run: echo}}}"),
    (False, f"a: {STAGE}", "finally: {tell: {needs: [a], shell: {run: echo}}}"),
    (False, f"a: {STAGE}", "finally: {tell: {kind: approval}}"),
    (False, f"a b: {STAGE}", ""),
    (True, f"a: {STAGE}", "x-anchors: {any: thing}"),
    (True, f"a: {STAGE}", "vars: {n: {type: int, default: ' 3 '}, b: {type: bool, default: On}}"),
    (False, f"a: {STAGE}", "vars: {n: {type: float, default: many}}"),
    (True, f"a: {STAGE}", "vars: {n: {type: float, default: '1e3'}, s: {type: str, default: 3}}"),
    (False, f"a: {STAGE}", "vars: {s: {type: string, default: [a]}}"),
    (True, f"a: {STAGE}", "schedules: {n: {cron: '0 0 2 * * *'}}"),
    (False, f"a: {STAGE}", "schedules: {n: {cron: '@daily'}}"),
    (True, "a: {kind: deploy, shell: {run: m}, rollback: none, destroy: {shell: {run: m}}}",
     "deadline: '{{ vars.rto }}'\nvars: {rto: {default: 1h}}"),
    (False, "a: {kind: deploy, shell: {run: m}, destroy: {}}", ""),
    (False, f"a: {STAGE}", "secrets: {t: {env: T, file: /t}}"),
    (False, "g: {kind: approval, inputs: {r: {type: choice, choices: []}}}", ""),
])
def test_the_schema_and_validate_agree_on_small_cases(valid, stages, extra, tmp_path):
    (tmp_path / ".git").mkdir()
    path = tmp_path / "runbook.yaml"
    path.write_text(f"version: 1\nname: demo\n{extra}\nstages:\n  {stages}\n")
    verdict = validate_error(path)
    found = schema_errors(load_document(path).data)
    assert (verdict is None) is valid, verdict
    assert (not found) is valid, found
