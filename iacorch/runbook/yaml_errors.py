"""What to tell a person about a YAML syntax error: libyaml's text mapped to plain words.

Also where a libyaml mark or a character offset is, as a 1-based `Location`.
"""

from __future__ import annotations

import re

import yaml
from yaml.error import Mark

from iacorch.errors import Location, Problem

ALIAS_NAME = re.compile(r"\*([^\s,\[\]{}]+)")
_ANCHOR_NAME = re.compile(r"&([^\s,\[\]{}]+)")


def mark_location(file: str, mark: Mark) -> Location:
    """Where a libyaml mark points, 1-based."""
    return Location(file, mark.line + 1, mark.column + 1)


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_RARE_BREAK = re.compile("[\r\x85\u2028\u2029]")


def offset_location(file: str, text: str, offset: int) -> Location:
    """Location of character `offset` in `text`, counting line breaks as YAML does."""
    head = text[:offset]
    if _RARE_BREAK.search(head) is None:  # the usual case, at C speed even for 16 MiB
        return Location(file, head.count("\n") + 1, offset - head.rfind("\n"))
    line, line_start = 1, 0
    for found in _LINE_BREAK.finditer(head):
        line, line_start = line + 1, found.end()
    return Location(file, line, offset - line_start + 1)


# libyaml's problem text (and the pure-Python loader's variant) -> what to tell a person.
# `{ctx}` is the 1-based line the construct began on.
_INDENTATION = ("this line is not indented like the mapping or list it belongs to",
                "check the indentation: keys of one mapping, and items of one list, "
                "start in the same column")
_SYNTAX: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("mapping values are not allowed",),
     "a `: ` inside a plain value would start a nested mapping, which is not allowed here",
     "quote the value ('like: this'), or put a nested mapping on its own indented lines"),
    (("did not find expected key", "expected <block end>",
      "did not find expected '-' indicator"), *_INDENTATION),
    (("',' or ']'",), "the list opened with `[` on line {ctx} is not closed, "
     "or a comma is missing between its items", "close it with `]`; separate items with `,`"),
    (("',' or '}'",), "the mapping opened with `{` on line {ctx} is not closed, "
     "or a comma is missing between its entries", "close it with `}`; separate entries with `,`"),
    (("unknown escape character",), "unknown escape sequence in double-quoted text",
     "write \\\\ for a backslash, or use single quotes, in which a backslash is plain text"),
    (("could not find expected ':'",), "the text starting on line {ctx} is missing the `:` "
     "after its key", "write `key: value`, or quote the text if it is not a key"),
    (("<document start>",), "there is content after the end of the document",
     "remove the `...` line above, or the text after it"),
    (("expected node content", "expected the node content"),
     "a value is missing or malformed here", "look for a stray `,`, `]`, `}` or indicator"),
    (("block sequence entries are not allowed",), "a list item `- ` is not allowed here",
     "put the list on its own lines, indented under its key"),
    (("alphabetic or numeric character",), "an anchor `&` or alias `*` has no name",
     "write `&name` and `*name` with letters, digits, `-` or `_`"),
    (("end of stream",), "the file ends in the middle of a value",
     "close the quote, bracket or block that is still open"),
    (("directive",), "a line starting with `%` is read as a YAML directive",
     "quote the value, or remove the `%` line"),
    (("while scanning a block scalar",), "text after `|` or `>` must start on the next line",
     "put the text on the following lines, indented under the key"),
    (("found unexpected ':'",), "a `:` here cannot be read as part of the value",
     "quote the value, e.g. 'host:port'"),
)
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def syntax_problem(err: yaml.YAMLError, file: str, text: str) -> Problem:
    """Turn a libyaml (or PyYAML) error into a Problem a person can act on."""
    if isinstance(err, yaml.reader.ReaderError):
        bad = _NON_PRINTABLE.search(text)
        if bad:
            return Problem(f"the file contains the control character U+{ord(bad.group()):04X}, "
                           "which YAML does not allow",
                           offset_location(file, text, bad.start()),
                           "remove it; a runbook is plain UTF-8 text")
    if (not isinstance(err, yaml.MarkedYAMLError)
            or (mark := err.problem_mark or err.context_mark) is None):
        return Problem(f"invalid YAML: {err}", Location(file, 1, 1),
                       "check the YAML syntax of the runbook")
    problem, context = err.problem or "", err.context or ""
    location = mark_location(file, mark)
    tab = _tab_location(file, text, mark)
    if tab is not None:
        return Problem("a tab character is used for indentation", tab,
                       "indent with spaces; YAML does not allow tabs for indentation")
    if text[mark.index:mark.index + 1] == "\t":
        return Problem("a tab character is not allowed here", location,
                       "use spaces; YAML allows tabs only inside values")
    template = _unquoted_template(file, text, err)
    if template is not None:
        return template
    char = text[mark.index:mark.index + 1]
    if char in ("]", "}") and ("expected key" in problem or "<block end>" in problem):
        opener = "[" if char == "]" else "{"
        return Problem(f"`{char}` closes nothing here", location,
                       f"remove it, or add the `{opener}` it belongs to")
    name = ALIAS_NAME.match(text, mark.index) or _ANCHOR_NAME.match(text, mark.index)
    if "undefined alias" in problem:
        shown = f"`*{name.group(1)}`" if name else "this alias"
        return Problem(f"{shown} is used before any anchor defines it", location,
                       "define the value with `&name` above its first use as `*name`")
    if "duplicate anchor" in context and err.context_mark:
        shown = f"`&{name.group(1)}`" if name else "this anchor"
        return Problem(f"anchor {shown} is defined twice", location,
                       "give each anchor a unique name",
                       (mark_location(file, err.context_mark),))
    if "quoted scalar" in context and "end of stream" in problem and err.context_mark:
        return Problem("this quoted text is never closed", mark_location(file, err.context_mark),
                       "add the closing quote")
    if "cannot start any token" in problem:
        char = text[mark.index:mark.index + 1]
        return Problem(f"`{char}` cannot start a value", location,
                       "put the value in quotes; plain text cannot start with `@`, `` ` `` or `%`")
    ctx = err.context_mark.line + 1 if err.context_mark else location.line
    for fragments, message, hint in _SYNTAX:
        if any(fragment in f"{problem} ({context})" for fragment in fragments):
            if "could not find expected ':'" in problem and err.context_mark:
                location = mark_location(file, err.context_mark)
            # replace, not format: the texts quote `{` and `}` as they are
            return Problem(message.replace("{ctx}", str(ctx)), location, hint)
    detail = f"{problem} ({context})" if context else problem
    return Problem(f"invalid YAML: {detail}", location, "check the YAML syntax at this position")


