"""A1111's `modules.shared_options`: `options_templates` (every setting's OptionInfo by key: the same dict as
`shared.opts.data_labels`, so adding to it adds settings), `options_section`, `categories`, `restricted_opts`."""

from __future__ import annotations

from typing import Any

from modules.options import OptionInfo, OptionsCategory, categories, options_section  # noqa: F401 (A1111's names)

restricted_opts: set[str] = set()


def __getattr__(name: str) -> Any:
    if name == "options_templates":
        from modules import shared

        return shared.opts.data_labels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
