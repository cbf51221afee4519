"""File hashes as A1111 shows them, with a sha256 cache in cache.json.

cache.json layout (A1111-like): {"hashes": {<absolute path>: {"mtime": float, "size": int, "sha256": str}}, ...}.
Other top-level sections are preserved, so other code may keep its own data in the same file via
`cached_data_for_file`. An entry is reused only while the file's mtime and size are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from modules.options import write_json_atomic

logger = logging.getLogger("webui")

BLOCK_SIZE = 1024 * 1024
HASHES_SECTION = "hashes"
ADDNET_SECTION = "hashes-addnet"

# One lock for every cache file: the read-modify-write of cache.json must not interleave between threads.
_cache_lock = threading.Lock()


def _read_cache(cache_path: str) -> dict[str, Any]:
    try:
        with open(cache_path, encoding="utf-8") as handle:
            content = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("hash cache %s is unreadable (%s); ignoring it, it will be rewritten", cache_path, error)
        return {}
    if not isinstance(content, dict):
        logger.warning("hash cache %s is not a JSON object; ignoring it, it will be rewritten", cache_path)
        return {}
    return content


def _file_signature(path: str) -> tuple[float, int]:
    stat = os.stat(path)
    return stat.st_mtime, stat.st_size


def _lookup(cache_path: str, section: str, key: str, path: str) -> dict[str, Any] | None:
    mtime, size = _file_signature(path)
    with _cache_lock:
        entries = _read_cache(cache_path).get(section)
    entry = entries.get(key) if isinstance(entries, dict) else None
    if isinstance(entry, dict) and entry.get("mtime") == mtime and entry.get("size") == size:
        return entry
    return None


def _store(cache_path: str, section: str, key: str, entry: dict[str, Any]) -> None:
    with _cache_lock:
        content = _read_cache(cache_path)
        entries = content.get(section)
        if not isinstance(entries, dict):
            entries = content[section] = {}
        entries[key] = entry
        write_json_atomic(cache_path, content)


def cached_data_for_file(
    cache_path: str, section: str, key: str, path: str, compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Return `compute()`'s dict for `path`, cached in `section` of cache.json until the file's mtime/size change."""
    entry = _lookup(cache_path, section, key, path)
    if entry is not None:
        return entry
    mtime, size = _file_signature(path)  # before computing: a file changed meanwhile gets re-read next time
    entry = {"mtime": mtime, "size": size, **compute()}
    _store(cache_path, section, key, entry)
    return entry


def calculate_sha256(path: str) -> str:
    """sha256 of the whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: str, cache_path: str | None) -> str | None:
    """The cached sha256 if it is still valid, else None (never hashes; for --no-hashing)."""
    if cache_path is None:
        return None
    entry = _lookup(cache_path, HASHES_SECTION, os.path.abspath(path), path)
    value = entry.get("sha256") if entry else None
    return value if isinstance(value, str) else None


def file_sha256(path: str, cache_path: str | None, title: str | None = None, use_cache: bool = True) -> str:
    """Full-file sha256 (hex). cache_path=None: no cache. use_cache=False: re-hash, then refresh the cache entry."""
    if cache_path is not None and use_cache:
        cached = cached_sha256(path, cache_path)
        if cached is not None:
            return cached

    logger.info("Calculating sha256 for %s", title or path)
    if cache_path is None:
        return calculate_sha256(path)
    mtime, size = _file_signature(path)
    value = calculate_sha256(path)
    _store(cache_path, HASHES_SECTION, os.path.abspath(path), {"mtime": mtime, "size": size, "sha256": value})
    return value


# --- A1111's names (`hashes.sha256(filename, title)`), with the cache the application configured -------------------

_default_cache_path: str | None = None


def configure(cache_path: str | None) -> None:
    """The cache file A1111's two-argument forms use (`shared.initialize` sets `<data>/cache.json`)."""
    global _default_cache_path
    _default_cache_path = cache_path


def sha256(filename: str, title: str, use_addnet_hash: bool = False) -> str:
    """A1111's `hashes.sha256(filename, title)`: the file's sha256 through the configured cache; with
    `use_addnet_hash`, the hash of a .safetensors file's tensors only (kohya's addnet hash)."""
    if use_addnet_hash:
        return addnet_hash_safetensors(filename, _default_cache_path)
    return file_sha256(filename, _default_cache_path, title=title)


def sha256_from_cache(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    """A1111's `hashes.sha256_from_cache(filename, title)`: the cached hash, None when there is none (no hashing)."""
    if use_addnet_hash:
        if _default_cache_path is None:
            return None
        entry = _lookup(_default_cache_path, ADDNET_SECTION, os.path.abspath(filename), filename)
        value = entry.get("sha256") if entry else None
        return value if isinstance(value, str) else None
    return cached_sha256(filename, _default_cache_path)


def short_hash(sha256: str) -> str:
    """The 10-character form A1111 shows, e.g. 'model.safetensors [6ce0161689]'."""
    return sha256[:10]


def addnet_hash_safetensors(path: str, cache_path: str | None = None) -> str:
    """A1111's LoRA hash: sha256 of a .safetensors file after its 8-byte length and JSON header."""

    def compute() -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            length_bytes = handle.read(8)
            file_size = os.fstat(handle.fileno()).st_size
            if len(length_bytes) < 8:
                raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
            header_length = int.from_bytes(length_bytes, "little")
            if 8 + header_length > file_size:
                raise ValueError(f"{path} is not a safetensors file (header length {header_length} exceeds the file)")
            handle.seek(8 + header_length)
            for block in iter(lambda: handle.read(BLOCK_SIZE), b""):
                digest.update(block)
        return digest.hexdigest()

    if cache_path is None:
        return compute()
    entry = cached_data_for_file(
        cache_path, ADDNET_SECTION, os.path.abspath(path), path, lambda: {"sha256": compute()}
    )
    return entry["sha256"]


def model_hash_legacy(path: str) -> str:
    """A1111's old 8-character model hash: sha256 of the 64 KiB at offset 1 MiB. 'NOFILE' when missing (as A1111)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0x100000)
            return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
    except FileNotFoundError:
        return "NOFILE"
