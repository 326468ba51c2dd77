"""docs/examples.md shows real output: every console block is run and compared.

scripts/examples_transcript.py runs the page's commands in order in the `examples`
fixture's copy of the examples (which also stops the DR lab and any leftover process)
and compares each block with the page, after normalising what varies between runs:
run ids, times, durations, pids, hashes, Terraform ids, tool versions, the HTTP Date,
the health check's connection-refused attempts (see the script). The dr-failover
apply and plan blocks run stages in parallel, so their lines are compared sorted. No
block is excluded; the pulumi-site block shows only what runs without the pulumi CLI.
Takes about a minute.

When it fails: `python scripts/examples_transcript.py` rewrites the page with real
output; read the diff, fix the prose it contradicts, commit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "examples_transcript", REPO / "scripts" / "examples_transcript.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_examples_page_matches_real_output(examples):
    script = load_script()
    page = (REPO / "docs" / "examples.md").read_text()
    real = script.run_examples(page, examples.root, examples.project.env)
    diff = script.differences(page, real)
    assert not diff, ("docs/examples.md differs from real output (normalised; - page, "
                      "+ real); run `python scripts/examples_transcript.py`, read the "
                      "diff and commit:\n" + diff)
    examples.assert_nothing_left()
