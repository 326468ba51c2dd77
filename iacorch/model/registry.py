"""The drivers this process knows: the built-ins, then those other packages register.

A package registers a driver with an entry point in the `iacorch.drivers` group whose
value is a `DriverSpec` (`echo = "iacorch_echo:SPEC"`). The runbook model, the compiler
and the engine all read this registry. Looking through the installed packages' entry
points costs ~20 ms, a tenth of a small apply, so it happens only when something needs a
driver that is not built in: a runbook naming an unknown key (`load_plugins`), a lookup
by a name that is not built in, `iacorch schema`. Once loaded, plugins stay for the
process.
"""

from __future__ import annotations

from functools import cache

from iacorch.errors import PluginError
from iacorch.model.driver_spec import DRIVER_NAME, DriverSpec

ENTRY_POINT_GROUP = "iacorch.drivers"


def driver_specs() -> dict[str, DriverSpec]:
    """Name -> declaration: the built-in drivers in their usual order, then the plugins
    by name once `load_plugins` has run."""
    return _with_plugins() if _with_plugins.cache_info().currsize else _builtins()


def load_plugins() -> None:
    """Read the `iacorch.drivers` entry points (once per process)."""
    _with_plugins()


@cache
def _builtins() -> dict[str, DriverSpec]:
    from iacorch.model.actions import BUILTIN_DRIVERS

    return {spec.name: spec for spec in BUILTIN_DRIVERS}


@cache
def _with_plugins() -> dict[str, DriverSpec]:
    from importlib.metadata import entry_points

    specs = dict(_builtins())
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        where = f"entry point `{entry.name} = {entry.value}` of the {ENTRY_POINT_GROUP} group"
        try:
            spec = entry.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party import
            raise PluginError(f"the driver in {where} cannot be loaded: {exc}",
                              hint="reinstall or uninstall the package that declares it") \
                from exc
        problem = _problem(entry.name, spec, specs)
        if problem:
            raise PluginError(f"{where}: {problem}",
                              hint="fix the package's DriverSpec, or uninstall it")
        specs[spec.name] = spec
    return specs


def _problem(entry_name: str, spec: object, known: dict[str, DriverSpec]) -> str | None:
    if not isinstance(spec, DriverSpec):
        return f"it gives {type(spec).__name__}, not an iacorch DriverSpec"
    if spec.name != entry_name:
        return f"it names the driver `{spec.name}`, not `{entry_name}`"
    if not DRIVER_NAME.match(spec.name):
        return f"`{spec.name}` is not a driver name (lower-case letters, digits, `_`)"
    if spec.name in known:
        return f"a driver named `{spec.name}` is already registered"
    return None


def driver_names() -> list[str]:
    """The stage keys of every registered driver."""
    return list(driver_specs())


def driver_spec(name: str) -> DriverSpec:
    """The declaration of one driver; a name nothing registered is a PluginError."""
    specs = _builtins()
    if name not in specs:
        specs = _with_plugins()
    if name not in specs:
        raise PluginError(f"no driver named `{name}` is installed",
                          hint=f"installed drivers: {', '.join(specs)}; install the package "
                               f"that provides `{name}`")
    return specs[name]
