"""Evidence benchmarks: does a correction restore refusals, what does it cost, what does a gate catch."""
