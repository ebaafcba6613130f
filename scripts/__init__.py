"""Everything beside the package that is run from a clone, as `python -m scripts.<kind>.<name>` from the
repository root: `bench/` (speed and memory), `evidence/` (safety and detection benchmarks), `tools/`
(generators, the fingerprint check, the Hub stand-in) and `ci/` (shell harnesses). See docs/development.md."""
