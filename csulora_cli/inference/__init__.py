"""Running a causal language model: load it once, feed it prompts, read log-probabilities, generations and
activations, swap LoRA adapters on it.

transformers and peft (the `probe` extra) are imported by the modules that need them (`extra.py` says
what to install when they are missing); `params.py` is plain data the command line can read without them.
Nothing here knows what a refusal is (`probe/`).
"""
