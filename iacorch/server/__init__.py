"""`iacorch serve`: the HTTP front door (FastAPI on uvicorn) to runs, gates and triggers.

Like the CLI it parses, calls one engine operation and renders; the rules stay in the
engine. FastAPI is imported only here, so the CLI starts without it.
"""
