"""A1111's `modules.ui_extra_networks_user_metadata`: `UserMetadataEditor`, the base of an extra-network page's
metadata editor (extensions subclass it). Here it reads and writes the `<file stem>.json` user metadata beside a
card's file; this UI has no editor dialog, so `create_ui` builds nothing."""

from __future__ import annotations

import os
from typing import Any

from modules.options import write_json_atomic


class UserMetadataEditor:
    def __init__(self, ui: Any, tabname: str, page: Any) -> None:
        self.ui = ui
        self.tabname = tabname
        self.page = page
        self.id_part = f"{tabname}_{page.extra_networks_tabname}_edit_user_metadata"
        self.box = None
        self.edit_name_input = None
        self.button_edit = None

    def get_user_metadata(self, name: str) -> dict[str, Any]:
        item = self.page.items.get(name, {})
        metadata = item.get("user_metadata")
        if metadata is None:
            self.page.read_user_metadata(item)
            metadata = item.get("user_metadata", {})
        return metadata

    def write_user_metadata(self, name: str, metadata: dict[str, Any]) -> None:
        item = self.page.items.get(name, {})
        filename = item.get("filename")
        if not filename:
            raise ValueError(f"No file for {name!r}")
        write_json_atomic(os.path.splitext(filename)[0] + ".json", metadata)
        item["user_metadata"] = metadata

    def save_user_metadata(self, name: str, desc: str, notes: str) -> None:
        metadata = self.get_user_metadata(name)
        metadata.update(description=desc, notes=notes)
        self.write_user_metadata(name, metadata)

    def create_ui(self) -> None:
        """No editor dialog in this UI."""

    def setup_ui(self, gallery: Any) -> None:
        pass


__all__ = ["UserMetadataEditor"]
