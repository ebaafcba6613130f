"""A failure of huggingface_hub's Xet transfer is named as one, with the variable that turns Xet off;
before, it read "download failed" and sent the reader looking at the network."""

from __future__ import annotations

import pytest

from csulora_cli.checkpoints.hub.errors import hub_error_of, push_errors


def _xet_get(error: Exception):  # named as huggingface_hub's Xet download is: its frame is the evidence
    raise error


def raised_in_xet(error: Exception) -> Exception:
    try:
        _xet_get(error)
    except Exception as caught:  # noqa: BLE001 - the point is to keep its traceback
        return caught
    raise AssertionError("unreachable")


@pytest.mark.parametrize("error", [OSError(5, "I/O error"), RuntimeError("Data processing error: CAS service error")])
def test_a_xet_download_failure_names_xet_and_the_variable(error):
    line = hub_error_of(raised_in_xet(error), "org/model@main").one_line()
    assert line.startswith("org/model@main: the Xet transfer failed")
    assert "HF_HUB_DISABLE_XET=1" in line and "download failed" not in line


def test_a_xet_push_failure_names_xet_too():
    with pytest.raises(Exception) as raised, push_errors("org/safe@main", stage="upload", token_given=True):
        raise RuntimeError("upload failed") from raised_in_xet(RuntimeError("xet upload: connection reset"))
    assert "Xet transfer failed" in str(raised.value) and "HF_HUB_DISABLE_XET=1" in str(raised.value)


def test_other_failures_are_not_called_xet():
    line = hub_error_of(OSError(5, "I/O error"), "org/model@main").one_line()
    assert line == "org/model@main: download failed: I/O error"
