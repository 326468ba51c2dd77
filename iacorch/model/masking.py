"""Secret masking: the one function every log line, report and message passes through."""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import threading
from collections.abc import Collection, Iterable
from functools import partial
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_SECRET_LENGTH = 3
# A shorter base64 fragment (four characters) holds three bytes of the secret: masking it
# would hit unrelated base64 (certificates, plan files) more often than it hides anything.
_MIN_BASE64_FRAGMENT = 8
# Past this many nested groups the pattern lists the remaining forms flat: Python's regex
# parser recurses once per group (secrets that are prefixes of each other nest deeply).
_MAX_NESTING = 50
_HTML_SAFE_JSON = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_WORD_START = re.compile(r"([-\s({\[<]+)")   # where Jinja's `title` filter starts a word


def _encodings(secret: str) -> set[str]:
    """The secret as iacorch's template filters, shell quoting and common tools write it."""
    raw = secret.encode()
    json_text = json.dumps(secret, ensure_ascii=False)[1:-1]
    return {
        secret, *secret.splitlines(),
        secret.upper(), secret.lower(), secret.capitalize(), _title(secret),
        secret.strip(), " ".join(secret.split()),   # the `trim` and `striptags` filters
        secret[::-1],                               # the `reverse` filter
        quote(secret, safe=""), quote_plus(secret),
        quote(secret),                              # the `urlencode` filter keeps `/`
        raw.hex(),
        shlex.quote(secret),                        # shell.run quotes every value it inserts
        repr(secret)[1:-1],                         # the `pprint` filter
        html.escape(secret),
        _escape(secret),                            # the `escape` filter
        secret.encode("unicode_escape").decode(),
        json.dumps(secret)[1:-1], json_text,        # `tojson`, Python, Ansible
        json_text.translate(_HTML_SAFE_JSON),       # Go's encoding/json (Terraform, Pulumi)
        base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
        *_base64_fragments(raw),
        *_chained(secret),
    }


def _chained(secret: str) -> set[str]:
    """A case filter and an encoding filter in a row, either way round (`upper | urlencode`)."""
    cases = (str.upper, str.lower, str.capitalize, _title)
    encodings = (quote, partial(quote, safe=""), quote_plus, html.escape, _escape,
                 lambda text: json.dumps(text)[1:-1])
    return {form for case in cases for encode in encodings
            for form in (encode(case(secret)), case(encode(secret)))}


def _escape(text: str) -> str:
    """What Jinja's `escape` (`e`) filter makes of `text`."""
    return html.escape(text).replace("&quot;", "&#34;").replace("&#x27;", "&#39;")


def _title(text: str) -> str:
    """What Jinja's `title` filter makes of `text` (not str.title: `it's` stays `It's`)."""
    return "".join(word[:1].upper() + word[1:].lower() for word in _WORD_START.split(text))


def _base64_fragments(raw: bytes) -> set[str]:
    """The secret base64-encoded inside longer data, at each of its three alignments.

    The characters that also encode neighbouring bytes are left out, so a fragment
    matches whatever surrounds the secret.
    """
    fragments = set()
    for shift in range(3):
        skip_start = 4 if shift else 0
        skip_end = 4 if (shift + len(raw)) % 3 else 0
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * shift + raw).decode()
            fragments.add(text[skip_start:len(text) - skip_end])
    return {f for f in fragments if len(f) >= _MIN_BASE64_FRAGMENT}


def _alternation(forms: Collection[str], depth: int = 0) -> str:
    """One regex alternation matching any of `forms`, the longest where several match.

    Alternatives are grouped by their common prefix (a trie), so at each position
    the regex engine tries one branch per distinct character instead of every form:
    with tens of secrets, several times faster than a flat list of the same forms.
    """
    ends_here = "" in forms
    rest = sorted(f for f in forms if f)
    if depth > _MAX_NESTING:
        branches = [re.escape(f) for f in sorted(rest, key=len, reverse=True)]
    else:
        groups: dict[str, list[str]] = {}
        for form in rest:
            groups.setdefault(form[0], []).append(form)
        branches = []
        for group in groups.values():
            prefix = _common_prefix(group[0], group[-1])   # sorted: first and last suffice
            tail = _alternation([f[len(prefix):] for f in group], depth + 1)
            branches.append(re.escape(prefix) + tail)
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    return f"(?:{body})?" if ends_here else body


def _common_prefix(first: str, last: str) -> str:
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


class Masker:
    """Replaces every known secret value, and the encodings of it, by `***`.

    Values shorter than three characters are not masked: masking `1` or `no`
    would destroy every log line while protecting nothing. Stages running in
    parallel teach it values (sensitive outputs, URL passwords) while others mask.
    """

    __slots__ = ("_adding", "_forms", "_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._forms: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._adding = threading.Lock()   # two stages adding at once must not lose one
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Learn more secret values (for example sensitive outputs of a finished stage)."""
        found = {str(s) for s in secrets if s is not None and len(str(s)) >= _MIN_SECRET_LENGTH}
        with self._adding:
            new = found - self._secrets
            if not new:
                return
            self._secrets = self._secrets | new
            self._forms = self._forms | {form for secret in new for form in _encodings(secret)
                                         if len(form) >= _MIN_SECRET_LENGTH}
            self._pattern = re.compile(_alternation(self._forms))

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def mask(self, text: str) -> str:
        """Return `text` with every secret replaced by `***`."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def mask_value(self, value: object) -> object:
        """Mask strings nested anywhere in JSON-like data."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(v) for v in value]
        return value
