"""Generators (the CLI reference, the reliability table), the output fingerprints and the Hub stand-in."""
