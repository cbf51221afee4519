"""A1111's `shared.total_tqdm`: a console progress bar over a whole job (all images, all steps) that extensions
which run their own loops update (`updateTotal`, `update`, `clear`). Off when the `multiple_tqdm` setting is."""

from __future__ import annotations

import sys
from typing import Any

import tqdm


class TotalTQDM:
    def __init__(self) -> None:
        self._tqdm: tqdm.tqdm | None = None
        self._done = 0  # counted here too: a bar disabled by TQDM_DISABLE counts nothing

    @staticmethod
    def _shared() -> Any:
        return sys.modules.get("modules.shared")

    def _enabled(self) -> bool:
        return bool(getattr(getattr(self._shared(), "opts", None), "multiple_tqdm", True))

    def reset(self) -> None:
        state = getattr(self._shared(), "state", None)
        total = int(getattr(state, "job_count", 0) or 0) * int(getattr(state, "sampling_steps", 0) or 0)
        self._tqdm = tqdm.tqdm(desc="Total progress", total=total, position=1, file=sys.stderr)
        self._done = 0

    def update(self) -> None:
        if not self._enabled():
            return
        if self._tqdm is None:
            self.reset()
        self._tqdm.update()
        self._done += 1

    def updateTotal(self, new_total: int) -> None:  # noqa: N802 (A1111's name)
        if not self._enabled():
            return
        if self._tqdm is None:
            self.reset()
        self._tqdm.total = new_total

    def clear(self) -> None:
        if self._tqdm is not None:
            self._tqdm.refresh()
            self._tqdm.close()
            self._tqdm = None
        self._done = 0

    @property
    def count(self) -> int:
        """Steps counted since the bar was (re)started (0 without a bar)."""
        return self._done
