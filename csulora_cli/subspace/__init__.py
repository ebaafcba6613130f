"""The safety subspace of each module: estimated from two checkpoints, stored on disk, mapped to adapters.

`estimate.py` is the math (tensors in, a basis out); `displacement.py` forms V block by block from two
sources; `providers.py` hands bases to the pipeline from the cache or a subspace folder; `store.py` and
`folder.py` are their formats on disk; `targets.py` decides which weight, in which orientation.
"""
