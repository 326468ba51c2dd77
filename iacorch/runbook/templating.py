"""Templates: Jinja2 in a sandbox, native types for whole expressions, reference discovery.

A value that is one whole expression (`"{{ vars.replicas }}"`) keeps its type;
anything else renders to text. In `shell.run`, every interpolated value is
shell-quoted unless it goes through the `raw` filter, and a secret is a reference
to its environment variable, never its value.

Jinja2 loads on first use (see `sandbox`): text with no template, and the plain
`{{ root.a.b }}` references the compiler checks, need none of it.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iacorch.model.status import StageStatus

if TYPE_CHECKING:
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

_SIMPLE_SPAN = re.compile(r"\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\}\}")
_WHOLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>.*)\}\}$", re.DOTALL)
ROOTS = frozenset({"vars", "secrets", "stages", "run", "item", "env", "runbook"})


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@dataclass(frozen=True, slots=True)
class Reference:
    """One use of a context root: `stages.net.outputs.subnet` -> ("stages", ("net", ...))."""

    root: str
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretUse:
    """A secret used other than as a bare `{{ secrets.NAME }}`: `how` says what is done to it."""

    expression: str   # `secrets.token`, or `secrets` for the whole map
    how: str          # "the `upper` filter", "an expression", ...


@dataclass(frozen=True, slots=True)
class References:
    """What a template uses: context roots, and names that would fail when it renders."""

    items: frozenset[Reference] = frozenset()
    unsafe_attributes: tuple[str, ...] = field(default=())
    unknown_names: tuple[str, ...] = ()      # `{{ var.env }}`: not a context root
    unknown_filters: tuple[str, ...] = ()    # `{{ x | uper }}`
    unknown_tests: tuple[str, ...] = ()      # `{% if x is evn %}`
    secret_uses: tuple[SecretUse, ...] = ()  # `{{ secrets.token | upper }}`

    def under(self, root: str) -> Iterator[tuple[str, ...]]:
        return (ref.path for ref in self.items if ref.root == root)

    @property
    def stage_ids(self) -> set[str]:
        return {path[0] for path in self.under("stages") if path}


class TemplateProblem(Exception):
    """A template that does not parse, is unsafe, or fails to render; the caller adds where.

    `after_apply` marks a value that exists only once an upstream stage has applied (a
    plan reports such a stage as not fully planned); `reference` is the `stages.…` path,
    without `stages.`, that the problem is about, so the caller can point at where it
    is written.
    """

    def __init__(self, message: str, line_offset: int = 0, hint: str | None = None, *,
                 after_apply: bool = False, reference: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line_offset = line_offset
        self.hint = hint
        self.after_apply = after_apply
        self.reference = reference


def missing_output(stage_id: str, name: str, known: Iterable[str], *, why: str = "",
                   reference: str | None = None) -> TemplateProblem:
    """A reference to an output the stage does not have: the names it has, and the closest."""
    names = sorted(known)
    listed = f"its outputs are: {', '.join(names) or '(none)'}"
    close = did_you_mean(name, names)
    return TemplateProblem(f"stage `{stage_id}` has no output `{name}`{why}",
                           hint=f"{close} {listed}" if close else listed, reference=reference)


class StageOutputs(dict[str, Any]):
    """One stage's outputs as templates see them, and why a name missing from them is missing.

    `pending` names outputs whose values only an apply will tell; None means the stage
    may yet have any output (it has not run, or its plan cannot say). Any other name is
    one the stage does not have, which is an error rather than something to wait for.
    """

    __slots__ = ("_stage_id", "_reference", "_pending", "_status")

    def __init__(self, values: Mapping[str, Any], *, stage_id: str, reference: str,
                 pending: frozenset[str] | None, status: StageStatus) -> None:
        super().__init__(values)
        self._stage_id, self._reference = stage_id, reference
        self._pending, self._status = pending, status


def why_missing(outputs: StageOutputs, name: str) -> TemplateProblem:
    """Why `name` has no value: known only after apply, or not an output of the stage.

    A function, not a method: any attribute of StageOutputs would hide the output of that
    name from templates.
    """
    reference = f"{outputs._reference}.{name}"
    stage_id, pending = outputs._stage_id, outputs._pending
    if pending is None or name in pending:
        so_far = ""
        if pending is None and outputs:   # a typo should not pass as "later"
            close = did_you_mean(name, list(outputs))
            so_far = f"; its outputs so far: {', '.join(sorted(outputs))}" \
                     f"{', ' + close if close else ''}"
        return TemplateProblem(
            f"output `{name}` of stage `{stage_id}` is known only after apply{so_far}",
            hint=f"apply `{stage_id}` first, or give it `mock_outputs` and plan with --mock",
            after_apply=True, reference=reference)
    why = "" if outputs._status in (StageStatus.SUCCEEDED, StageStatus.MARKED_DONE) \
        else f" (its status is {outputs._status.value})"
    return missing_output(stage_id, name, outputs, why=why, reference=reference)


class _ShellRaw(str):
    """Text the runbook author marked with `| raw`: inserted into a script unquoted."""


def shell_raw(text: str) -> str:
    """Mark text to be inserted into a shell script as is, without quoting."""
    return _ShellRaw(text)


def to_text(value: Any) -> str:
    """How a rendered value reads as text: JSON for structures, true/false for booleans."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def secret_env_name(name: str) -> str:
    """The environment variable through which a secret reaches a shell stage."""
    return "IACORCH_SECRET_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def shell_secret(name: str) -> str:
    """What `{{ secrets.NAME }}` inserts into a `shell.run` script: its variable, quoted."""
    return shell_raw(f'"${{{secret_env_name(name)}}}"')


