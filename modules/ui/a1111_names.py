"""A1111's names in `modules.ui` and `modules.ui_common` that extensions use: `create_refresh_button`, `gr_show`,
`plaintext_to_html`, `create_output_panel` (A1111's panel object over this UI's output panel), `save_files`,
`versions_html`, the tool-button symbols, `txt2img_paste_fields` / `img2img_paste_fields` (filled when the tabs are
built, see `record_paste_fields`), `setup_progressbar`, `ordered_ui_categories`, `wrap_gradio_call`.

An adapter: `modules.ui` re-exports these names, `modules.ui_common` too; nothing in the core uses this module."""

from __future__ import annotations

import html
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules import infotext_utils, shared
from modules.call_queue import wrap_gradio_call, wrap_gradio_gpu_call, wrap_queued_call
from modules.job_infotext import VERSION
from modules.ui import output_panel as panel_module
from modules.ui_components import ToolButton

__all__ = [
    "OutputPanel", "apply_style_symbol", "clear_prompt_symbol", "create_output_panel",
    "create_override_settings_dropdown", "create_refresh_button", "resize_from_to_html", "wrap_gradio_gpu_call",
    "wrap_queued_call",
    "detect_image_size_symbol", "extra_networks_symbol", "folder_symbol", "gr_show", "img2img_paste_fields",
    "ordered_ui_categories", "paste_symbol", "plaintext_to_html", "random_symbol", "record_paste_fields",
    "refresh_symbol", "restore_progress_symbol", "reuse_symbol", "save_files", "save_style_symbol", "setup_progressbar",
    "switch_values_symbol", "txt2img_paste_fields", "up_down_symbol", "update_generation_info", "versions_html",
    "wrap_gradio_call",
]

# A1111's tool-button labels
random_symbol = "\U0001f3b2\ufe0f"  # 🎲️
reuse_symbol = "\u267b\ufe0f"  # ♻️
paste_symbol = "\u2199\ufe0f"  # ↙
refresh_symbol = "\U0001f504"  # 🔄
save_style_symbol = "\U0001f4be"  # 💾
apply_style_symbol = "\U0001f4cb"  # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
extra_networks_symbol = "\U0001F3B4"  # 🎴
switch_values_symbol = "\U000021C5"  # ⇅
restore_progress_symbol = "\U0001F300"  # 🌀
detect_image_size_symbol = "\U0001F4D0"  # 📐
folder_symbol = "\U0001f4c2"  # 📂
up_down_symbol = "\u2195\ufe0f"  # ↕️

# (component, infotext key) of the txt2img / img2img tabs, in A1111's order (prompt first, negative prompt second);
# the same list objects for the whole run, filled by `record_paste_fields` when the tabs are built
txt2img_paste_fields: list[tuple[Any, Any]] = []
img2img_paste_fields: list[tuple[Any, Any]] = []

# this UI's tab field name -> the infotext key A1111 pastes into it
INFOTEXT_KEYS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "steps": "Steps", "sampler_name": "Sampler",
    "scheduler": "Schedule type", "cfg_scale": "CFG scale", "seed": "Seed", "width": "Size-1", "height": "Size-2",
    "batch_size": "Batch size", "subseed": "Variation seed", "subseed_strength": "Variation seed strength",
    "seed_resize_from_w": "Seed resize from-1", "seed_resize_from_h": "Seed resize from-2",
    "denoising_strength": "Denoising strength", "hr_scale": "Hires upscale", "hr_upscaler": "Hires upscaler",
    "hr_second_pass_steps": "Hires steps", "hr_resize_x": "Hires resize-1", "hr_resize_y": "Hires resize-2",
    "hr_sampler_name": "Hires sampler", "hr_scheduler": "Hires schedule type", "hr_prompt": "Hires prompt",
    "hr_negative_prompt": "Hires negative prompt", "styles": "Styles array", "mask_blur": "Mask blur",
    "image_cfg_scale": "Image CFG scale", "resize_mode": "Resize mode",
}


