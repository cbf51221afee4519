"""A1111's `modules.cache`: named sections of cache.json that extensions keep data in (`cache(subsection)`, a dict
written by `dump_cache()`), and `cached_data_for_file`, which recomputes a file's data only when the file's mtime
is newer than the cached one. The same cache.json as the sha256 cache (`modules.hashes`, whose section this never
touches); writes are atomic and serialised with the hash cache's. An adapter: nothing in the core uses it."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from modules import hashes, paths_internal
from modules.options import write_json_atomic

caches: dict[str, dict[str, Any]] = {}
_loaded_from: str | None = None
_lock = threading.Lock()


def cache_filename() -> str:
    """SD_WEBUI_CACHE_FILE, else the application's cache.json, else DATA/cache.json."""
    shared = sys.modules.get("modules.shared")
    return os.environ.get("SD_WEBUI_CACHE_FILE") or getattr(shared, "cache_path", "") or \
        os.path.join(paths_internal.data_path, "cache.json")


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def cache(subsection: str) -> dict[str, Any]:
    """The dict kept under `subsection` of cache.json (read once; change it, then call `dump_cache`)."""
    global _loaded_from
    path = cache_filename()
    with _lock:
        if _loaded_from != path:  # another data dir (a restart with other flags, or a test): start over
            caches.clear()
            _loaded_from = path
        if subsection not in caches:
            section = _read_file(path).get(subsection)
            caches[subsection] = section if isinstance(section, dict) else {}
        return caches[subsection]


def dump_cache() -> None:
    """Write every section used here to cache.json, keeping the other sections (the sha256 cache) as they are."""
    path = cache_filename()
    with _lock, hashes._cache_lock:  # the hash cache rewrites the same file
        content = _read_file(path)
        content.update({name: section for name, section in caches.items() if name != hashes.HASHES_SECTION})
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_json_atomic(path, content)


def cached_data_for_file(subsection: str, title: str, filename: str, func: Callable[[], Any]) -> Any:
    """`func()`'s value for `filename`, cached under `title` in `subsection` until the file's mtime is newer than
    when it was computed; a None value is returned and not cached."""
    entries = cache(subsection)
    mtime = os.path.getmtime(filename)
    entry = entries.get(title)
    if isinstance(entry, dict) and mtime <= entry.get("mtime", 0) and "value" in entry:
        return entry["value"]
    value = func()
    if value is None:
        return None
    entries[title] = {"mtime": mtime, "value": value}
    dump_cache()
    return value
