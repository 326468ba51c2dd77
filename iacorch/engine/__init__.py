"""The engine: runs a compiled Plan through drivers, durably and in parallel."""
