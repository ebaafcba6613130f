"""PEFT LoRA adapter folders: reading them (`peft.py`) and writing corrected copies (`writer.py`)."""
