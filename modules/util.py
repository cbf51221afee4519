"""A1111's `modules.util`: small file-listing and text helpers that extensions call (also as `shared.listfiles`,
`shared.walk_files`, `shared.natural_sort_key`, `shared.html`). An adapter: nothing in the core uses it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping

from modules.paths_internal import cwd, script_path

_DIGITS = re.compile(r"([0-9]+)")


def natural_sort_key(s: str, regex: re.Pattern = _DIGITS) -> list:
    """Sort key that orders "img2" before "img10" (numbers compare as numbers, text case-insensitively)."""
    return [int(part) if part.isdigit() else part.lower() for part in regex.split(s)]


def listfiles(dirname: str) -> list[str]:
    """The files (not folders, not hidden) directly in `dirname`, as full paths in natural order."""
    names = sorted((name for name in os.listdir(dirname) if not name.startswith(".")), key=natural_sort_key)
    return [path for path in (os.path.join(dirname, name) for name in names) if os.path.isfile(path)]


def html_path(filename: str) -> str:
    return os.path.join(script_path, "html", filename)


def html(filename: str) -> str:
    """The text of `html/<filename>` of the WebUI, or "" when there is no such file."""
    path = html_path(filename)
    try:
        with open(path, encoding="utf8") as file:
            return file.read()
    except OSError:
        return ""


def _list_hidden_files() -> bool:
    shared = sys.modules.get("modules.shared")
    opts = getattr(shared, "opts", None)
    return bool(getattr(opts, "list_hidden_files", True)) if opts is not None else True


def walk_files(path: str, allowed_extensions: Iterable[str] | None = None) -> Iterator[str]:
    """Every file under `path` (following links), folders and files in natural order; `allowed_extensions` (with
    the dot, e.g. ".png") filters by lower-cased extension. Files in hidden folders are left out when the
    `list_hidden_files` setting is off, as in A1111."""
    if not os.path.exists(path):
        return
    allowed = {ext.lower() for ext in allowed_extensions} if allowed_extensions is not None else None
    show_hidden = _list_hidden_files()
    for root, _dirs, files in sorted(os.walk(path, followlinks=True), key=lambda item: natural_sort_key(item[0])):
        if not show_hidden and ("/." in root or "\\." in root):
            continue
        for filename in sorted(files, key=natural_sort_key):
            if allowed is not None and os.path.splitext(filename)[1].lower() not in allowed:
                continue
            yield os.path.join(root, filename)


def ldm_print(*args: object, **kwargs: object) -> None:
    """A1111 prints the ldm library's messages through this, unless `hide_ldm_prints` is on."""
    shared = sys.modules.get("modules.shared")
    if getattr(getattr(shared, "opts", None), "hide_ldm_prints", False):
        return
    print(*args, **kwargs)


def truncate_path(target_path: str, base_path: str = cwd) -> str:
    """`target_path` relative to `base_path` when it lies inside it, else unchanged."""
    absolute_target, absolute_base = os.path.abspath(target_path), os.path.abspath(base_path)
    try:
        if os.path.commonpath([absolute_target, absolute_base]) == absolute_base:
            return os.path.relpath(absolute_target, absolute_base)
    except ValueError:  # different drives
        pass
    return absolute_target


class MassFileListerCachedDir:
    """One folder's file names, read once (A1111 caches listings of big model folders)."""

    def __init__(self, dirname: str) -> None:
        self.files: dict[str, tuple[str, float, float]] = {}
        self.files_cased: dict[str, tuple[str, float, float]] = {}
        with os.scandir(dirname) as entries:
            for entry in entries:
                if entry.is_file():
                    stat = entry.stat()
                    record = (entry.name, stat.st_mtime, stat.st_ctime)
                    self.files[entry.name.lower()] = record
                    self.files_cased[entry.name] = record


class MassFileLister:
    """A1111's cached `exists` / `mtime` lookups over folders of many files."""

    def __init__(self) -> None:
        self.cached_dirs: dict[str, MassFileListerCachedDir | None] = {}

    def find(self, path: str) -> tuple[str, float, float] | None:
        dirname, filename = os.path.split(path)
        if dirname not in self.cached_dirs:
            self.cached_dirs[dirname] = MassFileListerCachedDir(dirname) if os.path.isdir(dirname) else None
        cached = self.cached_dirs[dirname]
        if cached is None:
            return None
        return cached.files_cased.get(filename) or cached.files.get(filename.lower())

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def mctime(self, path: str) -> tuple[float, float]:
        found = self.find(path)
        return (found[1], found[2]) if found else (0, 0)

    def reset(self) -> None:
        self.cached_dirs.clear()


def topological_sort(dependencies: Mapping[str, Iterable[str]]) -> list[str]:
    """Names ordered so that each comes after the names it depends on (unknown dependencies are ignored;
    otherwise the given order is kept)."""
    visited: dict[str, bool] = {}
    result: list[str] = []

    def visit(name: str) -> None:
        if name not in dependencies or visited.get(name):
            return
        visited[name] = True
        for dependency in dependencies[name]:
            visit(dependency)
        result.append(name)

    for name in dependencies:
        visit(name)
    return result


def open_folder(path: str) -> None:
    """Show a folder in the desktop's file manager (A1111's "open folder" buttons); a missing folder is refused."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Folder does not exist: {path}")
    if sys.platform == "win32":
        os.startfile(path)  # noqa: S606 (the user's own folder, from a button)
    elif sys.platform == "darwin":
        subprocess.Popen(["open", path])  # noqa: S603,S607
    else:
        subprocess.Popen(["xdg-open", path])  # noqa: S603,S607
