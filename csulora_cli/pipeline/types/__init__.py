"""The plain data the commands take and return: requests checked as they are built, results, device names.

Nothing here reaches torch or does I/O (`tests/unit/test_architecture.py`), so the command line reads
these types and their defaults while `--help` answers at once.
"""
