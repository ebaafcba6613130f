"""What the demo, the tests and the scripts build their fixtures with (`builders.py`), and a local
stand-in for the Hugging Face Hub that the real `huggingface_hub` client talks to (`hub_server.py`).

Shipped with the package so that nothing outside `tests/` imports from `tests/`; nothing in the
package's own commands uses the Hub stand-in.
"""
