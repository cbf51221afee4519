"""The png_info tab (being built)."""

from __future__ import annotations


def create_tab() -> None:
    """Adds nothing yet."""
