"""An LRU of parsed network files keyed by path, modification time and size.

Consecutive jobs that name the same LoRA or hypernetwork re-use the parsed file instead of reading it again; a
changed file (new mtime or size) is parsed afresh and replaces its older version.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FileCache(Generic[T]):
    def __init__(self, size: int, parse: Callable[[str, os.stat_result, str | None], T]) -> None:
        self.size = size
        self._parse = parse
        self._items: OrderedDict[tuple[str, int, int], T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, hash_cache_path: str | None) -> T:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                return cached
        parsed = self._parse(path, stat, hash_cache_path)
        with self._lock:
            for old in [k for k in self._items if k[0] == path]:  # an older version of the same file
                del self._items[old]
            self._items[key] = parsed
            while len(self._items) > max(self.size, 0):
                self._items.popitem(last=False)
        return parsed

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
