"""Hugging Face Hub repos as tensor sources: refs, snapshots, transfers, error mapping, the source itself."""
