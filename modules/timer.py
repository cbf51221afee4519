"""A1111's `modules.timer`: a stopwatch that records named durations (`startup_timer` for start-up phases;
extensions time their own loading with it)."""

from __future__ import annotations

import contextlib
import time
from typing import Any


class TimerSubcategory:
    def __init__(self, timer: Timer, category: str) -> None:
        self.timer = timer
        self.category = category
        self.start: float | None = None
        self.original_base_category = timer.base_category

    def __enter__(self) -> None:
        self.start = time.time()
        self.timer.base_category = self.original_base_category + self.category + "/"
        self.timer.subcategory_level += 1

    def __exit__(self, *exc: object) -> None:
        elapsed = time.time() - (self.start or time.time())
        self.timer.base_category = self.original_base_category
        self.timer.add_time_to_record(self.original_base_category + self.category, elapsed)
        self.timer.subcategory_level -= 1
        self.timer.record(self.category, disable_log=True)


class Timer:
    """`record(category)` adds the time since the previous record (or start) under `category`; `summary()` is
    "total: categories..." as A1111 prints at start-up."""

    def __init__(self, print_log: bool = False) -> None:
        self.start = time.time()
        self.records: dict[str, float] = {}
        self.total = 0.0
        self.base_category = ""
        self.print_log = print_log
        self.subcategory_level = 0

    def elapsed(self) -> float:
        end = time.time()
        result, self.start = end - self.start, end
        return result

    def add_time_to_record(self, category: str, amount: float) -> None:
        self.records[category] = self.records.get(category, 0.0) + amount

    def record(self, category: str, extra_time: float = 0, disable_log: bool = False) -> None:
        elapsed = self.elapsed()
        self.add_time_to_record(self.base_category + category, elapsed + extra_time)
        self.total += elapsed + extra_time
        if self.print_log and not disable_log:
            print(f"{'  ' * self.subcategory_level}{category}: done in {elapsed + extra_time:.3f}s")

    def subcategory(self, name: str) -> contextlib.AbstractContextManager:
        self.elapsed()
        return TimerSubcategory(self, name)

    def summary(self) -> str:
        result = f"{self.total:.1f}s"
        shown = [(category, t) for category, t in self.records.items() if t >= 0.1 and "/" not in category]
        if shown:
            result += " (" + ", ".join(f"{category}: {t:.1f}s" for category, t in shown) + ")"
        return result

    def dump(self) -> dict[str, Any]:
        return {"total": self.total, "records": dict(self.records)}

    def reset(self) -> None:
        self.__init__(self.print_log)


startup_timer = Timer()
startup_record: dict[str, Any] | None = None
