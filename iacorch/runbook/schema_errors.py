"""Turn pydantic validation errors into problems a person can act on.

pydantic reports a location as a path through the data, with extra entries
naming union branches; we strip those, point at the YAML node, keep only the
branch that fits the value's shape, say what was expected and what was found in
our own words (never pydantic's), and add a hint: did-you-mean, an example, or
how YAML read an unquoted value.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from iacorch.errors import Problem
from iacorch.model.fields import RuleError
from iacorch.model.registry import driver_names
from iacorch.runbook.source import Document, implicit_typing

Detail = dict[str, Any]

# pydantic error type -> what was expected, for errors that mean "wrong kind of value".
_EXPECTED = {
    "string_type": "text", "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "dict_type": "a mapping",
    "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
}
_CHOICE = ("literal_error", "enum")
_NAME_PATTERN = "may only hold letters, digits, `_`, `.` and `-`, starting with a letter or digit"
_SCHEMA_HINT = "run `iacorch schema` to see what is allowed here"


def schema_problems(document: Document, error: ValidationError,
                    model: type[BaseModel]) -> list[Problem]:
    """One problem per wrong place in the document, in document order."""
    grouped: dict[tuple[Any, ...], list[Detail]] = {}
    for detail in error.errors(include_url=False):
        path = _data_path(document.data, detail["loc"], detail["type"])
        grouped.setdefault(path, []).append(dict(detail))
    problems = [_problem(document, path, details, model)
                for path, details in _relevant(grouped).items()]
    problems.sort(key=lambda p: (p.location.line, p.location.column) if p.location else (0, 0))
    return problems


def _data_path(data: Any, loc: Sequence[Any], kind: str) -> tuple[Any, ...]:
    """Drop union-branch tags from a pydantic location by walking the real data."""
    path: list[Any] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
            path.append(part)
        elif (isinstance(current, list) and isinstance(part, int)
              and 0 <= part < len(current)):
            current = current[part]
            path.append(part)
        elif kind == "missing" and index == len(loc) - 1 and isinstance(current, dict):
            path.append(part)  # a missing field: the last part names it
    return tuple(path)


def _is_mismatch(detail: Detail) -> bool:
    return detail["type"] in _EXPECTED or detail["type"] in _CHOICE


def _relevant(grouped: dict[tuple[Any, ...], list[Detail]]
              ) -> dict[tuple[Any, ...], list[Detail]]:
    """Keep the union branch that fits the value: a branch that failed deeper, or on a rule,
    says more than the branches that only complain the value has the wrong shape."""
    kept: dict[tuple[Any, ...], list[Detail]] = {}
    for path, details in grouped.items():
        specific = [d for d in details if not _is_mismatch(d)]
        if specific:
            kept[path] = specific
            continue
        deeper = any(len(other) > len(path) and other[:len(path)] == path for other in grouped)
        if not deeper:
            kept[path] = details
    return kept


def _problem(document: Document, path: tuple[Any, ...], details: list[Detail],
             model: type[BaseModel]) -> Problem:
    kinds = {d["type"] for d in details}
    if "extra_forbidden" in kinds:
        return Problem(f"unknown key `{path[-1]}` in {_parent_name(path)}",
                       document.locate(path, key=True),
                       _unknown_key_hint(str(path[-1]), _known_keys(model, path[:-1]), model))
    if "missing" in kinds:
        parent = document.locate(path[:-1], key=True) if len(path) > 1 else document.locate(path)
        return Problem(f"missing required key `{path[-1]}` in {_parent_name(path)}", parent,
                       _missing_hint(path))
    value = _value_at(document.data, path)
    where = ".".join(str(p) for p in path) or "the runbook"
    message, hint = _describe_details(document, details, value, path)
    return Problem(f"`{where}`: {message}", document.locate(path), hint)


def _describe_details(document: Document, details: list[Detail], value: Any,
                      path: tuple[Any, ...]) -> tuple[str, str]:
    """(one sentence, hint) for the errors at one place."""
    key = str(path[-1]) if path else "value"
    if all(_is_mismatch(d) for d in details):
        options = [o for d in details if d["type"] in _CHOICE for o in _options(d, key)]
        nouns = _unique(_EXPECTED[d["type"]] for d in details if d["type"] in _EXPECTED)
        if options:
            nouns.insert(0, options[0] if len(options) == 1 else
                         f"one of {_join([repr(o) for o in options], 'or')}")
        message = f"expected {_join(nouns, 'or')}, got {describe(value)}"
        advice = _mismatch_hint(nouns, options, value, key, path)
        return message, _with_typing(document, path, advice, nouns, options)
    detail = details[0]
    kind, ctx = detail["type"], detail.get("ctx") or {}
    error = ctx.get("error")
    if kind == "value_error" and isinstance(error, RuleError):
        return error.message, _with_typing(document, path, error.hint, [], [])
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()))
        word = {"greater_than_equal": "at least", "greater_than": "more than",
                "less_than_equal": "at most", "less_than": "less than"}[kind]
        return (f"must be {word} {bound}, got {describe(value)}",
                f"use a value {word} {bound}")
    if kind == "string_pattern_mismatch":
        return f"{describe(value)} {_NAME_PATTERN}", "for example `name: web-tier`"
    message = str(detail.get("msg") or "invalid value").removeprefix("Value error, ")
    message = message.replace("Input should be", "expected")
    return f"{message}, got {describe(value)}", _SCHEMA_HINT


def _with_typing(document: Document, path: tuple[Any, ...], advice: str, nouns: list[str],
                 options: list[str]) -> str:
    """Put first how YAML typed an unquoted value, when that is the surprise behind the error:
    `no` read as false, `1.10` as 1.1, `~` as null."""
    found = implicit_typing(document, path)
    if found is None:
        return advice
    explanation, text, kind = found
    if "text" in nouns or (text and text in options):
        quoted = f"write '{text}' in quotes if you meant the text" if text else \
            "write '' for empty text"
        return f"{explanation}; {quoted}"
    if kind == "number" and any(n in nouns for n in ("a whole number", "a number")):
        return advice  # a number where a number belongs: YAML's reading is no surprise
    return f"{explanation}; {advice}"


def _options(detail: Detail, key: str) -> list[str]:
    expected = str((detail.get("ctx") or {}).get("expected", ""))
    options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",")]
    options = [o for o in options if o]
    if key == "kind":  # `finally` is what stages under `finally:` become, not a kind to write
        options = [o for o in options if o != "finally"]
    return options


def _mismatch_hint(nouns: list[str], options: list[str], value: Any, key: str,
                   path: tuple[Any, ...]) -> str:
    if options and isinstance(value, str):
        close = difflib.get_close_matches(value, options, n=1)
        if close:
            return f"did you mean `{close[0]}`?"
    if options:
        return f"write `{key}: {options[0]}`" if len(options) == 1 else \
            f"use one of: {', '.join(options)}"
    expected = nouns[0] if len(nouns) == 1 else ""
    if len(path) == 2 and path[0] in ("stages", "finally"):
        return f"a stage is a mapping, e.g. `{key}: {{kind: provision, shell: {{run: make}}}}`"
    if expected == "a whole number":
        return f"write a whole number without quotes, e.g. `{key}: 4`"
    if expected in ("a number", "a finite number"):
        return f"write a number without quotes, e.g. `{key}: 1.5`"
    if expected == "true or false":
        return f"write `{key}: true` or `{key}: false`"
    if expected == "a list":
        item = value if isinstance(value, str | int | float) and not isinstance(value, bool) \
            else "a, b"
        return f"write a list, e.g. `{key}: [{item}]`"
    if expected == "a mapping":
        return f"write `name: value` lines indented under `{key}:`"
    if expected == "text":
        return f"quote the value to make it text, e.g. `{key}: '...'`"
    return _SCHEMA_HINT


def _unknown_key_hint(name: str, known: list[str], model: type[BaseModel]) -> str:
    home = _home_of(name, model)  # the exact key elsewhere says more than a look-alike here
    if home:
        return f"`{name}` belongs {home}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    if not known:
        return _SCHEMA_HINT
    shown = sorted(known)
    if len(shown) > 10:
        return f"allowed here: {', '.join(shown[:10])}, ... (`iacorch schema` lists all)"
    return f"allowed here: {', '.join(shown)}"


# Where a key that is unknown in one place belongs instead, most general place first
# (`_home_of` adds each driver's action).
_HOMES: tuple[tuple[tuple[str, ...], str], ...] = (
    ((), "at the top level of the runbook"),
    (("stages", "*"), "directly under a stage"),
    (("vars", "*"), "inside a var, e.g. `vars: {env: {default: dev}}`"),
    (("secrets", "*"), "inside a secret, e.g. `secrets: {token: {env: TOKEN}}`"),
    (("schedules", "*"), "inside a schedule"),
)


def _home_of(name: str, model: type[BaseModel]) -> str | None:
    drivers = tuple((("stages", "*", driver), f"`{driver}:`") for driver in driver_names())
    homes = [home for path, home in (*_HOMES, *drivers) if name in _known_keys(model, path)]
    actions = [home for home in homes if home.startswith("`")]
    places = [home for home in homes if not home.startswith("`")]
    if actions:
        places.append(f"inside {_join(actions, 'or')}")
    return _join(places, "or") if places else None


_MISSING_HINTS = {
    ("version",): "add `version: 1` as the first line",
    ("name",): "add a name, e.g. `name: webapp`",
    ("stages",): "add `stages:` with at least one stage",
}


def _missing_hint(path: tuple[Any, ...]) -> str:
    if path in _MISSING_HINTS:
        return _MISSING_HINTS[path]
    return f"add `{path[-1]}:` to {'.'.join(map(str, path[:-1])) or 'the runbook'}"


def describe(value: Any) -> str:
    """How a value reads in a message: `'make'`, `the number 3`, `a list`."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    text = str(value)
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _join(items: Sequence[str], word: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _unique(items: Any) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _value_at(data: Any, path: Sequence[Any]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _parent_name(path: tuple[Any, ...]) -> str:
    if len(path) == 3 and path[0] in ("stages", "finally"):
        return f"stage `{path[1]}`"
    return "the runbook" if len(path) == 1 else f"`{'.'.join(map(str, path[:-1]))}`"


def _known_keys(model: type[BaseModel], path: Sequence[Any]) -> list[str]:
    """Field names (aliases where set) of the model(s) that parse the mapping at `path`."""
    candidates: list[Any] = [model]
    for part in path:
        following: list[Any] = []
        for candidate in candidates:
            for option in _flatten(candidate):
                if isinstance(option, type) and issubclass(option, BaseModel):
                    for name, info in option.model_fields.items():
                        if part in (name, info.alias):
                            following.append(info.annotation)
                elif typing.get_origin(option) is dict:
                    following.append(typing.get_args(option)[1])
                elif typing.get_origin(option) is list:
                    following.append(typing.get_args(option)[0])
        candidates = following
    keys: list[str] = []
    for candidate in candidates:
        for option in _flatten(candidate):
            if isinstance(option, type) and issubclass(option, BaseModel):
                keys += [info.alias or name for name, info in option.model_fields.items()]
    return _unique(keys)


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    return [annotation]
