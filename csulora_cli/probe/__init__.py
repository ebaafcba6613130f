"""The behavioural probe's own parts: refusal openings, the refusal margin, its statistics over prompts, the
keyword judge, and where prompts come from (docs/method.md, "The behavioural probe").

No model is run here: a model is whatever offers `token_logprobs` (the `inference/` room's `LoadedModel`),
so the margin math is tested on numbers written by hand.
"""
