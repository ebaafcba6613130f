"""A causal LM and its tokenizer from a local folder, on the device and in the dtype asked for.

Hub models reach this module as their local snapshot folder (the caller resolves them); a folder
transformers cannot read becomes one `ModelLoadError` line naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CsuloraError
from .extra import quietly, transformers
from .params import check_dtype

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(CsuloraError):
    """A model folder transformers cannot load as a causal language model (or its tokenizer)."""


def resolve_device(device: str) -> torch.device:
    """`auto`: the GPU when there is one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CsuloraError("no CUDA device is available", parameter="device", hint="use cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    check_dtype(dtype)
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def load_causal_lm(folder: Path, device: str | torch.device = "cpu", dtype: str = "auto"):
    """The model in eval mode on `device`; its parameters never require gradients here."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CsuloraError("model folder does not exist", where=str(folder))
    target = device if isinstance(device, torch.device) else resolve_device(device)
    try:
        with quietly():
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype, target))
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ModelLoadError(f"transformers cannot load this model: {_first_line(error)}", where=str(folder)) from None
    model.to(target)
    model.eval()
    model.requires_grad_(False)
    return model


def load_tokenizer(folder: Path):
    """The folder's tokenizer; a model without a padding token pads with its end-of-sequence token (padded
    positions are masked, so which token fills them changes nothing)."""
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(Path(folder))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"transformers cannot load its tokenizer: {_first_line(error)}", where=str(folder)
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