def _shell_finalize(value: Any) -> str:
    if isinstance(value, _ShellRaw):
        return str(value)
    return shlex.quote(to_text(value))


class Templates:
    """Parses, checks and renders runbook templates; caches by source text."""

    def __init__(self) -> None:
        self._environments: dict[bool, ImmutableSandboxedEnvironment] = {}
        self._references: dict[str, References] = {}
        self._compiled: dict[tuple[str, bool], Any] = {}

    @property
    def _env(self) -> ImmutableSandboxedEnvironment:
        return self._environment(shell=False)

    @property
    def _shell_env(self) -> ImmutableSandboxedEnvironment:
        return self._environment(shell=True)

    def _environment(self, *, shell: bool) -> ImmutableSandboxedEnvironment:
        env = self._environments.get(shell)
        if env is None:
            from iacorch.runbook.sandbox import new_environment

            env = new_environment(finalize=_shell_finalize if shell else to_text)
            self._environments[shell] = env
        return env

    # -- static analysis -------------------------------------------------
    def references(self, source: str) -> References:
        """Every use of vars/secrets/stages/run/item/env in a template; raises TemplateProblem."""
        cached = self._references.get(source)
        if cached is not None:
            return cached
        found = _simple_references(source) or self._analyse(source)
        self._references[source] = found
        return found

    def _analyse(self, source: str) -> References:
        from jinja2 import TemplateSyntaxError, meta

        tree = self._parse(source)
        filters, tests = _filters_and_tests(tree)
        unknown_filters = tuple(f for f in filters if f not in self._env.filters)
        unknown_tests = tuple(t for t in tests if t not in self._env.tests)
        undeclared: set[str] = set()
        if not unknown_filters and not unknown_tests:  # else Jinja's code generator fails
            try:
                undeclared = meta.find_undeclared_variables(tree)
            except TemplateSyntaxError as exc:
                raise syntax_problem(exc) from None
            except RecursionError:
                raise _too_deep() from None
        found = _walk_references(tree)
        return References(found.items, found.unsafe_attributes,
                          tuple(sorted(undeclared - ROOTS - set(self._env.globals))),
                          unknown_filters, unknown_tests, found.secret_uses)

    def known(self, kind: str) -> list[str]:
        """The names of the filters (`kind="filter"`) or tests templates may use."""
        return sorted(self._env.filters if kind == "filter" else self._env.tests)

    def _parse(self, source: str) -> nodes.Template:
        from jinja2 import TemplateError, TemplateSyntaxError

        try:
            return self._env.parse(source)
        except TemplateSyntaxError as exc:
            raise syntax_problem(exc) from None
        except TemplateError as exc:
            raise TemplateProblem(f"template syntax error: {exc.message}",
                                  hint=_SYNTAX_HINT) from None
        except RecursionError:
            raise _too_deep() from None

    # -- rendering -------------------------------------------------------
    def render(self, value: Any, context: Mapping[str, Any], *, shell: bool = False) -> Any:
        """Render the templates inside `value` (str, dict, list); whole expressions keep types."""
        if isinstance(value, str):
            return self._render_text(value, context, shell) if is_template(value) else value
        if isinstance(value, dict):
            return {k: self.render(v, context, shell=shell) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.render(v, context, shell=shell) for v in value]
        return value

    def _render_text(self, source: str, context: Mapping[str, Any], shell: bool) -> Any:
        from jinja2 import TemplateError
        from jinja2.sandbox import SecurityError

        try:
            return self._compile(source, shell)(context)
        except SecurityError as exc:
            raise TemplateProblem(f"refused by the template sandbox: {exc}",
                                  hint="templates cannot reach Python internals or build huge "
                                  "values") from None
        except TemplateError as exc:
            raise TemplateProblem(exc.message or type(exc).__name__) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateProblem(f"{type(exc).__name__}: {exc}") from None
        except RecursionError:
            raise _too_deep() from None

    def _compile(self, source: str, shell: bool) -> Any:
        key = (source, shell)
        render = self._compiled.get(key)
        if render is not None:
            return render
        from jinja2 import StrictUndefined

        whole = None if shell else _WHOLE_EXPRESSION.match(source)
        if whole and "}}" not in whole.group("expr") and "{{" not in whole.group("expr"):
            expression = self._env.compile_expression(whole.group("expr").strip(),
                                                      undefined_to_none=False)

            def render(ctx: Mapping[str, Any]) -> Any:
                value = expression(**ctx)
                if isinstance(value, StrictUndefined):
                    str(value)  # raises UndefinedError with Jinja's own message
                return value
        else:
            template = (self._shell_env if shell else self._env).from_string(source)

            def render(ctx: Mapping[str, Any]) -> Any:
                return template.render(**ctx)
        self._compiled[key] = render
        return render


