"""Secret masking: the one function every log line, report and message passes through."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_SECRET_LENGTH = 3


def _encodings(secret: str) -> set[str]:
    """The secret as tools print it: plain, URL- and base64-encoded, escaped in JSON."""
    raw = secret.encode()
    return {secret, quote(secret, safe=""), quote_plus(secret),
            base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            secret.encode("unicode_escape").decode(),
            json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


class Masker:
    """Replaces every known secret value, and simple encodings of it, by `***`.

    Values shorter than three characters are not masked: masking `1` or `no`
    would destroy every log line while protecting nothing.
    """

    __slots__ = ("_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Learn more secret values (for example sensitive outputs of a finished stage)."""
        found = {str(s) for s in secrets if s is not None and len(str(s)) >= _MIN_SECRET_LENGTH}
        if not found - self._secrets:
            return
        self._secrets = self._secrets | found
        variants = set().union(*(_encodings(s) for s in self._secrets))
        variants |= {line for s in self._secrets for line in s.splitlines()
                     if len(line) >= _MIN_SECRET_LENGTH}
        ordered = sorted(variants, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

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
