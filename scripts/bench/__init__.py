"""Speed and memory benchmarks; each prints its figures (docs/performance.md)."""
