"""The LoRA and hypernetwork files on disk, found by name or alias as A1111's prompt tags name them.

A1111 lists `models/Lora` recursively (.safetensors/.pt/.ckpt) and `models/hypernetworks` (.pt). An entry's name is
the file stem; a LoRA's alias is its training output name (metadata `ss_output_name`), and a prompt may use either
(`<lora:name:1>`). A tag whose name is not found resolves to None: the caller warns and drops the tag.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modules.models.registry import scan_files
from modules.models.safe_load import CheckpointLoadError
from modules.networks.hypernetwork import HYPERNETWORK_SUFFIXES
from modules.networks.lora import LORA_SUFFIXES, read_metadata, sd_version

log = logging.getLogger("webui")


@dataclass
class NetworkEntry:
    name: str                      # file stem, what `<lora:name>` uses
    alias: str                     # metadata ss_output_name, else the name
    path: str                      # absolute path
    relative: str                  # path under its folder, "/"-separated (for the UI's folder view)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def sd_version(self) -> str:
        return sd_version(self.metadata)


class NetworkRegistry:
    """Files of one kind of network under some folders; `refresh()` rescans, `find()` rescans once on a miss."""

    def __init__(self, folders: str | os.PathLike | Sequence[str | os.PathLike], suffixes: tuple[str, ...],
                 read_metadata: bool = True, kind: str = "network") -> None:
        single = isinstance(folders, (str, os.PathLike))
        self.folders = [str(folders)] if single else [str(f) for f in folders]
        self.suffixes = suffixes
        self.read_metadata = read_metadata
        self.kind = kind
        self.entries: list[NetworkEntry] = []
        self._by_name: dict[str, NetworkEntry] = {}
        self._scanned = False

    def refresh(self) -> list[NetworkEntry]:
        entries = []
        for full, relative in scan_files(self.folders, self.suffixes):
            name = Path(full).stem
            if name == "None":  # A1111 refuses a file called None: it would shadow "no network"
                continue
            metadata: dict[str, str] = {}
            if self.read_metadata:
                try:
                    metadata = read_metadata(full)
                except (CheckpointLoadError, OSError, ValueError) as e:
                    log.warning("%s %s: cannot read metadata (%s)", self.kind, relative, e)
            alias = metadata.get("ss_output_name") or name
            entries.append(NetworkEntry(name, alias, full, relative, metadata))
        # Later entries win, as in A1111's alias dict; a name always beats another file's alias.
        by_name: dict[str, NetworkEntry] = {}
        for entry in entries:
            by_name[entry.alias] = entry
        for entry in entries:
            by_name[entry.name] = entry
        self.entries = entries
        self._by_name = by_name
        self._scanned = True
        return entries

    def find(self, name: str, rescan: bool = True) -> NetworkEntry | None:
        """The file a prompt tag names (file stem or alias); None if there is none, even after a rescan (with
        `rescan` False: none among the files already listed)."""
        name = name.strip()
        if not self._scanned:
            self.refresh()
        entry = self._by_name.get(name)
        if rescan and (entry is None or not os.path.isfile(entry.path)):
            self.refresh()
            entry = self._by_name.get(name)
        return entry

    def names(self) -> list[str]:
        if not self._scanned:
            self.refresh()
        return [entry.name for entry in self.entries]


def lora_registry(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> NetworkRegistry:
    """LoRA/LyCORIS files (`models/Lora`, recursive, .safetensors/.pt/.ckpt) with their metadata."""
    return NetworkRegistry(folders, LORA_SUFFIXES, read_metadata=True, kind="LoRA")


def hypernetwork_registry(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> NetworkRegistry:
    """Hypernetwork files (`models/hypernetworks`, recursive, .pt)."""
    return NetworkRegistry(folders, HYPERNETWORK_SUFFIXES, read_metadata=False, kind="hypernetwork")
