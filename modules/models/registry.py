"""Find checkpoint and VAE files on disk and name them the way A1111 does."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modules import hashes

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")


@dataclass
class CheckpointInfo:
    filename: str          # absolute path
    name: str              # path relative to its models folder, "/"-separated: what A1111 shows
    sha256: str | None = None

    @property
    def model_name(self) -> str:
        """A1111's `Model:` infotext value: the relative name without extension, separators replaced."""
        return os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]

    @property
    def shorthash(self) -> str | None:
        return hashes.short_hash(self.sha256) if self.sha256 else None

    @property
    def is_pickle(self) -> bool:
        """A pickle-format file (.ckpt/.pt/.pth/.bin): loaded through the restricted unpickler, but the UI marks it
        so users see which files carry that risk."""
        return not self.filename.lower().endswith(".safetensors")

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    @property
    def short_title(self) -> str:
        """A1111's short title (the refiner's infotext value): the file stem and the short hash."""
        return f"{self.name_for_extra} [{self.shorthash}]" if self.shorthash else self.name_for_extra

    @property
    def name_for_extra(self) -> str:
        """A1111's name of the checkpoint for extra-network cards: the file stem."""
        return os.path.splitext(os.path.basename(self.filename))[0]

    @property
    def hash(self) -> str | None:
        """A1111's old 8-character model hash (of 64 KiB at 1 MiB into the file); None if it cannot be read."""
        try:
            return hashes.model_hash_legacy(self.filename)
        except OSError:
            return None

    def matches(self, query: str) -> bool:
        query = query.strip()
        return query in (self.title, self.name, self.model_name, os.path.basename(self.filename),
                         self.shorthash, self.sha256, os.path.splitext(self.name)[0])


def scan_files(folders: list[str], suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(absolute path, name relative to its folder) for model files under `folders`, recursively, sorted."""
    found: dict[str, tuple[str, str]] = {}
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
                full = str(path.resolve())
                found.setdefault(full, (full, path.relative_to(root).as_posix()))
    return sorted(found.values(), key=lambda item: item[1].lower())


class CheckpointRegistry:
    """The list of checkpoints in the checkpoint folder(s), with sha256 from the hash cache."""

    def __init__(self, folders: list[str], cache_path: str | None, hashing: bool = True,
                 extra_files: list[str] | None = None) -> None:
        self.folders = folders
        self.cache_path = cache_path
        self.hashing = hashing
        self.extra_files = extra_files or []
        self.checkpoints: list[CheckpointInfo] = []

    def refresh(self) -> list[CheckpointInfo]:
        found = scan_files(self.folders, CHECKPOINT_SUFFIXES)
        for extra in self.extra_files:
            if os.path.isfile(extra):
                full = str(Path(extra).resolve())
                if all(full != f for f, _ in found):
                    found.append((full, os.path.basename(full)))
        infos = []
        for full, name in found:
            info = CheckpointInfo(full, name)
            if self.hashing:
                info.sha256 = hashes.file_sha256(full, self.cache_path, title=f"checkpoint/{name}")
            infos.append(info)
        # a .safetensors twin (same name, other suffix) comes first, so lookups by name pick it over the pickle
        infos.sort(key=lambda c: (os.path.splitext(c.name)[0].lower(), c.is_pickle))
        self.checkpoints = infos
        return infos

    def titles(self) -> list[str]:
        return [c.title for c in self.checkpoints]

    def find(self, query: str | None) -> CheckpointInfo | None:
        if not query:
            return None
        for info in self.checkpoints:
            if info.matches(query):
                return info
        return None
