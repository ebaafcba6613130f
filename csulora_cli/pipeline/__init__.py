"""Where sources, bases, the math and adapter files meet; prints nothing. Three kinds of module, each in
a folder of its own:

- `commands/`: one function per command (`estimate_subspace`, `correct`, `inspect`, `verify_outputs`,
  `push_output`), each from a request to a result; `api.py` re-exports them.
- `types/`: the plain data that flows between the command line and the commands (requests, results, the
  device names), importing no torch so that `--help` can show their defaults.
- `plumbing/`: what the commands share (the run's one Hub client, where adapters and bases come from, the
  cache's layout, where outputs go, the base/aligned order, provenance, one module's correction).

Progress and warnings go through an `Events` object the caller supplies.
"""
