"""The YAML front end: plain data with positions, and a located error for every bad input."""

import time

import pytest
import yaml

from iacorch.errors import Location, Problem, RunbookError, UsageError
from iacorch.runbook import source
from iacorch.runbook.source import implicit_typing_hint, load_document, load_text

FILE = "plan.yaml"


def problem_of(text: str | bytes) -> Problem:
    """The first problem reported for `text`, checking it is a located runbook error."""
    with pytest.raises(RunbookError) as caught:
        load_text(text, FILE)
    assert caught.value.exit_code == 65
    problem = caught.value.problems[0]
    assert problem.hint
    return problem


def at(line: int, column: int) -> Location:
    return Location(FILE, line, column)


# --- happy path -------------------------------------------------------------------------


def test_values_resolve_as_yaml_1_1_and_keep_order():
    doc = load_text(
        "name: web\nreplicas: 3\nratio: 0.5\nenabled: true\noff_value: off\nnothing: ~\n"
        "empty:\nquoted: '42'\nhex: 0x1F\nwhen: 2025-06-30\nstamp: 2025-06-30T10:00:00Z\n"
        "list: [a, 1, {b: c}]\nz: 1\na: 2\n")
    assert doc.data == {
        "name": "web", "replicas": 3, "ratio": 0.5, "enabled": True, "off_value": False,
        "nothing": None, "empty": None, "quoted": "42", "hex": 31,
        "when": "2025-06-30", "stamp": "2025-06-30T10:00:00Z",  # timestamps stay text
        "list": ["a", 1, {"b": "c"}], "z": 1, "a": 2}
    assert list(doc.data) == ["name", "replicas", "ratio", "enabled", "off_value", "nothing",
                              "empty", "quoted", "hex", "when", "stamp", "list", "z", "a"]
    assert str(doc.path) == "<string>"


def test_bool_and_number_looking_keys_keep_their_text():
    doc = load_text("notify:\n  ops: {webhook: x, on: [failed]}\nyes: 1\n1: a\n1.10: b\n"
                    "null: c\nNo: d\n")
    assert doc.data == {"notify": {"ops": {"webhook": "x", "on": ["failed"]}},
                        "yes": 1, "1": "a", "1.10": "b", "null": "c", "No": "d"}


def test_explicit_standard_tags_are_allowed():
    doc = load_text("a: !!str 123\nb: !!int '7'\nc: !!float 1\ne: !!bool yes\nf: !!null x\n")
    assert doc.data == {"a": "123", "b": 7, "c": 1.0, "e": True, "f": None}


def test_merge_keys_follow_yaml_1_1():
    doc = load_text(
        "base: &base {timeout: 15m, retries: 2, shell: {run: a}}\n"
        "extra: &extra {retries: 5, env: prod}\n"
        "one:\n  <<: *base\n  retries: 3\n"
        "two:\n  <<: [*extra, *base]\n  kind: deploy\n"
        "three: {kind: verify, <<: *base}\n")
    assert doc.data["one"] == {"timeout": "15m", "retries": 3, "shell": {"run": "a"}}
    # earlier mappings in the list win; explicit keys win over all of them
    assert doc.data["two"] == {"timeout": "15m", "retries": 5, "shell": {"run": "a"},
                               "env": "prod", "kind": "deploy"}
    assert list(doc.data["two"]) == ["timeout", "retries", "shell", "env", "kind"]
    assert doc.data["three"] == {"timeout": "15m", "retries": 2, "shell": {"run": "a"},
                                 "kind": "verify"}
    assert doc.data["one"]["shell"] is doc.data["base"]["shell"]


def test_aliases_share_one_object():
    doc = load_text("defaults: &d {timeout: 5m}\na: *d\nb: [*d, *d]\n")
    assert doc.data["a"] is doc.data["defaults"]
    assert doc.data["b"][0] is doc.data["b"][1] is doc.data["defaults"]


def test_utf8_bom_is_accepted_and_columns_count_characters():
    doc = load_text(b"\xef\xbb\xbfname: caf\xc3\xa9\nx: 1\n")
    assert doc.data == {"name": "café", "x": 1}
    assert problem_of("name: héllo: x\n").location == at(1, 12)


