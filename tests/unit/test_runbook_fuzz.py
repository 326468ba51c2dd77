"""Mutated runbooks either compile or fail with a located, hinted IacorchError, quickly.

Valid runbooks (the examples in plans/ and generated ones) are mutated the way people
and tools break files: lines deleted, duplicated, swapped or re-indented, characters
flipped, YAML and Jinja syntax inserted, scalars replaced by values of other types, bytes
corrupted. Hypothesis runs derandomized, so CI sees the same inputs every time; the number
tried is printed after the module's tests, capture or not.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iacorch.errors import IacorchError
from iacorch.runbook.compiler import compile_document, compile_runbook
from iacorch.runbook.source import load_text

PLANS = Path(__file__).resolve().parents[2] / "plans"
SEEDS = {name: (PLANS / name).read_text() for name in
         ("quickstart.yaml", "dr-failover.yaml", "fleet.yaml")}
TIME_BOUND = 2.0  # seconds per input, generous for a loaded CI machine
LEAKS = ("Input should", "instance of", "Value error", "validation error", "Traceback",
         "NoneType", "<class", "Field required")
STATS: Counter[str] = Counter()

# --- valid runbooks to start from ---------------------------------------------------------

IDS = ["net", "db", "web", "app-1", "check_2", "go-live", "smoke"]


@st.composite
def generated_runbook(draw: st.DrawFn) -> str:
    """A small valid runbook: a chain of shell/http stages, templates, for_each, a gate."""
    ids = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=5, unique=True))
    lines = ["version: 1", f"name: gen-{len(ids)}", "vars:",
             "  env: {default: dev, choices: [dev, prod]}",
             "  regions: {default: [eu, us], type: list}",
             "  replicas: {default: 2, type: int}",
             "secrets:", "  token: {env: TOKEN}",
             f"concurrency: {draw(st.integers(1, 8))}",
             f"on_failure: {draw(st.sampled_from(['stop', 'rollback', 'continue']))}",
             "stages:"]
    for index, stage_id in enumerate(ids):
        earlier = ids[:index]
        lines.append(f"  {stage_id}:")
        if stage_id == "go-live":
            lines += ["    kind: approval", "    approvers: [alice, bob]", "    require: 1",
                      "    message: \"Ship {{ vars.env }}?\"", "    timeout: 1h"]
            if earlier:
                lines.append(f"    needs: [{earlier[-1]}]")
            continue
        lines.append(f"    kind: {draw(st.sampled_from(['provision', 'deploy', 'verify']))}")
        if earlier and draw(st.booleans()):
            lines.append(f"    needs: [{draw(st.sampled_from(earlier))}]")
        if draw(st.booleans()):
            lines.append('    for_each: "{{ vars.regions }}"')
            item = "{{ item }}"
        else:
            item = "x"
        upstream = [s for s in earlier if s != "go-live"]
        ref = f"{{{{ stages['{upstream[-1]}'].outputs.value }}}}" if upstream else "none"
        if draw(st.booleans()):
            lines += ["    shell:",
                      f'      run: "echo {item} {ref} {{{{ vars.replicas }}}}"',
                      "      env: {TOKEN: \"{{ secrets.token }}\"}",
                      "    retries: {attempts: 2, backoff: 1s}"]
        else:
            lines += ["    http:", f'      url: "http://127.0.0.1:8080/{item}"',
                      "      expect: {status: [200, 204], body_contains: ok}",
                      "      until: {attempts: 3, interval: 250ms}", "    timeout: 30s"]
    lines += ["finally:", "  report: {shell: {run: \"echo {{ run.status }}\"}}",
              "notify:", "  ops: {webhook: \"https://hooks.example/{{ runbook.name }}\"}",
              "schedules:", "  nightly: {cron: \"0 2 * * *\", action: drift, notify: [ops]}"]
    return "\n".join(lines) + "\n"


# --- mutations ------------------------------------------------------------------------------

YAML_BITS = [": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "*zz", "<<: *a", "---\n",
             "...\n", "? ", "| ", "> ", "%YAML 1.1\n", "\t", "#", "!!python/object:os.system ",
             "!Ref ", "!!binary ", "!!int ", "'", '"', "\\", "@", "`", "  ", "\n", "\r\n", "\x85",
             "\u2028", "\ufeff", "\x00", "\x07", "&a [a, *a]", "*a\n", "~", "=", ": :", "- -"]
JINJA_BITS = ["{{", "}}", "{%", "%}", "{{ }}", "{% if x %}", "{% endif %}", "{% for %}",
              "{{ stages.net.outputs.ip }}", "{{ stages.nope.outputs.x }}", "{{ vars.nope }}",
              "{{ secrets.nope }}", "{{ item }}", "{{ run.id }}", "{{ x | uper }}",
              "{{ vars.env | default('a') }}", "{{ ''.__class__ }}", "{{ (((1))) }}",
              "{{ vars.regions[0] }}", "{{ stages[vars.env] }}", "{% raw %}", "{# c #}",
              "{{ 1/0 }}", "{{ range(10**9) | list }}", "{{ var.env }}", "{% set x = 1 %}"]
SCALARS = ["[1, 2]", "{a: 1}", "null", "~", "yes", "no", "on", "1.10", "-1", "0", "1e999",
           ".inf", ".nan", "0x1F", "0o17", "2025-01-01", '""', "''", "true", "[]", "{}",
           "'{{ vars.env }}'", '"{{ stages.net.outputs.x }}"', "-", "1:30", "99999999999999999999",
           "[[[[[]]]]]", "*a", "&a x", "!!str 1", "!!int x", "|\n  text"]


def _lines(text: str) -> list[str]:
    return text.split("\n")


def delete_line(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    del lines[draw(st.integers(0, len(lines) - 1))]
    return "\n".join(lines)


def duplicate_line(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    index = draw(st.integers(0, len(lines) - 1))
    lines.insert(draw(st.integers(0, len(lines))), lines[index])
    return "\n".join(lines)


def swap_lines(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[a], lines[b] = lines[b], lines[a]
    return "\n".join(lines)


def reindent(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    index = draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    change = draw(st.sampled_from([-4, -2, -1, 1, 2, 4]))
    lines[index] = " " * change + line if change > 0 else line[min(-change, len(line)
                                                                   - len(line.lstrip())):]
    return "\n".join(lines)


def flip_character(draw: st.DrawFn, text: str) -> str:
    if not text:
        return text
    index = draw(st.integers(0, len(text) - 1))
    char = draw(st.one_of(st.sampled_from(list(":-[]{}#&*!|>'\"%@`,?\t\n ")),
                          st.characters(codec="utf-8")))
    return text[:index] + char + text[index + 1:]


def insert_bits(bits: list[str]) -> Callable[[st.DrawFn, str], str]:
    def insert(draw: st.DrawFn, text: str) -> str:
        index = draw(st.integers(0, len(text)))
        return text[:index] + draw(st.sampled_from(bits)) + text[index:]
    insert.__name__ = f"insert_{'jinja' if bits is JINJA_BITS else 'yaml'}"
    return insert


_VALUE = re.compile(r"(?m)(:[ ]+|-[ ]+)([^\n#]*)$")


def replace_scalar(draw: st.DrawFn, text: str) -> str:
    """Replace the value after a `key: ` or `- ` with a value of another type."""
    found = list(_VALUE.finditer(text))
    if not found:
        return text
    match = draw(st.sampled_from(found))
    return text[:match.start(2)] + draw(st.sampled_from(SCALARS)) + text[match.end(2):]


MUTATIONS = [delete_line, duplicate_line, swap_lines, reindent, flip_character,
             insert_bits(YAML_BITS), insert_bits(JINJA_BITS), replace_scalar, replace_scalar]


@st.composite
def mutated_runbook(draw: st.DrawFn) -> tuple[str, bytes]:
    """(path shown in messages, bytes): a valid runbook after one to four mutations."""
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(SEEDS)))
        text = SEEDS[name]
    else:
        name, text = "generated.yaml", draw(generated_runbook())
    for _ in range(draw(st.integers(1, 4))):
        text = draw(st.sampled_from(MUTATIONS))(draw, text)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 19)) == 0:  # now and then, bytes that are not UTF-8 at all
        index = draw(st.integers(0, len(data)))
        data = data[:index] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\x80"])) \
            + data[index:]
    return str(PLANS / name), data


# --- the properties -------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def report_inputs_tried(request: pytest.FixtureRequest):
    """After the module, print how many inputs were tried and how they ended (for the docs)."""
    yield
    total = sum(STATS.values())
    if not total:
        return
    summary = ", ".join(f"{count} {outcome}" for outcome, count in STATS.most_common())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nrunbook fuzz: {total} mutated inputs tried: {summary}")


def check_outcome(compile_one: Callable[[], object]) -> str:
    """Run one compile; it must finish in time and succeed or fail as a located user error."""
    started = time.perf_counter()
    try:
        compile_one()
        outcome = "compiled"
    except IacorchError as exc:
        outcome = type(exc).__name__
        rendered = exc.render()
        for leak in LEAKS:
            assert leak not in rendered, rendered
        for problem in exc.problems:
            assert problem.hint, rendered
            if exc.exit_code == 65:
                assert problem.location is not None and problem.location.line >= 1, rendered
                assert problem.location.column >= 1, rendered
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_BOUND, f"took {elapsed:.2f}s"
    return outcome


FUZZ = settings(max_examples=4000, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_compile(name):
    compile_document(load_text(SEEDS[name], str(PLANS / name)))


@settings(max_examples=50, derandomize=True, database=None, deadline=None)
@given(text=generated_runbook())
def test_generated_runbooks_are_valid(text):
    compile_document(load_text(text, str(PLANS / "generated.yaml")))


@FUZZ
@given(case=mutated_runbook())
def test_mutated_runbooks_compile_or_fail_cleanly(case):
    path, data = case
    STATS[check_outcome(lambda: compile_document(load_text(data, path)))] += 1


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated_runbook())
def test_mutated_runbook_files_compile_or_fail_cleanly(case, tmp_path_factory):
    directory = tmp_path_factory.getbasetemp() / "fuzz"
    (directory / ".git").mkdir(parents=True, exist_ok=True)
    path = directory / "runbook.yaml"
    path.write_bytes(case[1])
    STATS["file " + check_outcome(lambda: compile_runbook(path))] += 1
