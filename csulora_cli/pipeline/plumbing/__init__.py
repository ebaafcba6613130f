"""What the commands share: adapter and basis sources, the cache's layout, output folders, the order and
overlap checks, provenance, and the correction of one module."""
