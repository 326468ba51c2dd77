"""Turn pydantic validation errors into problems a person can act on.

pydantic reports a location as a path through the data, with extra entries
naming union branches; we strip those, point at the YAML node, merge the
branches' complaints into one sentence, and add did-you-mean hints.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from iacorch.errors import Problem
from iacorch.runbook.source import Document, implicit_typing_hint


def schema_problems(document: Document, error: ValidationError,
                    model: type[BaseModel]) -> list[Problem]:
    """One problem per wrong place in the document, in document order."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for detail in error.errors(include_url=False):
        path = _data_path(document.data, detail["loc"])
        grouped.setdefault(path, []).append(dict(detail))
    problems = []
    for path, details in grouped.items():
        problems.append(_problem(document, path, details, model))
    problems.sort(key=lambda p: (p.location.line, p.location.column) if p.location else (0, 0))
    return problems


def _data_path(data: Any, loc: Sequence[Any]) -> tuple[Any, ...]:
    """Drop union-branch tags from a pydantic location by walking the real data."""
    path: list[Any] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
            path.append(part)
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
            path.append(part)
        elif index == len(loc) - 1 and isinstance(current, dict):
            path.append(part)  # a missing field: the last part names it
    return tuple(path)


def _problem(document: Document, path: tuple[Any, ...], details: list[dict[str, Any]],
             model: type[BaseModel]) -> Problem:
    where = ".".join(str(p) for p in path) or "the runbook"
    kinds = {d["type"] for d in details}
    if "extra_forbidden" in kinds:
        known = _known_keys(model, path[:-1])
        close = difflib.get_close_matches(str(path[-1]), known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else (
            f"allowed here: {', '.join(sorted(known))}" if known else None)
        return Problem(f"unknown key `{path[-1]}` in {_parent_name(path)}",
                       document.locate(path, key=True), hint)
    if "missing" in kinds and len(details) == 1:
        return Problem(f"missing required key `{path[-1]}` in {_parent_name(path)}",
                       document.locate(path[:-1], key=True) if len(path) > 1
                       else document.locate(path))
    value = _value_at(document.data, path)
    hint = implicit_typing_hint(document, path)
    messages = _unique(_message(d) for d in details if d["type"] != "missing")
    message = messages[0] if len(messages) == 1 else "expected " + " or ".join(
        m.removeprefix("expected ") for m in messages)
    if hint is None:
        hint = _enum_hint(details, value)
    return Problem(f"`{where}`: {message}", document.locate(path), hint)


def _message(detail: dict[str, Any]) -> str:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    if kind in ("literal_error", "enum"):
        return f"expected one of {ctx.get('expected', '')}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        noun = {"string_type": "text", "int_type": "an integer", "int_parsing": "an integer",
                "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
                "bool_parsing": "true or false", "dict_type": "a mapping", "list_type": "a list",
                "model_type": "a mapping", "model_attributes_type": "a mapping"}.get(kind)
        if noun:
            return f"expected {noun}, got {_describe(detail.get('input'))}"
    message = str(detail.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _enum_hint(details: list[dict[str, Any]], value: Any) -> str | None:
    for detail in details:
        expected = (detail.get("ctx") or {}).get("expected")
        if expected and isinstance(value, str):
            options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",")]
            close = difflib.get_close_matches(value, options, n=1)
            if close:
                return f"did you mean `{close[0]}`?"
    return None


def _describe(value: Any) -> str:
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
    return f"{str(value)[:60]!r}"


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
    if len(path) >= 2 and path[0] in ("stages", "finally"):
        return f"stage `{path[1]}`" if len(path) == 3 else f"`{'.'.join(map(str, path[:-1]))}`"
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
