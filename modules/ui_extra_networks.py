"""A1111's `modules.ui_extra_networks`: `ExtraNetworksPage` (an extension's own card page, e.g. LyCORIS),
`register_page`, `extra_pages`, `quote_js`, `allowed_dirs`.

A registered page's items (`list_items()`, A1111's dicts with name, filename, preview, search_term, prompt) become
cards in this UI's form with `page_cards(page)` (the card's tag is the page's prompt expression, evaluated as
A1111's page script would); `registered_cards()` gives every registered page's cards by title. An adapter: nothing
in the core uses it."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

from modules import shared

extra_pages: list[ExtraNetworksPage] = []
allowed_dirs: set[str] = set()
PREVIEW_SUFFIXES = ("png", "jpg", "jpeg", "webp", "gif")
_JS_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def quote_js(s: str) -> str:
    """`s` as a JavaScript string literal (A1111's helper for card prompts)."""
    return json.dumps(str(s), ensure_ascii=False)


def prompt_text(expression: str) -> str:
    """The text an A1111 card prompt expression builds: its string literals joined (`"<lyco:" + "name" +
    ":1>"` -> `<lyco:name:1>`); `opts.extra_networks_default_multiplier` counts as 1."""
    expression = expression.replace("opts.extra_networks_default_multiplier", '"1"')
    return "".join(json.loads(literal) for literal in _JS_STRING.findall(expression))


class ExtraNetworksPage:
    """One sub-tab of cards. Subclasses give `list_items()` (or `create_item(name)` with `refresh()`) and
    `allowed_directories_for_previews()`."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")  # A1111 1.10's id
        self.id_page = self.name.replace(" ", "_")
        self.card_page = ""
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata: dict[str, Any] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.lister = None

    def refresh(self) -> None:
        pass

    def read_user_metadata(self, item: dict[str, Any], use_cache: bool = True) -> None:
        """Load `<file stem>.json` beside the item's file into item["user_metadata"] (A1111's user metadata)."""
        filename = item.get("filename")
        if not filename:
            return
        path = os.path.splitext(filename)[0] + ".json"
        try:
            with open(path, encoding="utf8") as file:
                item["user_metadata"] = json.load(file)
        except (OSError, ValueError):
            item.setdefault("user_metadata", {})

    def link_preview(self, filename: str) -> str:
        quoted = urllib.parse.quote(filename.replace("\\", "/"))
        mtime = os.path.getmtime(filename) if os.path.exists(filename) else 0
        return f"./sd_extra_networks/thumb?filename={quoted}&mtime={mtime}"

    def search_terms_from_path(self, filename: str, possible_directories: list[str] | None = None) -> str:
        absolute = os.path.abspath(filename)
        for parent in possible_directories or self.allowed_directories_for_previews():
            parent = os.path.abspath(parent)
            if absolute.startswith(parent + os.sep):
                return absolute[len(parent):].replace("\\", "/")
        return ""

    def find_preview(self, path: str) -> str | None:
        """A preview image beside `path` (`<stem>.png`, `<stem>.preview.png`, ...), as a link."""
        found = self.find_preview_file(path)
        return self.link_preview(found) if found else None

    def find_preview_file(self, path: str) -> str | None:
        """The preview image file beside `path`, or None."""
        stem = os.path.splitext(path)[0]
        for candidate in [f"{stem}.{ext}" for ext in PREVIEW_SUFFIXES] + \
                         [f"{stem}.preview.{ext}" for ext in PREVIEW_SUFFIXES]:
            if os.path.isfile(candidate):
                return candidate
        return None

    def find_description(self, path: str) -> str | None:
        for candidate in (f"{os.path.splitext(path)[0]}.txt", f"{os.path.splitext(path)[0]}.description.txt"):
            try:
                with open(candidate, encoding="utf8", errors="replace") as file:
                    return file.read()
            except OSError:
                continue
        return None

    def get_sort_keys(self, path: str) -> dict[str, Any]:
        stat = os.stat(path) if os.path.exists(path) else None
        return {"default": os.path.basename(path).lower(), "date_created": stat.st_ctime if stat else 0,
                "date_modified": stat.st_mtime if stat else 0, "name": os.path.basename(path).lower(),
                "path": path.lower()}

    def create_item(self, name: str, index: int | None = None) -> dict[str, Any] | None:
        raise NotImplementedError

    def list_items(self) -> Iterator[dict[str, Any]]:
        return iter(())

    def allowed_directories_for_previews(self) -> list[str]:
        return []

    def create_user_metadata_editor(self, ui: Any, tabname: str) -> Any:
        return None


def register_page(page: ExtraNetworksPage) -> None:
    """Add an extension's page (its preview folders become servable, as in A1111)."""
    extra_pages.append(page)
    allowed_dirs.update(os.path.abspath(folder) for folder in page.allowed_directories_for_previews())


def unregister_page(page: ExtraNetworksPage) -> None:
    if page in extra_pages:
        extra_pages.remove(page)


def page_cards(page: ExtraNetworksPage) -> list[dict[str, Any]]:
    """The page's items as this UI's cards (kind, name, path, tag, mtime, preview, search), sorted by name."""
    page.refresh()
    cards = []
    for item in page.list_items():
        if not item:
            continue
        path = item.get("filename") or ""
        tag = prompt_text(item["prompt"]) if item.get("prompt") else str(item.get("name", ""))
        cards.append({"kind": page.name, "name": str(item.get("name", "")), "path": path, "tag": tag,
                      "mtime": os.path.getmtime(path) if path and os.path.exists(path) else 0.0,
                      "preview": page.find_preview_file(path) if path else None,
                      "search": f"{item.get('name', '')} {item.get('search_term', '')}".lower()})
    return sorted(cards, key=lambda card: (card["name"].lower(), card["path"]))


def registered_cards() -> dict[str, list[dict[str, Any]]]:
    """{page title: cards} for every registered page."""
    return {page.title: page_cards(page) for page in extra_pages}


def initialize() -> None:
    extra_pages.clear()


intialize = initialize  # A1111's spelling


def default_multiplier() -> float:
    return float(getattr(shared.opts, "extra_networks_default_multiplier", 1.0))
