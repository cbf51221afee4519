"""The extra-networks browser under the txt2img prompt (A1111's "Extra networks" cards).

One accordion, sub-tabs Checkpoints / Textual Inversion / Hypernetworks / Lora, a card per file (name and, when a
`<stem>.png` or `<stem>.preview.png` sits beside the file, its preview as a data URI, so no file path is served),
a search box, a sort order and a refresh button. Clicking a card toggles its tag in the txt2img prompt the way
A1111's extraNetworks.js does; clicking a checkpoint card loads that checkpoint. Clicking a LoRA card also shows its
`ss_*` training metadata.

The pure parts (`toggle_tag`, `cards`, `lora_metadata`) carry the logic and are unit tested; the Gradio part only
wires them to one `gr.Dataset` per sub-tab (a Dataset fires `click` on every click, also on the same card again).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import re
from pathlib import Path

import gradio as gr

from modules import shared
from modules.ui.components import create

log = logging.getLogger("webui")

KINDS = ("checkpoints", "textual_inversion", "hypernetworks", "lora")
TITLES = {"checkpoints": "Checkpoints", "textual_inversion": "Textual Inversion", "hypernetworks": "Hypernetworks",
          "lora": "Lora"}
SORTS = ("Name", "Date modified")
SEPARATOR = " "          # A1111's default `extra_networks_add_text_separator`
DEFAULT_MULTIPLIER = 1   # A1111's default `extra_networks_default_multiplier`
EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
THUMBNAIL_SIZE = 256
CSS = """
.extra-network-card { width: 128px; min-height: 40px; display: flex; flex-direction: column; align-items: center; }
.extra-network-card img { width: 128px; height: 128px; object-fit: cover; border-radius: 4px; }
.extra-network-card .name { font-size: 0.85em; word-break: break-all; text-align: center; }
"""

# A1111's re_extranet: `<kind:name:weight>` plus whatever follows in the card's text.
_EXTRANET = re.compile(r"<([^:^>]+:[^:]+):[\d.]+>(.*)", re.S)


# --- prompt editing -------------------------------------------------------------------------------------------------

def toggle_tag(prompt: str, tag: str, separator: str = SEPARATOR) -> str:
    """Add `tag` to the end of `prompt`, or remove it if the prompt has it already (A1111's updatePromptArea).

    Rule (A1111's extraNetworks.js, with two fixes):
    - adding appends `separator + tag` (A1111's default separator is one space); an empty prompt gets the tag alone
      (A1111 would leave a leading space);
    - a `<kind:name:weight>` tag is present when the prompt holds `<kind:name:ANY weight>`; every such occurrence is
      removed together with the separator before it (or, at the start of the prompt, the separator / ", " after
      it) — as tryToRemoveExtraNetworkFromPrompt;
    - a plain tag (an embedding's name) is removed with the separator before it wherever it stands as a whole word
      (A1111 also removes it from inside longer words).
    """
    prompt = prompt or ""
    match = _EXTRANET.match(tag)
    if match:
        body = "<" + re.escape(match.group(1)) + r":[\d.]+>" + re.escape(match.group(2))
    else:
        body = r"(?<![\w])" + re.escape(tag) + r"(?![\w])"
    pattern = re.compile("(?:" + re.escape(separator) + ")?" + body if separator else body)
    if pattern.search(prompt) is None:
        return prompt + separator + tag if prompt.strip() else tag
    removed = pattern.sub("", prompt)
    at_start = re.match(r"^\s*" + body, prompt) is not None
    if at_start:  # nothing before it: drop what separated it from the rest instead
        removed = re.sub(r"^\s*,?\s*", "", removed)
    return removed


# --- cards ------------------------------------------------------------------------------------------------------------

def preview_path(path: str) -> str | None:
    """`<stem>.png` or `<stem>.preview.png` beside the file, as A1111 looks for them (first found wins)."""
    base = os.path.splitext(path)[0]
    for candidate in (base + ".png", base + ".preview.png"):
        if os.path.isfile(candidate):
            return candidate
    return None


_thumbnails: dict[tuple[str, float], str] = {}


def preview_data_uri(path: str | None) -> str | None:
    """A small JPEG data URI of the preview image (cached by path and mtime); None if there is none or it is bad."""
    if not path:
        return None
    try:
        key = (path, os.path.getmtime(path))
    except OSError:
        return None
    if key not in _thumbnails:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=85)
        except (OSError, ValueError) as e:
            log.warning("Extra networks: cannot read preview %s (%s)", path, e)
            return None
        _thumbnails[key] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return _thumbnails[key]


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def _card(kind: str, name: str, path: str, tag: str, search_text: str, **extra) -> dict:
    return {"kind": kind, "name": name, "path": path, "tag": tag, "mtime": _mtime(path),
            "preview": preview_path(path), "search": search_text.lower(), **extra}


def _embedding_files() -> list[str]:
    database = shared.embeddings
    if database is None:
        return []
    found = []
    for folder in database.dirs:
        for root, _, names in os.walk(folder, followlinks=True):
            found += [os.path.join(root, n) for n in names if n.lower().endswith(EMBEDDING_SUFFIXES)]
    return sorted(found)


def _all_cards(kind: str) -> list[dict]:
    if kind == "checkpoints":
        if shared.models is None:
            return []
        return [_card(kind, info.model_name, info.filename, info.title, f"{info.title} {info.filename}",
                      title=info.title) for info in shared.models.registry.checkpoints]
    if kind == "textual_inversion":
        database = shared.embeddings
        if database is None:
            return []
        loaded = {os.path.abspath(e.filename): name for name, e in database.loaded.items()}
        result = []
        for path in _embedding_files():
            name = loaded.get(os.path.abspath(path), Path(path).stem)
            if name in database.skipped and os.path.abspath(path) not in loaded:
                continue  # does not fit the loaded model (A1111 hides those too)
            result.append(_card(kind, name, path, name, f"{name} {path}"))
        return result
    registry = shared.loras if kind == "lora" else shared.hypernetworks if kind == "hypernetworks" else None
    if kind not in KINDS:
        raise ValueError(f"unknown extra network kind: {kind}")
    if registry is None:
        return []
    if not registry._scanned:
        registry.refresh()
    prefix = "lora" if kind == "lora" else "hypernet"
    return [_card(kind, e.name, e.path, f"<{prefix}:{e.name}:{DEFAULT_MULTIPLIER}>",
                  f"{e.name} {e.alias} {e.relative}", alias=e.alias) for e in registry.entries]


def cards(kind: str, search: str = "", sort: str = "Name") -> list[dict]:
    """The cards of one sub-tab: dicts with kind, name, path, tag (what a click inserts), mtime, preview (path or
    None) and, for checkpoints, title. `search` keeps cards whose name, alias or path contains every word of it
    (case-insensitive); `sort` is "Name" (case-insensitive) or "Date modified" (newest first)."""
    words = (search or "").lower().split()
    result = [c for c in _all_cards(kind) if all(w in c["search"] for w in words)]
    if (sort or "").lower().startswith("date"):
        result.sort(key=lambda c: (-c["mtime"], c["name"].lower()))
    else:
        result.sort(key=lambda c: (c["name"].lower(), c["path"]))
    return result


def lora_metadata(name: str) -> dict[str, object]:
    """A LoRA's `ss_*` training metadata (JSON-looking values decoded), for the metadata view; {} if none."""
    import json

    entry = shared.loras.find(name) if shared.loras is not None and name else None
    if entry is None:
        return {}
    result: dict[str, object] = {}
    for key in sorted(entry.metadata):
        if not key.startswith("ss_"):
            continue
        value = entry.metadata[key]
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        result[key] = value
    return result


def card_html(card: dict) -> str:
    uri = preview_data_uri(card["preview"])
    image = f'<img src="{uri}" alt="">' if uri else ""
    name = html.escape(card["name"])
    return (f'<div class="extra-network-card" data-name="{name}" title="{html.escape(card["path"])}">'
            f'{image}<div class="name">{name}</div></div>')


def refresh_all() -> None:
    """Rescan every folder (the refresh button)."""
    if shared.loras is not None:
        shared.loras.refresh()
    if shared.hypernetworks is not None:
        shared.hypernetworks.refresh()
    if shared.models is not None:
        shared.models.refresh()
        if shared.embeddings is not None and shared.models.current is not None:
            shared.embeddings.refresh(shared.models.get())  # only with a loaded model: never loads one here


# --- Gradio -------------------------------------------------------------------------------------------------------

def _dataset_update(items: list[dict]) -> gr.Dataset:
    return gr.Dataset(samples=[[card_html(c)] for c in items])


def _slim(items: list[dict]) -> list[dict]:
    return [{"kind": c["kind"], "name": c["name"], "tag": c["tag"], "title": c.get("title")} for c in items]


def update_all(search: str, sort: str) -> list:
    """New samples for the four Datasets, then the four card lists (gr.State)."""
    lists = [cards(kind, search, sort) for kind in KINDS]
    return [_dataset_update(items) for items in lists] + [_slim(items) for items in lists]


def refresh(search: str, sort: str) -> list:
    refresh_all()
    return update_all(search, sort)


def click_card(index: int | None, items: list[dict], prompt: str) -> str:
    if index is None or not items or not 0 <= int(index) < len(items):
        return prompt
    return toggle_tag(prompt, items[int(index)]["tag"])


def click_lora(index: int | None, items: list[dict], prompt: str) -> tuple[str, dict]:
    if index is None or not items or not 0 <= int(index) < len(items):
        return prompt, {}
    item = items[int(index)]
    return toggle_tag(prompt, item["tag"]), lora_metadata(item["name"])


def click_checkpoint(index: int | None, items: list[dict], progress: gr.Progress = gr.Progress()) -> str:
    from modules.ui import common

    if index is None or not items or not 0 <= int(index) < len(items):
        return ""
    title = items[int(index)]["title"]
    common.change_checkpoint(title, progress)
    return f"Loaded {html.escape(title)}"


def create_ui(prompt: gr.Textbox) -> dict[str, gr.components.Component]:
    """Build the accordion where it is called (txt2img calls it right under its prompt row); clicks edit `prompt`.
    Returns its components by name."""
    components: dict[str, gr.components.Component] = {}
    with create(gr.Accordion, "Extra networks", open=False, elem_id="txt2img_extra_networks") as accordion:
        create(gr.HTML, f"<style>{CSS}</style>", padding=False)
        with create(gr.Row):
            search = create(gr.Textbox, label="Search", placeholder="Search...", elem_id="txt2img_extra_search",
                                        scale=4)
            sort = create(gr.Radio, list(SORTS), value=SORTS[0], label="Sort by", elem_id="txt2img_extra_sort",
                                    scale=2)
            refresh_button = create(gr.Button, "🔄 Refresh", elem_id="txt2img_extra_refresh", scale=0, min_width=100)
        datasets, states = [], []
        initial = [cards(kind) for kind in KINDS]
        with create(gr.Tabs, elem_id="txt2img_extra_tabs"):
            for kind, items in zip(KINDS, initial):
                with create(gr.Tab, TITLES[kind], elem_id=f"txt2img_extra_tab_{kind}"):
                    dataset = create(gr.Dataset, components=["html"], samples=[[card_html(c)] for c in items],
                                                 type="index", samples_per_page=100, label=None, show_label=False,
                                                 layout="gallery", elem_id=f"txt2img_{kind}_cards")
                    datasets.append(dataset)
                    states.append(gr.State(_slim(items)))
                    if kind == "checkpoints":
                        status = create(gr.HTML, elem_id="txt2img_extra_checkpoint_status")
                    if kind == "lora":
                        metadata = create(gr.JSON, label="Metadata (ss_*) of the last clicked LoRA",
                                                   elem_id="txt2img_lora_metadata")

    outputs = datasets + states
    search.change(update_all, inputs=[search, sort], outputs=outputs, show_progress="hidden")
    sort.change(update_all, inputs=[search, sort], outputs=outputs, show_progress="hidden")
    refresh_button.click(refresh, inputs=[search, sort], outputs=outputs, api_name="extra_networks_refresh")
    by_kind = dict(zip(KINDS, zip(datasets, states)))
    dataset, state = by_kind["checkpoints"]
    dataset.click(click_checkpoint, inputs=[dataset, state], outputs=[status])
    for kind in ("textual_inversion", "hypernetworks"):
        dataset, state = by_kind[kind]
        dataset.click(click_card, inputs=[dataset, state, prompt], outputs=[prompt], show_progress="hidden",
                      queue=False)
    dataset, state = by_kind["lora"]
    dataset.click(click_lora, inputs=[dataset, state, prompt], outputs=[prompt, metadata], show_progress="hidden",
                  queue=False)
    components.update(accordion=accordion, search=search, sort=sort, refresh=refresh_button, status=status,
                      lora_metadata=metadata, **{f"{k}_cards": d for k, d in zip(KINDS, datasets)})
    return components
