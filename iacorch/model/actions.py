"""The actions of the built-in drivers, and their declarations (`BUILTIN_DRIVERS`).

A driver's action model is what a stage writes under the driver's key; the
declaration next to it says what the compiler and the engine need to know about
the tool without importing it (docs/drivers.md).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from iacorch.model.driver_spec import DefaultUndo, DriverSpec
from iacorch.model.fields import Duration, RuleError, Strict, Templated


class TerraformAction(Strict):
    dir: str
    workspace: Templated | None = None
    vars: dict[str, Any] = {}
    var_files: list[str] = []
    backend_config: dict[str, Any] = {}
    targets: list[str] = []
    parallelism: int | None = Field(default=None, ge=1)
    env: dict[str, Any] = {}
    binary: str = "terraform"


class PulumiAction(Strict):
    dir: str
    stack: Templated = "dev"
    config: dict[str, Any] = {}
    backend: str | None = None
    env: dict[str, Any] = {}
    refresh: bool = False


class AnsibleAction(Strict):
    playbook: str
    inventory: str | dict[str, Any] | list[Any] | None = None
    extra_vars: dict[str, Any] | Templated = {}
    limit: Templated | None = None
    tags: list[str] | str | None = None
    skip_tags: list[str] | str | None = None
    forks: int | None = Field(default=None, ge=1)
    become: bool = False
    check: bool = False
    env: dict[str, Any] = {}
    vault_password: Templated | None = None


def _set(key: str) -> dict[str, Any]:
    """JSON Schema: `key` is present with a value (`key: null` reads as absent)."""
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


class ShellAction(Strict):
    model_config = ConfigDict(json_schema_extra={"oneOf": [_set("run"), _set("argv")]})

    run: Templated | None = None
    argv: list[str | int | float] | None = None
    env: dict[str, Any] = {}
    cwd: str | None = None

    @field_validator("argv", mode="before")
    @classmethod
    def _plain_arguments(cls, argv: Any) -> Any:
        for item in argv if isinstance(argv, list) else ():
            if isinstance(item, bool) or item is None:
                shown = {True: "true", False: "false", None: "null"}[item]
                raise RuleError(f"an argv item reads as {shown}, not as text: YAML turned "
                                f"`{shown}` into a {'boolean' if item is not None else 'null'}",
                                f"write it in quotes: argv: [\"{shown}\"]")
        return argv

    @model_validator(mode="after")
    def _run_or_argv(self) -> ShellAction:
        if (self.run is None) == (self.argv is None):
            raise RuleError("a shell action has exactly one of `run` (a script) "
                            "or `argv` (a list)",
                            "remove one of them" if self.run is not None else
                            "add `run: make` for a script or `argv: [make, all]` for a command")
        return self


class HttpExpect(Strict):
    status: int | list[int] = 200
    body_contains: str | None = None
    json_: dict[str, Any] | None = Field(default=None, alias="json")


class HttpUntil(Strict):
    attempts: int = Field(default=1, ge=1)
    interval: Duration = 1.0


_URL_HINT = "write it as http://host[:port]/path or https://host[:port]/path"
_ENCODE_HINT = ("percent-encode it (a space is %20); a value from a template can go through "
                "`| urlencode`")


def url_problem(url: str) -> RuleError | None:
    """Why an http stage cannot request `url` (the URL itself is not quoted: it may hold a
    secret); None when it can. `user:password@` is allowed: it becomes basic auth."""
    for position, char in enumerate(url, start=1):
        if char == " ":
            return RuleError(f"the URL has a space at character {position}", _ENCODE_HINT)
        if not char.isprintable():
            return RuleError(f"the URL has the unprintable character U+{ord(char):04X} at "
                             f"character {position}", _ENCODE_HINT)
    try:
        parts = urlsplit(url)
    except ValueError:  # `[` without `]`
        return RuleError("the URL's host is not readable: an IPv6 address needs both `[` "
                         "and `]`", _URL_HINT)
    if parts.scheme.lower() not in ("http", "https"):
        found = f"`{parts.scheme}:`" if parts.scheme else "none"
        return RuleError(f"the URL's scheme must be http: or https:, found {found}", _URL_HINT)
    if not parts.hostname:
        return RuleError("the URL names no host", _URL_HINT)
    try:
        _ = parts.port  # raises ValueError unless it is a number from 0 to 65535
    except ValueError:
        return RuleError("the URL's port is not a number from 0 to 65535", _URL_HINT)
    if not (parts.path + parts.query).isascii():  # a host may be international, not a path
        return RuleError("the URL's path or query has a non-ASCII character", _ENCODE_HINT)
    return None


class HttpAction(Strict):
    url: Templated
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, Any] = {}
    body: Any = None
    expect: HttpExpect = HttpExpect()
    until: HttpUntil = HttpUntil()
    timeout: Duration = 10.0
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _requestable(cls, url: str) -> str:
        if "{{" in url or "{%" in url:
            return url  # checked once rendered, by the driver
        problem = url_problem(url)
        if problem is not None:
            raise problem
        return url


def _read_only(action: HttpAction) -> bool:
    """A GET, HEAD or OPTIONS request changes nothing, so it may run twice."""
    return action.method in ("GET", "HEAD", "OPTIONS")


BUILTIN_DRIVERS = (
    DriverSpec("terraform", TerraformAction, "iacorch.drivers.terraform:TerraformDriver",
               example={"dir": "stacks/network"},
               path_fields=("dir", "var_files"), plan_before_gate=True,
               default_undo=DefaultUndo.STACK, idempotent=True),
    DriverSpec("pulumi", PulumiAction, "iacorch.drivers.pulumi:PulumiDriver",
               example={"dir": "stacks/site"},
               path_fields=("dir",), plan_before_gate=True, default_undo=DefaultUndo.STACK,
               idempotent=True),
    DriverSpec("ansible", AnsibleAction, "iacorch.drivers.ansible:AnsibleDriver",
               example={"playbook": "playbooks/site.yml"},
               path_fields=("playbook",), plan_before_gate=True, idempotent=True),
    DriverSpec("shell", ShellAction, "iacorch.drivers.shell:ShellDriver",
               example={"run": "make"},
               path_fields=("cwd",), script_field="run", argv_field="argv"),
    DriverSpec("http", HttpAction, "iacorch.drivers.http:HttpDriver",
               example={"url": "https://example.com/health"},
               default_undo=DefaultUndo.READ_ONLY, idempotent=_read_only),
)
