"""Where model tensors come from: local safetensors folders and Hugging Face Hub repos.

`protocol.TensorSource` is what the rest of csulora reads through; `resolve.resolve_model` picks the
implementation from what the user typed; `description.SourceDescription` is how a source says where it is.
`hub/` also pushes finished folders. Nothing here knows about subspaces, adapters or the math.
"""
