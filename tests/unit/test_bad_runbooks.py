"""The bad-runbook corpus: every file in tests/data/bad is one mistake, with its expected error.

Each corpus file starts with header comment lines (`# key: value`):

    # expect: exit=65 line=7 col=5 message="needs `bb`" hint="did you mean" related=4:3 problems=1
    # setup: mkdir stacks/net          (also: `file PATH`, `symlink PATH TARGET`)
    # recipe: nest depth=10000         (also: `binary bytes=N seed=S`, `empty`, `pad bytes=N`)

`expect` is required: the exit code, where the (first) problem is, fragments of its message and
hint (`{root}` stands for the project directory), optionally where the `related` note points
and how many problems there are (1 unless given). `setup` prepares the project next to the
runbook; `recipe` generates content that is too large or too binary to commit. Each case is
copied into a fresh project directory (with a `.git` marker) and compiled there.
"""

from __future__ import annotations

import random
import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from iacorch.errors import IacorchError, Problem, RunbookError, UsageError
from iacorch.runbook.compiler import compile_runbook

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
SCREEN_LINES = 25
# Raw pydantic, Python or Jinja internals that must never reach a person.
LEAKS = ("Input should", "instance of", "Value error", "validation error", "Traceback",
         "pydantic", "NoneType", "jinja2.", "<class", "Field required")
_HEADER = re.compile(rb"^# (expect|setup|recipe): (.*)$")


@dataclass(frozen=True)
class Case:
    """One corpus file and what compiling it must report."""

    name: str
    source: Path
    exit: int
    line: int | None = None
    column: int | None = None
    message: str | None = None
    hint: str | None = None
    related: tuple[int, int] | None = None
    count: int = 1
    setup: tuple[tuple[str, ...], ...] = ()
    recipe: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def parse_case(path: Path) -> Case:
    """Read the header comment lines of a corpus file."""
    expect: dict[str, str] = {}
    setup: list[tuple[str, ...]] = []
    recipe: tuple[str, ...] = ()
    for raw in path.read_bytes().split(b"\n"):
        found = _HEADER.match(raw)
        if not found:
            break
        key, words = found.group(1).decode(), shlex.split(found.group(2).decode())
        if key == "expect":
            expect = dict(word.split("=", 1) for word in words)
        elif key == "setup":
            setup.append(tuple(words))
        else:
            recipe = tuple(words)
    assert "exit" in expect, f"{path.name}: the first line must be `# expect: exit=...`"
    related = tuple(int(n) for n in expect["related"].split(":")) if "related" in expect else None
    return Case(
        name=path.stem, source=path, exit=int(expect["exit"]),
        line=int(expect["line"]) if "line" in expect else None,
        column=int(expect["col"]) if "col" in expect else None,
        message=expect.get("message"), hint=expect.get("hint"),
        related=related,  # type: ignore[arg-type]
        count=int(expect.get("problems", "1")), setup=tuple(setup), recipe=recipe)


def corpus() -> list[Case]:
    return [parse_case(path) for path in sorted(CORPUS.glob("*.yaml"))]


def _options(words: tuple[str, ...]) -> dict[str, int]:
    return {k: int(v) for k, v in (w.split("=", 1) for w in words[1:])}