def record_paste_fields(tabname: str, fields: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """Fill `txt2img_paste_fields` / `img2img_paste_fields` (in place) from a tab's {field name: component}, and
    register them as the tab's paste fields (`infotext_utils.paste_fields`), as A1111's UI does."""
    pairs = [(fields[name], key) for name, key in INFOTEXT_KEYS.items() if fields.get(name) is not None]
    target = txt2img_paste_fields if tabname == "txt2img" else img2img_paste_fields
    target[:] = pairs
    infotext_utils.add_paste_fields(tabname, fields.get("init_img"), list(pairs))
    return target


def gr_show(visible: bool = True) -> dict[str, Any]:
    """A Gradio update that shows (or hides) the output component."""
    return gr.update(visible=visible)


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """`text` as one HTML paragraph, escaped, with `<br>` for line breaks."""
    content = "<br>\n".join(html.escape(line) for line in str(text).split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(refresh_component: Any, refresh_method: Callable[[], Any],
                          refreshed_args: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
                          elem_id: str | None) -> Any:
    """A 🔄 tool button that calls `refresh_method()`, then sets `refreshed_args` (a dict, or a function giving
    one, e.g. `lambda: {"choices": [...]}`) on the component(s)."""
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh() -> Any:
        refresh_method()
        args = dict(refreshed_args() if callable(refreshed_args) else refreshed_args or {})
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)  # a page built later starts with the new values too
        updates = [gr.update(**args) for _ in components]
        return updates if len(updates) > 1 else updates[0]

    button = ToolButton(value=refresh_symbol, elem_id=elem_id)
    button.click(fn=refresh, inputs=[], outputs=components)
    return button


@dataclass
class OutputPanel:
    """A1111's output panel object: `gallery`, `generation_info` (hidden JSON of the result), `infotext` (HTML),
    `html_log`, `button_upscale`; index 0-3 give the first four, for extensions that unpack the old tuple."""

    gallery: Any = None
    generation_info: Any = None
    infotext: Any = None
    html_log: Any = None
    button_upscale: Any = None
    panel: Any = None  # this UI's own panel (modules.ui.output_panel.OutputPanel)

    def __getitem__(self, index: int) -> Any:
        return (self.gallery, self.generation_info, self.infotext, self.html_log)[index]

    def __iter__(self):
        return iter((self.gallery, self.generation_info, self.infotext, self.html_log))


def create_output_panel(tabname: str, outdir: str | None = None, toprow: Any = None) -> OutputPanel:
    """This UI's output panel (gallery, save/zip/folder/send-to buttons) in A1111's shape; `outdir` is where
    A1111's folder button opens (here: the tab's own output folder)."""
    panel = panel_module.create_output_panel(tabname)
    generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
    html_log = gr.HTML(elem_id=f"html_log_{tabname}", elem_classes="html-log")
    return OutputPanel(gallery=panel.gallery, generation_info=generation_info, infotext=panel.html_info,
                       html_log=html_log, button_upscale=None, panel=panel)


def save_files(js_data: str, images: list[Any], do_make_zip: bool, index: int) -> tuple[Any, str, str, str]:
    """A1111's Save button handler: `js_data` is the result's generation info (JSON with "infotexts"), `images`
    the gallery's value, `index` the selected image (-1: all). Returns (files, "", "", HTML naming the file)."""
    data = json.loads(js_data) if js_data else {}
    infotexts = list(data.get("infotexts") or [])
    # Gradio 3 gallery items are {"name": path, ...}; this UI's galleries give {"path": ...}
    items = [{"path": item["name"]} if isinstance(item, dict) and "path" not in item and "name" in item else item
             for item in images or []]
    saved = panel_module.save_files(items, infotexts, int(index), bool(do_make_zip))
    message = plaintext_to_html(f"Saved: {os.path.basename(saved[0])}") if saved else ""
    return gr.File(value=saved, visible=True), "", "", message


def update_generation_info(generation_info: str, html_info: str, img_index: int) -> tuple[str, str]:
    """The HTML infotext of the gallery image `img_index` from the result's JSON generation info."""
    try:
        data = json.loads(generation_info)
        infotexts = data["infotexts"]
        if 0 <= img_index < len(infotexts):
            return plaintext_to_html(infotexts[img_index]), gr.update()
    except (ValueError, KeyError, TypeError):
        pass
    return html_info, gr.update()


def versions_html() -> str:
    """The version line A1111 shows in the page footer (extensions look in it for "forge" and the like)."""
    import torch

    python = ".".join(platform.python_version_tuple())
    return f"version: <a href=\"#\">{VERSION}</a>&#x2000;•&#x2000;python: <span title=\"{html.escape(sys.version)}\">" \
           f"{python}</span>&#x2000;•&#x2000;torch: {torch.__version__}&#x2000;•&#x2000;diffusers&#x2000;•&#x2000;" \
           f"gradio: {gr.__version__}&#x2000;•&#x2000;checkpoint: {_checkpoint_hash()}"


def _checkpoint_hash() -> str:
    model = shared.models.current if shared.models is not None else None
    return str(getattr(getattr(model, "checkpoint", None), "shorthash", None) or "N/A")


def setup_progressbar(*args: Any, **kwargs: Any) -> None:
    """A1111 wired its progress bar here; this UI shows job progress itself."""


def ordered_ui_categories() -> Iterable[str]:
    """The generation tabs' blocks in the `ui_reorder_list` setting's order (A1111's default order here)."""
    from modules import shared_items

    return iter(shared_items.ui_reorder_categories())


def resize_from_to_html(width: int, height: int, scale_by: float) -> str:
    """"resize: from WxH to W'xH'" for img2img's "Resize by" slider (A1111's text)."""
    target_width, target_height = int(width * scale_by), int(height * scale_by)
    if not target_width or not target_height:
        return "no image selected"
    return f"resize: from <span class='resolution'>{width}x{height}</span> to " \
           f"<span class='resolution'>{target_width}x{target_height}</span>"


def create_override_settings_dropdown(tabname: str, row: Any) -> Any:
    """A1111's "Override settings" multiselect (values "Key: value" from pasted infotext); hidden until filled."""
    dropdown = gr.Dropdown([], label="Override settings", visible=False, elem_id=f"{tabname}_override_settings",
                           multiselect=True)
    dropdown.change(fn=lambda values: gr.update(visible=bool(values)), inputs=[dropdown], outputs=[dropdown])
    return dropdown
