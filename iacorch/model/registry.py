"""The drivers this process knows: the built-ins, then those other packages register.

A package registers a driver with an entry point in the `iacorch.drivers` group whose
value is a `DriverSpec` (`echo = "iacorch_echo:SPEC"`). The registry is read once
per process; the runbook model, the compiler and the engine all read it.
"""

from __future__ import annotations

from functools import cache

from iacorch.errors import PluginError
from iacorch.model.driver_spec import DRIVER_NAME, DriverSpec

ENTRY_POINT_GROUP = "iacorch.drivers"


@cache
def driver_specs() -> dict[str, DriverSpec]:
    """Name -> declaration: the built-in drivers in their usual order, then plugins by name."""
    from importlib.metadata import entry_points

    from iacorch.model.actions import BUILTIN_DRIVERS

    specs = {spec.name: spec for spec in BUILTIN_DRIVERS}
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
    specs = driver_specs()
    if name not in specs:
        raise PluginError(f"no driver named `{name}` is installed",
                          hint=f"installed drivers: {', '.join(specs)}; install the package "
                               f"that provides `{name}`")
    return specs[name]
