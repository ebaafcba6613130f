"""The real-model benchmark: SmolLM2-135M-Instruct aligned here, attacked with LoRA, corrected by csulora
(`python -m scripts.evidence.real`; docs/results/real_model.md has the protocol and the figures)."""
