"""Where model tensors come from: local safetensors folders and Hugging Face Hub repos.

`protocol.TensorSource` is what the rest of csulora reads through; `open_source.open_source` picks the
implementation from what the user typed. Nothing here knows about subspaces, adapters or the math.
"""
