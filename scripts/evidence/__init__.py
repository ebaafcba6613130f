"""Evidence benchmarks: the settings and defaults of csulora measured on models trained here."""