_SYNTAX_HINT = "check that every `{{` has its `}}` and every `{%` its `%}`"
_END_TAG = re.compile(r"looking for the following tags: .*'(end\w+)'")
_OPEN_BLOCK = re.compile(r"innermost block that needs to be closed is '(\w+)'")
_UNKNOWN_TAG = re.compile(r"^Encountered unknown tag '(\w+)'")
_UNEXPECTED_CHAR = re.compile(r"unexpected char (?:'(.)'|\"(.)\") at \d+")
_EXPECTED_END = re.compile(r"expected token 'end of (print statement|statement block)', got '(.*)'")


def syntax_problem(exc: TemplateSyntaxError) -> TemplateProblem:
    """Jinja's syntax error in our words, with a hint; the line counts within the template."""
    text = exc.message or "invalid template"
    line = max(0, (exc.lineno or 1) - 1)
    where = f" (line {line + 1} of the template)" if line else ""
    message, hint = f"{text.split('. ')[0].rstrip('.')}", _SYNTAX_HINT
    if (block := _OPEN_BLOCK.search(text)) and (end := _END_TAG.search(text)):
        message = f"`{{% {block.group(1)} %}}` is never closed"
        hint = f"add `{{% {end.group(1)} %}}` where the block ends"
    elif "unexpected end of template" in text.lower():
        message, hint = "the template ends inside `{{ ... }}` or `{% ... %}`", _SYNTAX_HINT
    elif found := _UNKNOWN_TAG.match(text):
        tag = found.group(1)
        message = f"unknown tag `{{% {tag} %}}`"
        hint = (f"no `{{% {tag.removeprefix('end')} %}}` is open here" if tag.startswith("end")
                else "tags are if, elif, else, for, set, filter and macro")
    elif found := _EXPECTED_END.search(text):
        closer = "}}" if found.group(1) == "print statement" else "%}"
        message = f"expected `{closer}`, found `{found.group(2)}`"
        hint = "an expression is one value: join text with `~`, or move text out of `{{ }}`"
    elif text.startswith("unexpected '"):
        message = f"unexpected `{text.split(chr(39))[1]}`"
    elif found := _UNEXPECTED_CHAR.match(text):
        message = f"unexpected character `{found.group(1) or found.group(2)}` in an expression"
        hint = "inside `{{ }}` write an expression; quote text as '...'"
    return TemplateProblem(f"template syntax error: {message}{where}", line, hint)


def _too_deep() -> TemplateProblem:
    return TemplateProblem("the template nests expressions too deeply to read",
                           hint="split the expression, or compute the value in a var")


