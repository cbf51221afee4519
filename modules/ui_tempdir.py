"""A1111's `modules.ui_tempdir`: where Gradio keeps uploaded and generated files, for extensions that tell such
temporary files from the user's own (`is_gradio_temp_path`). An adapter: nothing in the core uses it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def gradio_temp_dir() -> str:
    """GRADIO_TEMP_DIR, else Gradio's default folder in the system's temporary directory."""
    return os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio")


def is_gradio_temp_path(path: str | os.PathLike) -> bool:
    """Whether `path` lies in Gradio's temporary folder."""
    temp = Path(gradio_temp_dir()).resolve()
    try:
        return Path(path).resolve().is_relative_to(temp)
    except (OSError, ValueError):
        return False


def register_tmp_file(gradio: object, filename: str) -> None:
    """A1111 lets Gradio serve an output file this way; this UI's galleries serve their own files."""


def check_tmp_file(gradio: object, filename: str) -> bool:
    return is_gradio_temp_path(filename)
