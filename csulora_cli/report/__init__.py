"""What a run reports: per-module records and totals (`records.py`), and the output folder's README (`card.py`)."""
