"""A1111's `modules.shared_options`: `options_templates` (every setting's OptionInfo by key: the same dict as
`shared.opts.data_labels`, so adding to it adds settings), `options_section`, `restricted_opts`, `categories`."""

from __future__ import annotations

from typing import Any

from modules.options import OptionInfo, options_section  # noqa: F401 (A1111's names here)

restricted_opts: set[str] = set()


class OptionsCategory:
    def __init__(self, id: str, label: str) -> None:  # noqa: A002 (A1111's keyword)
        self.id = id
        self.label = label


categories: dict[str, OptionsCategory] = {}


def register_category(category_id: str, label: str) -> str:
    """A settings category (A1111 groups sections under them in the Settings tab)."""
    categories.setdefault(category_id, OptionsCategory(category_id, label))
    return category_id


def __getattr__(name: str) -> Any:
    if name == "options_templates":
        from modules import shared

        return shared.opts.data_labels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