def _filters_and_tests(tree: nodes.Node) -> tuple[list[str], list[str]]:
    from jinja2 import nodes

    filters = [node.name for node in tree.find_all(nodes.Filter)]
    tests = [node.name for node in tree.find_all(nodes.Test)]
    return _unique(filters), _unique(tests)


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def did_you_mean(name: str, known: list[str] | frozenset[str]) -> str | None:
    """`did you mean `x`?` when a known name is close to `name`."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean `{close[0]}`?" if close else None


def _simple_references(source: str) -> References | None:
    """Text whose only Jinja is `{{ root.a.b }}` spans, analysed without a Jinja parse.

    Nearly every template in a runbook looks like this; parsing each one with Jinja
    was most of the compile time on large runbooks.
    """
    paths = _SIMPLE_SPAN.findall(source)
    rest = _SIMPLE_SPAN.sub("", source)
    if not paths or "{{" in rest or "{%" in rest or "{#" in rest or "}}" in rest:
        return None
    items: set[Reference] = set()
    unsafe: list[str] = []
    unknown: list[str] = []
    uses: list[SecretUse] = []
    for dotted in paths:
        root, *path = dotted.split(".")
        items.add(Reference(root, tuple(path)))
        unsafe += [p for p in path if p.startswith("_")]
        if root not in ROOTS and root not in unknown:
            unknown.append(root)
        if root == "secrets" and len(path) != 1:
            uses.append(_secret_use(tuple(path)))
    return References(frozenset(items), tuple(unsafe), tuple(sorted(unknown)),
                      secret_uses=tuple(uses))


def _walk_references(tree: nodes.Node) -> References:
    from jinja2 import nodes

    found: set[Reference] = set()
    unsafe: list[str] = []
    uses: list[SecretUse] = []
    # (node, its parent, the block that captures its output: `{% filter %}`, `{% set %}`...)
    stack: list[tuple[nodes.Node, nodes.Node | None, str | None]] = [(tree, None, None)]
    while stack:
        node, parent, block = stack.pop()
        chain = _attribute_chain(node)
        if chain is not None:
            root, path, rest = chain
            found.add(Reference(root, path))
            unsafe.extend(p for p in path if p.startswith("_"))
            use = _transformed_secret(path, node, parent, block) if root == "secrets" else None
            if use is not None:
                uses.append(use)
            stack.extend((arg, node, block) for arg in rest)
            continue
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            unsafe.append(node.attr)
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in ROOTS:
            found.add(Reference(node.name))
            if node.name == "secrets":
                uses.append(_secret_use(()))
        block = _capturing_block(node) or block
        stack.extend((child, node, block) for child in node.iter_child_nodes())
    return References(frozenset(found), tuple(unsafe), secret_uses=tuple(reversed(uses)))


def _transformed_secret(path: tuple[str, ...], node: nodes.Node, parent: nodes.Node | None,
                        block: str | None) -> SecretUse | None:
    """None for a bare `{{ secrets.NAME }}`; else what the template does to the secret."""
    from jinja2 import nodes

    if isinstance(parent, nodes.Output) and len(path) == 1 and block is None:
        return None
    how = block
    if how is None and isinstance(parent, nodes.Filter | nodes.Test) and parent.node is node:
        kind = "filter" if isinstance(parent, nodes.Filter) else "test"
        how = f"the `{parent.name}` {kind}"
    return _secret_use(path, how)


def _secret_use(path: tuple[str, ...], how: str | None = None) -> SecretUse:
    if how is None:
        how = f"`.{'.'.join(path[1:])}`" if len(path) > 1 else "an expression"
    return SecretUse("secrets" + (f".{path[0]}" if path else ""), how)


def _capturing_block(node: nodes.Node) -> str | None:
    """The blocks whose output is text the template goes on to change."""
    from jinja2 import nodes

    if isinstance(node, nodes.FilterBlock) and isinstance(node.filter, nodes.Filter):
        return f"the `{node.filter.name}` filter of a `{{% filter %}}` block"
    if isinstance(node, nodes.AssignBlock):
        return "a `{% set %}` block"
    if isinstance(node, nodes.Macro | nodes.CallBlock):
        return "a macro"
    return None


def _attribute_chain(node: nodes.Node) -> tuple[str, tuple[str, ...], list[nodes.Node]] | None:
    """`stages.a['b'].c` -> ("stages", ("a", "b", "c"), [nodes to keep walking])."""
    from jinja2 import nodes

    if not isinstance(node, nodes.Getattr | nodes.Getitem):
        return None
    path: list[str] = []
    rest: list[nodes.Node] = []
    current: nodes.Node = node
    while isinstance(current, nodes.Getattr | nodes.Getitem):
        if isinstance(current, nodes.Getattr):
            path.append(current.attr)
        elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str | int):
            path.append(str(current.arg.value))
        else:
            path.clear()  # a computed key: only the part before it is known statically
            rest.append(current.arg)
        current = current.node
    if not (isinstance(current, nodes.Name) and current.name in ROOTS):
        return None
    return current.name, tuple(reversed(path)), rest
