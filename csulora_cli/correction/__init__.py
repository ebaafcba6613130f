"""The numerical core of a correction: decompose an update, measure a correction, and the methods.

Pure math, no I/O: `decompose.py` (an update's directions), `measures.py` (the report's figures),
`least_squares.py` (the closest B for a target update), `methods/` (one file per method, and the
registry the CLI offers), `params.py` (the knobs).
"""