def test_load_document_reads_a_file(tmp_path):
    path = tmp_path / FILE
    path.write_text("version: 1\nstages: {}\n", encoding="utf-8")
    doc = load_document(path)
    assert doc.data == {"version": 1, "stages": {}}
    assert doc.locate(["stages"]) == Location(str(path), 2, 9)


def test_load_document_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as missing:
        load_document(tmp_path / "nope.yaml")
    assert missing.value.exit_code == 64
    with pytest.raises(UsageError, match="is a directory"):
        load_document(tmp_path)


# --- locate / scalar_text / hints --------------------------------------------------------

LOCATED = """\
version: 1
stages:
  net:
    kind: provision
    needs: [a, b]
    terraform:
      dir: ../net
defaults: &defaults
  timeout: 15m
hosts:
  <<: *defaults
  kind: deploy
on_timeout: no
version_text: 1.10
quoted: 'no'
"""


@pytest.mark.parametrize(("path", "key", "where"), [
    ((), False, (1, 1)),
    (("stages", "net", "kind"), False, (4, 11)),
    (("stages", "net", "kind"), True, (4, 5)),
    (("stages", "net", "needs", 1), False, (5, 16)),
    (("stages", "net", "terraform", "dir"), True, (7, 7)),
    (("stages", "net", "shell", "run"), False, (4, 5)),  # missing: deepest existing node
    (("stages", "net", "needs", 7), False, (5, 12)),
    (("stages", "net", "kind", "deeper"), False, (4, 11)),
    (("hosts", "timeout"), False, (9, 12)),  # found through the merge key
    (("hosts", "kind"), True, (12, 3)),
    (("stages", "missing"), True, (3, 3)),  # key=True on a missing path: the deepest node
])
def test_locate(path, key, where):
    assert load_text(LOCATED, FILE).locate(path, key=key) == at(*where)


def test_scalar_text_and_implicit_typing_hint():
    doc = load_text(LOCATED, FILE)
    assert doc.scalar_text(["on_timeout"]) == ("no", "tag:yaml.org,2002:bool")
    assert doc.scalar_text(["quoted"]) is None
    assert doc.scalar_text(["stages", "net"]) is None
    assert doc.scalar_text(["nope"]) is None
    assert implicit_typing_hint(doc, ["on_timeout"]) == (
        "YAML read `no` as the boolean false; write 'no' in quotes if you meant the text")
    assert implicit_typing_hint(doc, ["version_text"]) == (
        "YAML read `1.10` as the number 1.1; write '1.10' in quotes if you meant the text")
    assert implicit_typing_hint(doc, ["quoted"]) is None
    assert implicit_typing_hint(doc, ["stages", "net", "kind"]) is None
    empty = load_text("a:\nb: ~\n")
    assert "empty" in implicit_typing_hint(empty, ["a"])
    assert "`~` as null" in implicit_typing_hint(empty, ["b"])


# --- bad input: every case located, explained, with a hint --------------------------------

