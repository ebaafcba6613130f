"""The plain data the commands take and return: requests checked as they are built, results, device names.

Nothing here reaches torch or does I/O (`tests/unit/test_architecture.py`), so the command line builds
its requests from these types (and reads their defaults) while `--help` answers at once; `csulora_cli.api`
re-exports them beside the functions that take them.
"""

from .devices import DEVICES
from .probe import ProbeRequest
from .requests import CorrectRequest, EstimateRequest, InspectRequest, PushRequest, PushSpec, SubspaceSpec

__all__ = [
    "DEVICES",
    "CorrectRequest",
    "EstimateRequest",
    "InspectRequest",
    "ProbeRequest",
    "PushRequest",
    "PushSpec",
    "SubspaceSpec",
]