# A value (after `key: ` or `- `) that starts with `{{`: YAML reads `{` as a flow mapping.
_TEMPLATE_START = re.compile(r"(?:^|[:-])[ \t]+(\{\{[^\n]*)")


def _unquoted_template(file: str, text: str, err: yaml.MarkedYAMLError) -> Problem | None:
    """`when: {{ x }} == 1` breaks the YAML itself: say to quote it, not what libyaml saw."""
    for mark in (err.context_mark, err.problem_mark):
        if mark is None:
            continue
        start = text.rfind("\n", 0, mark.index) + 1
        end = text.find("\n", mark.index)
        found = _TEMPLATE_START.search(text, start, end if end >= 0 else len(text))
        if found and found.start(1) <= mark.index:
            shown = found.group(1).rstrip()
            shown = shown if len(shown) <= 60 else "{{ ... }}"
            quote = "'" if "'" not in shown else '"'
            return Problem("a value that starts with `{{` must be quoted",
                           offset_location(file, text, found.start(1)),
                           f"write it in quotes: {quote}{shown}{quote}; unquoted, YAML reads "
                           "`{` as the start of a mapping")
    return None


def _tab_location(file: str, text: str, mark: Mark) -> Location | None:
    """Where a tab in the indentation of the line at `mark` is, if that caused the error."""
    lines = _LINE_BREAK.split(text, mark.line + 1)
    if mark.line >= len(lines):
        return None
    line = lines[mark.line]
    indentation = line[:len(line) - len(line.lstrip(" \t"))]
    if "\t" in indentation and mark.column <= len(indentation):
        return Location(file, mark.line + 1, indentation.index("\t") + 1)
    return None
