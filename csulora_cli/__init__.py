"""csulora: rewrite LoRA adapters into the closest update inside an aligned model's safety subspace."""

__version__ = "0.1.0"
