"""The safety subspace of each module: estimated from two checkpoints, stored on disk, mapped to adapters.

`estimate.py` is the math (tensors in, a basis out); `displacement.py` forms V block by block from two
sources; `providers.py` (a subspace folder) and `estimating.py` (a base/aligned pair, through the cache) hand
bases to the pipeline; `store.py` and `folder.py` are their formats on disk, and `remote.py` fetches a folder
published on the Hub; `targets.py` decides which weight, in which orientation.
"""
