"""The masker: every form iacorch's templates and shell quoting make of a secret is masked,
longest first, in one pattern that stays fast to build and to run."""

from __future__ import annotations

import base64
import json
import shlex
from urllib.parse import quote, quote_plus

import pytest

from iacorch.model.masking import MASK, Masker
from iacorch.runbook.templating import Templates

# A space, `&`, `/` and `"`: characters that URL, HTML, JSON and shell quoting each change,
# and `/`, which the `urlencode` filter keeps while quote(safe="") does not.
SECRET = 'CANARY 9f&83/ab"x'
QUOTED = "it's-é\\ß"   # a quote for shlex, non-ASCII for JSON, ß for upper()

STRING_FILTERS = ("urlencode", "upper", "lower", "capitalize", "title", "e", "escape",
                  "forceescape", "tojson", "pprint", "trim", "striptags", "reverse", "string")


@pytest.mark.parametrize("secret", [SECRET, QUOTED])
@pytest.mark.parametrize("name", STRING_FILTERS)
def test_every_string_filter_of_the_sandbox_is_masked(name, secret):
    rendered = Templates().render(f"token={{{{ secrets.tok | {name} }}}};",
                                  {"secrets": {"tok": secret}})
    masked = Masker([secret]).mask(rendered)
    assert masked in (f"token={MASK};", f'token="{MASK}";'), rendered   # tojson, pprint quote


@pytest.mark.parametrize("secret", [SECRET, QUOTED])
@pytest.mark.parametrize("case", ["upper", "lower", "capitalize", "title"])
@pytest.mark.parametrize("encode", ["urlencode", "e", "tojson"])
def test_a_case_filter_chained_with_an_encoding_is_masked(case, encode, secret):
    for chain in (f"{case} | {encode}", f"{encode} | {case}"):
        rendered = Templates().render(f"token={{{{ secrets.tok | {chain} }}}};",
                                      {"secrets": {"tok": secret}})
        assert Masker([secret]).mask(rendered) in (f"token={MASK};", f'token="{MASK}";'), (
            chain, rendered)


def test_the_filters_checked_are_those_the_sandbox_has():
    """A string filter added to the sandbox needs its encoding in the masker (and here)."""
    known = set(Templates().known("filter"))
    assert set(STRING_FILTERS) <= known
    assert "b64encode" not in known and "quote" not in known


@pytest.mark.parametrize("secret", [SECRET, QUOTED])
def test_shell_quoted_by_shell_run_is_masked(secret):
    script = Templates().render("echo {{ vars.v }}", {"vars": {"v": secret}}, shell=True)
    assert script == f"echo {shlex.quote(secret)}"
    assert Masker([secret]).mask(script) == f"echo {MASK}"


@pytest.mark.parametrize("secret", [SECRET, QUOTED])
@pytest.mark.parametrize("encode", [
    lambda s: quote(s, safe=""), quote, quote_plus,
    lambda s: s.encode().hex(),
    lambda s: json.dumps(s)[1:-1], lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    lambda s: json.dumps(s)[1:-1].replace("&", "\\u0026"),       # Go's HTML-safe JSON
    lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
], ids=["quote", "quote-keep-slash", "quote_plus", "hex", "json", "json-utf8", "json-go",
        "base64", "base64url"])
def test_encodings_tools_print_are_masked(encode, secret):
    text = f"[{encode(secret)}]"
    assert Masker([secret]).mask(text) == f"[{MASK}]"


@pytest.mark.parametrize("prefix", [b"", b"t=", b"tk=", b"tok="])
def test_base64_of_a_longer_text_is_masked_at_every_alignment(prefix):
    secret = "s3cr3t-value-that-is-long"
    encoded = base64.b64encode(prefix + secret.encode() + b"&more").decode()
    masked = Masker([secret]).mask(encoded)
    assert MASK in masked
    assert len(masked) < len(encoded) - 20   # only the characters next to it remain


def test_the_longest_form_wins_and_other_text_is_kept():
    masker = Masker(["abcdef", "abc"])
    assert masker.mask("x abcdefg ABCDEF abc ab!") == f"x {MASK}g {MASK} {MASK} ab!"
    line = "2024-01-01 aws_instance.web: Still creating... [10s elapsed]"
    assert masker.mask(line) == line


def test_secrets_that_nest_deeply_as_prefixes_still_make_one_pattern():
    masker = Masker(["x" * n for n in range(3, 400)])
    assert masker.mask("<" + "x" * 399 + ">") == f"<{MASK}>"
    assert masker.mask("<" + "X" * 5 + ">") == f"<{MASK}>"


def test_short_values_and_added_values():
    masker = Masker(["no", "", None])  # type: ignore[list-item]
    assert masker.mask("no secrets here") == "no secrets here"
    masker.add(["tok3n", "tok3n"])
    assert masker.mask("a TOK3N b") == f"a {MASK} b"
    assert masker.secrets == frozenset({"tok3n"})
