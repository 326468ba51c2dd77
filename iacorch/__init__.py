"""iacorch: YAML runbooks compiled into a dependency graph of infrastructure stages."""

__version__ = "0.1.0"
