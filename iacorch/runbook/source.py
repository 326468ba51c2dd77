"""YAML with a source position for every node, hardened against hostile input.

Loading runs in four steps, each with one guard:

1. bytes: a size cap, a strict UTF-8 decode (a BOM is allowed) and no NUL bytes;
2. an event scan with libyaml: nesting depth, node count, exactly one document, and the
   position of every alias. It runs before composing because libyaml's composer recurses
   on the C stack and crashes the interpreter on input nested ~100,000 levels deep;
3. compose the node tree with libyaml (kept, so errors are located lazily);
4. convert nodes to plain Python ourselves: aliases are never expanded (each node is
   converted once and shared), their expanded size and depth are computed per node and
   capped, and only standard tags are accepted, so nothing is ever constructed.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from iacorch.errors import Location, Problem, RunbookError, UsageError
from iacorch.runbook.yaml_errors import (
    ALIAS_NAME,
    mark_location,
    offset_location,
    syntax_problem,
)

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 1_000_000  # after expanding aliases, as anything walking the data would see it
MAX_NUMBER_CHARS = 100  # `1:1:1:...` as a YAML 1.1 base-60 int costs quadratic time

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"
# Timestamps stay text: no runbook field is a date, and `until: 2025-06-30` must stay a str.
# `merge` and `value` are what YAML 1.1 resolves a plain `<<` or `=` to outside a key.
_TEXT_TAGS = frozenset({_STR, _TAG + "timestamp", _MERGE, _TAG + "value"})
_SCALAR = object()  # memo entry of a scalar: cheap to convert again, so not stored
_BUSY = object()  # memo entry of a collection still being converted: an alias to it is a cycle


@dataclass(frozen=True)
class Document:
    """A loaded runbook file: plain data plus the node tree that says where each value is."""

    path: Path
    data: Any
    root: Node
    _index: dict[int, tuple[dict[str, tuple[Node, Node]], list[Node]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> Location:
        """Where the value at `path` is written (its key with `key=True`).

        A path deeper than the document (a missing field) gives the deepest node that exists.
        """
        node, key_node, complete = self._walk(path)
        target = key_node if key and complete and key_node is not None else node
        return mark_location(str(self.path), target.start_mark)

    def scalar_text(self, path: Sequence[str | int]) -> tuple[str, str] | None:
        """(source text, resolved tag) of the plain (unquoted) scalar at `path`, else None."""
        node, _, complete = self._walk(path)
        if complete and isinstance(node, ScalarNode) and not node.style:
            return node.value, node.tag
        return None

    def _walk(self, path: Sequence[str | int]) -> tuple[Node, Node | None, bool]:
        node, key_node = self.root, None
        for step in path:
            if isinstance(node, MappingNode):
                pair = self._lookup(node, str(step))
                if pair is None:
                    return node, key_node, False
                key_node, node = pair
            elif (isinstance(node, SequenceNode) and isinstance(step, int)
                  and not isinstance(step, bool) and 0 <= step < len(node.value)):
                key_node, node = None, node.value[step]
            else:
                return node, key_node, False
        return node, key_node, True

    def _lookup(self, mapping: MappingNode, name: str) -> tuple[Node, Node] | None:
        index = self._index.get(id(mapping))
        if index is None:
            explicit: dict[str, tuple[Node, Node]] = {}
            merged: list[Node] = []
            for key_node, value_node in mapping.value:
                if isinstance(key_node, ScalarNode):
                    if key_node.tag == _MERGE:
                        merged.append(value_node)
                    else:
                        explicit.setdefault(key_node.value, (key_node, value_node))
            index = self._index[id(mapping)] = (explicit, merged)
        explicit, merged = index
        if name in explicit:
            return explicit[name]
        for source in merged:  # earlier merged mappings win, as in loading
            parts = source.value if isinstance(source, SequenceNode) else [source]
            for part in parts:
                if isinstance(part, MappingNode) and (found := self._lookup(part, name)):
                    return found
        return None


def implicit_typing(doc: Document, path: Sequence[str | int]) -> tuple[str, str, str] | None:
    """(explanation, source text, "null"|"boolean"|"number") when YAML 1.1 typed the plain
    scalar at `path` (`no` -> false, `1.10` -> 1.1, `~` -> null), else None."""
    found = doc.scalar_text(path)
    if found is None:
        return None
    text, tag = found
    if tag == _NULL:
        if not text:
            return "the value is empty, which YAML reads as null", text, "null"
        return f"YAML read `{text}` as null", text, "null"
    if tag not in (_BOOL, _INT, _FLOAT):
        return None
    value = _builders()[tag](ScalarNode(tag, text))
    kind = "boolean" if tag == _BOOL else "number"
    shown = str(value).lower() if tag == _BOOL else repr(value)
    return f"YAML read `{text}` as the {kind} {shown}", text, kind


def implicit_typing_hint(doc: Document, path: Sequence[str | int]) -> str | None:
    """Explain a YAML 1.1 implicit type (`no` -> false, `1.10` -> 1.1) at `path`, if any."""
    found = implicit_typing(doc, path)
    if found is None:
        return None
    explanation, text, _ = found
    if not text:
        return f"{explanation}; write '' for empty text"
    return f"{explanation}; write '{text}' in quotes if you meant the text"


def load_document(path: Path | str) -> Document:
    """Read and load a runbook file; UsageError if it cannot be read, else RunbookError."""
    shown = Path(path)
    try:
        with open(shown, "rb") as stream:
            # read what the file holds, up to one byte past the cap (not a 16 MiB buffer);
            # a pipe such as <(generate) reports size 0, so it gets the cap
            size = os.fstat(stream.fileno()).st_size or MAX_BYTES
            data = stream.read(min(size, MAX_BYTES) + 1)
    except FileNotFoundError:
        raise UsageError(f"runbook file {shown} does not exist",
                         hint="check the path; it is relative to the current directory") from None
    except IsADirectoryError:
        raise UsageError(f"{shown} is a directory, not a runbook file",
                         hint="pass the runbook's YAML file, e.g. plans/webapp.yaml") from None
    except OSError as err:
        raise UsageError(f"cannot read runbook file {shown}: {err.strerror or err}",
                         hint="check that the file exists and is readable") from None
    return _load(data, shown)


def load_text(text: str | bytes, path: str = "<string>") -> Document:
    """Load a runbook from text or bytes; `path` is only used in messages."""
    shown = Path(path)
    if isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates from a lenient decode
            raise _error(offset_location(str(shown), text, err.start),
                         "the text contains an invalid character (a lone surrogate)",
                         "save the file as UTF-8 text") from None
    else:
        data = text
    return _load(data, shown)


def _load(data: bytes, shown: Path) -> Document:
    file = str(shown)
    text = _decode(data, file)
    try:
        with gc_paused():
            alias_marks = _scan(_Loader(text), file, text)
            composer = _Loader(text)
            try:
                root = composer.get_single_node()
            finally:
                composer.dispose()
            _check_root(root, file)
            converter = _Converter(file, text, alias_marks)
            converted = converter.convert(root)
    except yaml.YAMLError as err:
        raise RunbookError([syntax_problem(err, file, text)]) from None
    return Document(shown, converted, root)


def _deep_flow_guard(next_event: Callable[[], Any], file: str, text: str, depth: int,
                     seen: int) -> Any:
    """The next event; libyaml >= 0.2.6 refuses deep flow nesting while it scans ahead,
    before the events reach our limit: report that at the bracket our limit would name."""
    try:
        return next_event()
    except yaml.YAMLError as err:
        if "maximum nesting depth" not in str(err):
            raise
        raise _error(offset_location(file, text, _flow_too_deep(text, seen, depth)),
                     f"the runbook nests deeper than {MAX_DEPTH} levels here",
                     "no runbook needs this much nesting; look for unclosed brackets or "
                     "generated input") from None


def _flow_too_deep(text: str, start: int, depth: int) -> int:
    """Offset of the first `[` or `{` after `start` nested deeper than MAX_DEPTH."""
    quote = ""
    for offset in range(start, len(text)):
        char = text[offset]
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return offset
        elif char in "]}":
            depth -= 1
    return 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large tree of live objects.

    Loading or compiling a big runbook allocates hundreds of thousands of objects that
    all stay alive, so every collection in between is wasted work (loading ~3x faster).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decode(data: bytes, file: str) -> str:
    if len(data) > MAX_BYTES:
        head = data[:MAX_BYTES].decode("utf-8", "replace")
        raise _error(offset_location(file, head, len(head)),
                     f"the runbook is larger than {MAX_BYTES // (1024 * 1024)} MiB",
                     "split it into smaller runbooks; a file this size is not a hand-written plan")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if nul < 0 or err.start < nul:
            head = data[:err.start].decode("utf-8")
            raise _error(offset_location(file, head, len(head)),
                         f"the file is not valid UTF-8 text (byte 0x{data[err.start]:02x})",
                         "save the runbook as UTF-8; binary files cannot be runbooks") from None
        text = ""
    if nul >= 0:
        head = data[:nul].decode("utf-8")
        raise _error(offset_location(file, head, len(head)),
                     "the file contains a NUL byte, so it is binary, not YAML text",
                     "save the runbook as UTF-8 text")
    return text


def _scan(parser: Any, file: str, text: str) -> list[Mark]:
    """Check the shape of the event stream; return the position of every alias, in order."""
    depth = nodes = documents = 0
    aliases: list[Mark] = []
    next_event = parser.get_event
    seen = 0  # where the last event ended
    try:
        while (event := _deep_flow_guard(next_event, file, text, depth, seen)) is not None:
            seen = event.end_mark.index
            kind = type(event)
            if kind is ScalarEvent:
                nodes += 1
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                nodes += 1
                depth += 1
                if depth > MAX_DEPTH:
                    raise _error(mark_location(file, event.start_mark),
                                 f"the runbook nests deeper than {MAX_DEPTH} levels here",
                                 "no runbook needs this much nesting; look for unclosed "
                                 "brackets or generated input")
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                depth -= 1
            elif kind is AliasEvent:
                nodes += 1  # at least: a cheap bound that stops floods of aliases early
                aliases.append(event.start_mark)
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _error(mark_location(file, event.start_mark),
                                 "a second YAML document starts here; a runbook is one document",
                                 "remove the extra `---` line, or split the documents into "
                                 "separate runbook files")
            if nodes > MAX_NODES:
                raise _error(mark_location(file, event.start_mark),
                             f"the runbook has more than {MAX_NODES:,} values",
                             "split it into smaller runbooks")
    finally:
        parser.dispose()
    if documents == 0:
        raise _error(Location(file, 1, 1), "the runbook is empty",
                     "start with `version: 1`, `name:` and `stages:`")
    return aliases


def _check_root(root: Node, file: str) -> None:
    if isinstance(root, MappingNode):
        return
    if isinstance(root, ScalarNode) and root.tag == _NULL:
        raise _error(mark_location(file, root.start_mark), "the runbook is empty",
                     "start with `version: 1`, `name:` and `stages:`")
    what = "a list" if isinstance(root, SequenceNode) else "a single value"
    raise _error(mark_location(file, root.start_mark),
                 f"the top level of a runbook must be a mapping of keys, not {what}",
                 "write `key: value` lines at the top level: `version: 1`, `name:`, `stages:`")


class _Converter:
    """Nodes to plain Python. Aliases share one object; their expanded size is capped."""

    def __init__(self, file: str, text: str, alias_marks: list[Mark]) -> None:
        self._file = file
        self._text = text
        self._alias_marks = alias_marks
        self._next_alias = 0
        self._memo: dict[int, Any] = {}
        self._stats: dict[int, tuple[int, int]] = {}  # expanded (node count, height)
        self._count = 0
        self._reach = 0
        self._problems: list[Problem] = []
        self._builders = _builders()
        # With no alias in the document the scan has checked everything the memo is for.
        self._visit = self._visit_shared if alias_marks else self._visit_plain

    def convert(self, root: Node) -> Any:
        self._root = root
        data = self._visit(root, 1)
        if self._problems:
            raise RunbookError(self._problems)
        return data

    def scalar(self, node: ScalarNode) -> Any:
        """The value of a scalar whose tag is not str."""
        tag = node.tag
        if tag in _TEXT_TAGS:
            return node.value
        if tag == _NULL:
            return None
        build = self._builders.get(tag)
        if build is None:
            self._bad_tag(node)
        if len(node.value) > MAX_NUMBER_CHARS and tag != _BOOL:
            self._fail(node.start_mark, f"the number `{node.value[:20]}...` is longer than "
                       f"{MAX_NUMBER_CHARS} characters", "quote it if it is meant as text")
        try:
            return build(node)
        except (ValueError, KeyError, IndexError, ArithmeticError):
            self._fail(node.start_mark, f"`{node.value}` is not a valid {_show_tag(tag)}",
                       "fix the value, or remove the tag")

    def _visit_plain(self, node: Node, depth: int) -> Any:
        if isinstance(node, ScalarNode):
            return node.value if node.tag == _STR else self.scalar(node)
        if isinstance(node, MappingNode):
            return self._mapping(node, depth)
        return self._sequence(node, depth)  # type: ignore[arg-type]

    def _visit_shared(self, node: Node, depth: int) -> Any:
        memo, key = self._memo, id(node)
        if key in memo:
            return self._alias(node, depth, memo[key])
        self._count += 1
        if isinstance(node, ScalarNode):
            memo[key] = _SCALAR
            return node.value if node.tag == _STR else self.scalar(node)
        memo[key] = _BUSY
        start, outer_reach, self._reach = self._count - 1, self._reach, depth
        value = self._mapping(node, depth) if isinstance(node, MappingNode) \
            else self._sequence(node, depth)  # type: ignore[arg-type]
        memo[key] = value
        self._stats[key] = (self._count - start, self._reach - depth + 1)
        self._reach = max(outer_reach, self._reach)
        return value

    def _alias(self, node: Node, depth: int, value: Any) -> Any:
        """A second use of a node: count what expanding it would cost, share the value."""
        mark = self._alias_marks[self._next_alias]
        self._next_alias += 1
        name = ALIAS_NAME.match(self._text, mark.index)
        shown = f"`*{name.group(1)}`" if name else "this alias"
        if value is _BUSY:
            self._fail(mark, f"{shown} refers to a value that contains it (a recursive alias)",
                       "an alias can only repeat a value defined completely before it")
        size, height = (1, 0) if value is _SCALAR else self._stats[id(node)]
        self._count += size
        if self._count > MAX_NODES:
            self._fail(mark, f"{shown} expands the runbook beyond {MAX_NODES:,} values "
                       "(an alias bomb?)", "repeat large values less, or split the runbook")
        if depth + height - 1 > MAX_DEPTH:
            self._fail(mark, f"{shown} nests the runbook deeper than {MAX_DEPTH} levels",
                       "no runbook needs this much nesting; use fewer nested aliases")
        self._reach = max(self._reach, depth + height - 1)
        if isinstance(node, ScalarNode):
            return node.value if node.tag == _STR else self.scalar(node)
        return value

    def _sequence(self, node: SequenceNode, depth: int) -> list[Any]:
        if node.tag != _SEQ:
            self._bad_tag(node)
        visit, inner = self._visit, depth + 1
        return [visit(item, inner) for item in node.value]

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        if node.tag != _MAP:
            self._bad_tag(node)
        result: dict[str, Any] = {}
        merges: list[tuple[Mark, Any]] = []
        visit, inner = self._visit, depth + 1
        for key_node, value_node in node.value:
            key = self._key(key_node, inner)
            if key is not None and (key in result or (key == "<<" and merges)):
                self._duplicate(node, key_node, key)
                key = None
            if key_node.tag == _MERGE and key is not None:
                mark = self._value_mark(value_node)
                merges.append((mark, visit(value_node, inner)))
                continue
            value = visit(value_node, inner)  # even after a bad key: aliases are counted in order
            if key is not None:
                result[key] = value
        return self._merge(merges, result) if merges else result

    def _value_mark(self, node: Node) -> Mark:
        """Where `node` is written here: at the alias if it is one, else where it is defined."""
        if id(node) in self._memo and self._next_alias < len(self._alias_marks):
            return self._alias_marks[self._next_alias]
        return node.start_mark

    def _key(self, node: Node, depth: int) -> str | None:
        if self._visit is self._visit_shared:
            if type(node) is ScalarNode:
                self._count += 1
                if id(node) in self._memo:
                    self._next_alias += 1
                self._memo[id(node)] = _SCALAR
            else:
                self._visit(node, depth)
        if type(node) is not ScalarNode:
            self._problems.append(self._complex_key(node))
            return None
        if node.tag not in _TEXT_TAGS and node.tag not in self._builders and node.tag != _NULL:
            self._bad_tag(node)
        if node.tag == _NULL and not node.value:
            self._problems.append(Problem("a mapping key is empty",
                                          mark_location(self._file, node.start_mark),
                                          "write the key before the `:`"))
            return None
        # Keys keep their source text: YAML 1.1 would read `on:` (as in `notify`) as True.
        return node.value

    def _merge(self, merges: list[tuple[Mark, Any]], explicit: dict[str, Any]) -> dict[str, Any]:
        """YAML 1.1 merge keys: explicit keys win, then earlier merged mappings."""
        merged: dict[str, Any] = {}
        for mark, value in merges:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(source, dict) for source in sources):
                self._fail(mark, "`<<` merges a mapping or a list of mappings here",
                           "write `<<: *defaults` where `&defaults` names a mapping")
            for source in reversed(sources):
                merged.update(source)
        merged.update(explicit)
        return merged

    def _complex_key(self, node: Node) -> Problem:
        index = node.start_mark.index
        if self._text.startswith("{{", index - 1):
            # `run: {{ vars.x }}` unquoted is a mapping whose key is a mapping, not a template
            end = self._text.find("}}", index)
            shown = self._text[index - 1:end + 2] if 0 < end < index + 60 else "{{ ... }}"
            return Problem("a value that starts with `{{` must be quoted",
                           offset_location(self._file, self._text, index - 1),
                           f"write it as \"{shown}\"; unquoted, YAML reads `{{` as the start of "
                           "a mapping")
        what = "a mapping" if type(node) is MappingNode else "a list"
        return Problem(f"a mapping key must be text, not {what}",
                       mark_location(self._file, node.start_mark),
                       "write keys as plain words such as `name:`")

    def _duplicate(self, mapping: MappingNode, second: Node, key: str) -> None:
        first = next(k for k, _ in mapping.value
                     if isinstance(k, ScalarNode) and k.value == key and k is not second)
        path = _path_to(self._root, mapping)
        where = f"in `{'.'.join(path)}`" if path else "at the top level of the runbook"
        what = "stages" if path in (("stages",), ("finally",)) else "keys"
        self._problems.append(Problem(
            f"key `{key}` appears twice {where}",
            mark_location(self._file, second.start_mark),
            f"remove or rename one of the {what}; YAML would silently keep only the last",
            (mark_location(self._file, first.start_mark),)))

    def _bad_tag(self, node: Node) -> NoReturn:
        self._fail(node.start_mark, f"unsupported YAML tag `{_show_tag(node.tag)}`",
                   "a runbook holds plain data (text, numbers, booleans, lists, mappings): "
                   "remove the tag; iacorch never builds objects from YAML tags")

    def _fail(self, mark: Mark, message: str, hint: str) -> NoReturn:
        problem = Problem(message, mark_location(self._file, mark), hint)
        raise RunbookError([*self._problems, problem])


def _path_to(root: Node, target: Node) -> tuple[str, ...]:
    """The keys leading from `root` to `target` (only looked up to describe an error)."""
    stack: list[tuple[Node, tuple[str, ...]]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            stack.extend((value, (*path, str(key.value))) for key, value in node.value
                         if isinstance(key, ScalarNode))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(node.value))
    return ()


def _builders() -> dict[str, Callable[[ScalarNode], Any]]:
    """YAML 1.1 scalar constructors for the typed tags, by tag."""
    constructor = SafeConstructor()
    return {_INT: constructor.construct_yaml_int, _FLOAT: constructor.construct_yaml_float,
            _BOOL: constructor.construct_yaml_bool}


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _error(location: Location, message: str, hint: str) -> RunbookError:
    return RunbookError.single(message, location, hint)
