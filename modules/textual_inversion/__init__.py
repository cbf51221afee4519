"""A1111's `modules.textual_inversion` package for extensions (see `textual_inversion.py`); training is not here."""
