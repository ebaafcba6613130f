"""Tiny seeded checkpoints and adapters (`builders.py`) that the demo, the tests and the scripts all build.

Shipped with the package because `csulora demo` uses them; test infrastructure that only tests and
scripts need (the Hub stand-in) lives in `scripts/tools/` and does not ship.
"""
