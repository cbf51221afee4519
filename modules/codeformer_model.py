"""A1111's `modules.codeformer_model`. CodeFormer face restoration is not part of this program (no model ships and
nothing is downloaded), so `codeformer` stays None, as in A1111 before its model is set up; `setup_model` says why."""

from __future__ import annotations

from typing import Any

codeformer: Any = None
model_url = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"


def setup_model(dirname: str) -> None:
    raise RuntimeError("CodeFormer face restoration is not available in this program (see docs/extensions.md)")
