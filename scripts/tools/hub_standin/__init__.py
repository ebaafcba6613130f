"""A local stand-in for the Hugging Face Hub that the real `huggingface_hub` client talks to: reads and
writes of model and dataset repos (`server.py`, its state in `state.py`, the write routes in `writes.py`).

For tests, and for users testing their own CI without the network: `python -m scripts.tools.hub_standin`
(see `__main__.py`). Not shipped with the package.
"""

from .server import FakeHub

__all__ = ["FakeHub"]
