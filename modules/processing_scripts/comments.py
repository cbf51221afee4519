"""A1111's `processing_scripts.comments.strip_comments`: `#` starts a comment that runs to the end of its line."""

from __future__ import annotations

import re

_WHOLE_LINE = re.compile(r"(^|\n)[ \t]*#[^\n]*(?=\n|$)")
_REST_OF_LINE = re.compile(r"#[^\n]*")


def strip_comments(text: str) -> str:
    """Drop comment-only lines entirely, then the `#…` rest of other lines (A1111 1.8's prompt comments)."""
    text = _WHOLE_LINE.sub("", text)
    return _REST_OF_LINE.sub("", text).lstrip("\n")