BAD = [
    # (id, text, line, column, fragment)
    ("syntax-colon", "name: a: b\n", 1, 8, "`: ` inside a plain value"),
    ("syntax-indent", "a:\n  b: 1\n c: 2\n", 3, 2, "not indented like"),
    ("syntax-unclosed-quote", "a: 1\nb: \"abc\n\nc: 2\n", 2, 4, "quoted text is never closed"),
    ("syntax-unclosed-list", "a: [1, 2\nb: 3\n", 2, 2, "opened with `[` on line 1"),
    ("syntax-unclosed-map", "a: {x: 1\nb: 3\n", 2, 2, "opened with `{` on line 1"),
    ("syntax-escape", 'a: "c:\\dir"\n', 1, 7, "unknown escape sequence"),
    ("syntax-reserved", "a: @x\n", 1, 4, "`@` cannot start a value"),
    ("syntax-undefined-alias", "a: 1\nb: *nope\n", 2, 4, "`*nope` is used before"),
    ("syntax-list-in-mapping", "a: 1\n- b\n", 2, 1, "not indented like"),
    ("tab-indent", "a:\n\tb: 1\n", 2, 1, "tab character is used for indentation"),
    ("tab-after-spaces", "a:\n  b: 1\n  \tc: 2\n", 3, 3, "tab character is used for indentation"),
    ("tab-in-block-scalar", "a: |\n  x\n\ty\n", 3, 1, "tab character is used for indentation"),
    ("empty-file", "", 1, 1, "the runbook is empty"),
    ("only-comments", "# nothing\n\n# here\n", 1, 1, "the runbook is empty"),
    ("only-null", "---\n~\n", 2, 1, "the runbook is empty"),
    ("top-level-list", "- a\n- b\n", 1, 1, "must be a mapping of keys, not a list"),
    ("top-level-scalar", "\nhello\n", 2, 1, "must be a mapping of keys, not a single value"),
    ("two-documents", "a: 1\n---\nb: 2\n", 2, 1, "a second YAML document"),
    ("two-documents-explicit", "---\na: 1\n---\n", 3, 1, "a second YAML document"),
    ("tag-python-apply", "a: 1\nb: !!python/object/apply:os.system [ls]\n", 2, 4,
     "unsupported YAML tag `!!python/object/apply:os.system`"),
    ("tag-python-name", "a: !!python/name:os.system ''\n", 1, 4, "`!!python/name:os.system`"),
    ("tag-custom", "a:\n  b: !custom x\n", 2, 6, "unsupported YAML tag `!custom`"),
    ("tag-set", "a: !!set {x: null}\n", 1, 4, "`!!set`"),
    ("tag-binary", "a: !!binary aGk=\n", 1, 4, "`!!binary`"),
    ("tag-on-key", "!custom a: 1\n", 1, 1, "`!custom`"),
    ("bad-typed-scalar", "a: !!int twelve\n", 1, 4, "`twelve` is not a valid !!int"),
    ("number-too-long", "a: " + "1:" * 60 + "1\n", 1, 4, "longer than 100 characters"),
    ("recursive-alias", "a: &a [1, *a]\n", 1, 11, "`*a` refers to a value that contains it"),
    ("recursive-merge", "a: &a {<<: *a}\n", 1, 12, "`*a` refers to a value that contains it"),
    ("bad-merge-value", "a: &s [1]\nb:\n  <<: *s\n", 3, 7, "`<<` merges a mapping"),
    ("key-is-a-list", "[a, b]: 1\n", 1, 1, "a mapping key must be text, not a list"),
    ("key-is-empty", "? \n: x\n", 1, 2, "a mapping key is empty"),
    ("duplicate-anchor", "a: &x 1\nb: &x 2\n", 2, 4, "anchor `&x` is defined twice"),
    ("invalid-utf8", b"a: 1\nb: caf\xe9\n", 2, 7, "not valid UTF-8"),
    ("binary-garbage", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, 1, "not valid UTF-8"),
    ("utf16", "a: 1\n".encode("utf-16"), 1, 1, "not valid UTF-8"),
    ("nul-byte", b"a: 1\nb: x\x00y\n", 2, 5, "NUL byte"),
    ("control-char", "a: 1\nb: x\x07\n", 2, 5, "control character U+0007"),
    ("lone-surrogate", "a: 1\nb: x\udc80\n", 2, 5, "lone surrogate"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_located(text, line, column, fragment):
    problem = problem_of(text)
    assert problem.location == at(line, column)
    assert fragment in problem.message


def test_duplicate_keys_name_both_places_and_all_are_reported():
    with pytest.raises(RunbookError) as caught:
        load_text("stages:\n  a: {kind: x}\n  b: {}\n  a: {kind: y, kind: z}\n", FILE)
    first, second = caught.value.problems
    assert (first.location, first.related) == (at(4, 3), (at(2, 3),))
    assert "key `a` appears twice" in first.message
    assert (second.location, second.related) == (at(4, 16), (at(4, 7),))
    assert "note: first defined here" in caught.value.render()


def test_duplicate_key_spelled_differently_is_still_a_duplicate():
    problem = problem_of("on: [failed]\n'on': [drift]\n")
    assert (problem.location, problem.related) == (at(2, 1), (at(1, 1),))


def test_file_larger_than_the_cap_is_refused(tmp_path):
    path = tmp_path / FILE
    path.write_bytes(b"a: 1\n" + b"#" * source.MAX_BYTES)
    with pytest.raises(RunbookError) as caught:
        load_document(path)
    problem = caught.value.problems[0]
    assert "larger than 16 MiB" in problem.message
    assert problem.location == Location(str(path), 2, source.MAX_BYTES - 5 + 1)


# --- hostile input is rejected quickly -----------------------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def quickly(text: str) -> Problem:
    start = time.perf_counter()
    problem = problem_of(text)
    assert time.perf_counter() - start < 1.0
    return problem


def test_billion_laughs_is_rejected_at_the_alias():
    problem = quickly(BOMB)
    # 9**7 + ... passes 1,000,000 values at the first alias on line 7 (`g: &g [*f, ...`)
    assert problem.location == at(7, 8)
    assert "`*f` expands the runbook beyond 1,000,000 values" in problem.message


def test_alias_bomb_through_merge_keys_is_rejected():
    items = ", ".join(["x"] * 100)
    text = "a: &a {" + ", ".join(f"k{i}: [{items}]" for i in range(100)) + "}\n" \
        + "".join(f"b{i}: {{<<: *a}}\n" for i in range(100))
    assert "beyond 1,000,000 values" in quickly(text).message


def test_aliases_cannot_nest_past_the_depth_limit():
    text = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    problem = quickly(text)
    assert problem.location == at(2, 34)
    assert "deeper than 64 levels" in problem.message


@pytest.mark.parametrize(("text", "where"), [
    ("[" * 10_000, (1, 65)),
    ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", (1, 67)),
    ("- " * 10_000 + "x\n", (1, 129)),
    ("".join(" " * i + f"k{i}:\n" for i in range(200)), (65, 65)),
    ("{a: " * 1_000_000, (1, 257)),  # deep enough to crash libyaml's recursive composer
], ids=["flow", "flow-balanced", "block-list", "block-mapping", "million-levels"])
def test_deep_nesting_is_rejected_at_the_limit(text, where):
    problem = quickly(text)
    assert problem.location == at(*where)
    assert "deeper than 64 levels" in problem.message


def test_too_many_values_are_rejected(monkeypatch):
    monkeypatch.setattr(source, "MAX_NODES", 1000)
    problem = problem_of("a: [" + "x, " * 2000 + "]\n")
    # the root mapping, `a` and the list count too: the 998th item is value 1001
    assert problem.location == at(1, 5 + 3 * 997)
    assert "more than 1,000 values" in problem.message


# --- the pure-Python fallback behaves the same -----------------------------------------


@pytest.fixture
def pure_python(monkeypatch):
    monkeypatch.setattr(source, "_Loader", yaml.SafeLoader)


FALLBACK = ["tab-indent", "two-documents", "tag-python-apply", "recursive-alias",
            "duplicate-anchor", "control-char", "bad-merge-value", "syntax-undefined-alias"]


@pytest.mark.parametrize("case", FALLBACK)
def test_pure_python_loader_locates_the_same(pure_python, case):
    _, text, line, column, fragment = next(c for c in BAD if c[0] == case)
    problem = problem_of(text)
    assert problem.location == at(line, column)
    assert fragment in problem.message


def test_pure_python_loader_is_hardened_and_complete(pure_python):
    assert quickly(BOMB).location == at(7, 8)
    # the pure-Python scanner looks ~1,000 characters ahead per bracket: keep this one short
    assert quickly("[" * 200).location == at(1, 65)
    doc = load_text(LOCATED, FILE)
    assert doc.data["hosts"] == {"timeout": "15m", "kind": "deploy"}
    assert doc.locate(["hosts", "timeout"]) == at(9, 12)