def generate(case: Case) -> bytes:
    """The runbook bytes: the file itself, or what its recipe makes of it."""
    text = case.source.read_bytes()
    if not case.recipe:
        return text
    kind, options = case.recipe[0], _options(case.recipe)
    if kind == "empty":
        return b""
    if kind == "binary":  # a PNG signature, then noise: what `validate *` meets in a repo
        noise = random.Random(options["seed"]).randbytes(options["bytes"] - 8)
        return b"\x89PNG\r\n\x1a\n" + noise
    if kind == "nest":
        depth = options["depth"]
        return text + b"  deep: {default: " + b"[" * depth + b"]" * depth + b"}\n"
    if kind == "pad":
        line = b"#" * 63 + b"\n"
        return text + line * (options["bytes"] // len(line) + 1)
    raise AssertionError(f"{case.name}: unknown recipe {kind!r}")


def materialize(case: Case, project: Path) -> Path:
    """Write the case into `project` (a fresh directory) and return the runbook's path."""
    (project / ".git").mkdir(exist_ok=True)
    for action, *args in case.setup:
        target = project / args[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        if action == "mkdir":
            for name in args:
                (project / name).mkdir(parents=True, exist_ok=True)
        elif action == "file":
            target.write_text("")
        elif action == "symlink":
            target.symlink_to(args[1])
        else:
            raise AssertionError(f"{case.name}: unknown setup {action!r}")
    path = project / case.source.name
    path.write_bytes(generate(case))
    return path


def compile_case(case: Case, project: Path, monkeypatch: pytest.MonkeyPatch) -> IacorchError:
    """Compile the case as the CLI would (relative path, from the project) and return its error."""
    materialize(case, project)
    monkeypatch.chdir(project)
    with pytest.raises(IacorchError) as caught:
        compile_runbook(case.source.name)
    return caught.value


def check_readable(problem: Problem) -> None:
    """Located, one sentence, a hint, nothing raw."""
    assert problem.location is not None and problem.location.line >= 1, problem
    assert problem.location.column >= 1, problem
    assert problem.hint, f"no hint: {problem.render()}"
    assert "\n" not in problem.message and "\n" not in problem.hint, problem
    for leak in LEAKS:
        assert leak not in problem.render(), problem.render()


CASES = corpus()
BAD = [case for case in CASES if case.exit != 0]


def test_corpus_is_large_and_every_case_is_one_file():
    assert len(BAD) >= 45
    assert len({case.name for case in CASES}) == len(CASES)
    assert all(case.line and case.column and case.message and case.hint for case in BAD)


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_runbook_gives_a_located_error_with_a_hint(case, tmp_path, monkeypatch):
    error = compile_case(case, tmp_path, monkeypatch)
    assert type(error) is (RunbookError if case.exit == 65 else UsageError), error.render()
    assert error.exit_code == case.exit
    problems = error.problems
    assert len(problems) == case.count, error.render()
    first = problems[0]
    assert first.location is not None, error.render()
    assert Path(first.location.file).name == case.source.name
    assert (first.location.line, first.location.column) == (case.line, case.column), \
        error.render()
    root = str(tmp_path.resolve())
    assert case.message is not None and case.hint is not None
    assert case.message.replace("{root}", root) in first.message, error.render()
    assert case.hint.replace("{root}", root) in (first.hint or ""), error.render()
    if case.related is not None:
        assert [(r.line, r.column) for r in first.related] == [case.related], error.render()
    for problem in problems:
        check_readable(problem)
    rendered = error.render()
    assert rendered.startswith(f"{case.source.name}:{case.line}:{case.column}: error: ")
    assert len(rendered.splitlines()) <= SCREEN_LINES


@pytest.mark.parametrize("case", [c for c in CASES if c.exit == 0], ids=str)
def test_positive_controls_compile(case, tmp_path, monkeypatch):
    path = materialize(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    plan = compile_runbook(path.name)
    assert plan.stages


# --- golden texts: what a person sees for representative mistakes --------------------------


def golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    error = compile_case(parse_case(CORPUS / f"{name}.yaml"), tmp_path, monkeypatch)
    return error.render().replace(str(tmp_path.resolve()), "<project>")


GOLDEN = {
    "duplicate-stage-id": """\
        duplicate-stage-id.yaml:11:3: error: key `build` appears twice in `stages`
          duplicate-stage-id.yaml:5:3: note: first defined here
          hint: remove or rename one of the stages; YAML would silently keep only the last""",
    "needs-missing-stage": """\
        needs-missing-stage.yaml:10:13: error: stage `test` needs `biuld`, which is not a stage
          hint: did you mean `build`?""",
    "cycle": """\
        cycle.yaml:5:3: error: the stages form a cycle: a -> b -> c -> a
          hint: remove one of these `needs` or stage references""",
    "unknown-stage-key": """\
        unknown-stage-key.yaml:8:5: error: unknown key `retires` in stage `build`
          hint: did you mean `retries`?""",
    "on-timeout-no": """\
        on-timeout-no.yaml:8:17: error: `stages.go-live.on_timeout`: expected one of 'reject', \
'cancel' or 'approve', got the boolean false
          hint: YAML read `no` as the boolean false; use one of: reject, cancel, approve""",
    "wrong-type-stage": """\
        wrong-type-stage.yaml:5:10: error: `stages.build`: expected a mapping, got 'make'
          hint: a stage is a mapping, e.g. `build: {kind: provision, shell: {run: make}}`""",
    "tab-indentation": """\
        tab-indentation.yaml:7:1: error: a tab character is used for indentation
          hint: indent with spaces; YAML does not allow tabs for indentation""",
    "dir-missing": """\
        dir-missing.yaml:6:43: error: `dir` 'stacks/netwrok' does not exist (looked for \
<project>/stacks/netwrok)
          hint: did you mean 'stacks/network'? Paths are relative to the runbook's directory""",
    "secret-filtered-in-shell-run": """\
        secret-filtered-in-shell-run.yaml:10:12: error: `shell.run` applies the `urlencode` filter \
to `secrets.token`, but in a script a secret is the reference "${IACORCH_SECRET_TOKEN}", not its \
value
          hint: apply the transformation in the shell, to "$IACORCH_SECRET_TOKEN", or pass it \
through env: put this template in the stage's `env:` (e.g. as TOKEN) and use "$TOKEN" in the \
script""",
    "http-url-with-space": """\
        http-url-with-space.yaml:8:12: error: `stages.smoke.http.url`: the URL has a space at \
character 33
          hint: percent-encode it (a space is %20); a value from a template can go through \
`| urlencode`""",

    "duration-template-not-a-duration": """\
        duration-template-not-a-duration.yaml:6:11: error: `deadline` renders to 'soon', which \
is not a duration
          hint: write it as 30s, 15m, 4h or 1h30m (a bare number means seconds); check the vars \
it uses""",
    "bad-timezone": """\
        bad-timezone.yaml:9:15: error: `schedules.nightly.timezone`: unknown time zone \
'Europe/Pariss'
          hint: did you mean 'Europe/Paris'? Use an IANA name such as Europe/Paris, \
America/New_York or UTC""",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_rendering(name, tmp_path, monkeypatch):
    assert golden(tmp_path, monkeypatch, name) == textwrap.dedent(GOLDEN[name])
