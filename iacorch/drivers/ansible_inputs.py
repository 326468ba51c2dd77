"""What a rendered ansible action names besides its playbook: the inventory (a path, or
hosts from upstream outputs put in Ansible's YAML shape) and the extra vars. Pure."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
LOCAL_HOST_VARS = {"ansible_connection": "local",
                   "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
_NAME_KEYS = ("name", "hostname", "host", "inventory_hostname")
_ADDRESS_KEYS = ("ansible_host", "address", "ip", "public_ip", "private_ip")
_PATH_SUFFIXES = (".yml", ".yaml", ".ini", ".json", ".cfg", ".py", ".sh")


class AnsibleActionError(ValueError):
    """A rendered ansible action that cannot be run (bad inventory, missing playbook...)."""


def normalise_inventory(value: Any, resolve: Callable[[str], Path]) -> Path | dict[str, Any]:
    """A path, or an inline inventory in Ansible's YAML shape, from what the runbook gave.

    Accepts an inventory path, `"a,b"` host lists, a list of host names or host
    mappings (Terraform-like outputs), `{hosts: [...]}` and `{group: [...] | {...}}`.
    No inventory means localhost. Local hosts given by name use the local connection.
    """
    if value is None or value == "" or value == []:
        value = ["localhost"]
    if isinstance(value, str):
        path = resolve(value)
        if "," not in value and (os.sep in value or value.endswith(_PATH_SUFFIXES)
                                 or path.exists()):
            if not path.exists():
                raise AnsibleActionError(f"inventory {value} not found (looked at {path})")
            return path
        value = [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, list):
        return {"all": {"hosts": _hosts_from_list(value)}}
    if isinstance(value, Mapping):
        if set(value) and set(value) <= {"hosts", "vars", "children"}:
            value = {"all": value}
        return {str(name): _group(group, str(name)) for name, group in value.items()}
    raise AnsibleActionError(f"inventory must be a path, a list of hosts or a mapping of "
                             f"groups, not {type(value).__name__}")


def _group(group: Any, name: str) -> dict[str, Any]:
    if group is None:
        return {}
    if isinstance(group, list):
        return {"hosts": _hosts_from_list(group)}
    if not isinstance(group, Mapping):
        raise AnsibleActionError(f"inventory group {name!r} must be a list of hosts or a "
                                 f"mapping with hosts/vars/children")
    shaped = dict(group)
    hosts = shaped.get("hosts")
    if isinstance(hosts, list):
        shaped["hosts"] = _hosts_from_list(hosts)
    elif isinstance(hosts, Mapping):
        shaped["hosts"] = {str(h): _local_python(dict(v or {})) for h, v in hosts.items()}
    if isinstance(shaped.get("vars"), Mapping):
        shaped["vars"] = _local_python(dict(shaped["vars"]))
    if isinstance(shaped.get("children"), Mapping):
        shaped["children"] = {str(c): _group(g, str(c)) for c, g in shaped["children"].items()}
    return shaped


def _hosts_from_list(items: list[Any]) -> dict[str, dict[str, Any]]:
    hosts: dict[str, dict[str, Any]] = {}
    for item in items:
        name, host_vars = _host_entry(item)
        address = str(host_vars.get("ansible_host", name))
        if (name in LOCAL_HOSTS or address in LOCAL_HOSTS) \
                and "ansible_connection" not in host_vars:
            host_vars = {**LOCAL_HOST_VARS, **host_vars}
        hosts[name] = _local_python(host_vars)
    return hosts


def _local_python(host_vars: dict[str, Any]) -> dict[str, Any]:
    """A host on the local connection runs modules with ansible-playbook's own Python.

    Interpreter discovery would pick whatever `python3` PATH has first (a pyenv shim
    that fails, a Python without the modules' needs), whatever the host is named.
    """
    if host_vars.get("ansible_connection") == "local":
        host_vars.setdefault("ansible_python_interpreter",
                             LOCAL_HOST_VARS["ansible_python_interpreter"])
    return host_vars


def _host_entry(item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str | int | float) and not isinstance(item, bool):
        return str(item), {}
    if not isinstance(item, Mapping):
        raise AnsibleActionError(f"an inventory host must be a name or a mapping, not {item!r}")
    host_vars = dict(item)
    name = next((str(host_vars.pop(k)) for k in _NAME_KEYS if host_vars.get(k)), None)
    address = next((str(host_vars.pop(k)) for k in _ADDRESS_KEYS if host_vars.get(k)), None)
    if name is None and address is None:
        raise AnsibleActionError(f"inventory host {item!r} has no name and no address "
                                 f"(one of {', '.join(_NAME_KEYS + _ADDRESS_KEYS)})")
    if address is not None and address != (name or address):
        host_vars["ansible_host"] = address
    return name or str(address), host_vars


def extra_vars(value: dict[str, Any] | str, resolve: Callable[[str], Path]) -> dict | Path:
    """Extra vars as a mapping to write to a private file, or a user's `@file` path."""
    if isinstance(value, Mapping):
        return dict(value)
    text = value.strip()
    if text.startswith("@"):
        return resolve(text[1:])
    if not text:
        return {}
    import yaml

    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AnsibleActionError(f"extra_vars is neither a mapping nor @file: {exc}") from None
    if not isinstance(parsed, dict):
        raise AnsibleActionError("extra_vars must be a mapping, YAML/JSON text of one, or @file")
    return parsed
