"""The PNG Info tab: show an image's generation parameters and other metadata, and send them to txt2img."""

from __future__ import annotations

import html

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules import scripts
from modules.infotext import read_info_from_image
from modules.ui import txt2img
from modules.ui.components import create


def image_info(path: str | None) -> tuple[str, str]:
    """(parameters text, HTML of the parameters and the other info items) of the image file at `path`.

    The file is opened as uploaded, so its PNG text chunks and EXIF survive (A1111's `run_pnginfo`).
    """
    if not path:
        return "", ""
    try:
        with Image.open(path) as image:
            geninfo, items = read_info_from_image(image)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return "", f'<div class="error">Could not read the image: {html.escape(str(e))}</div>'

    info = ""
    if geninfo:
        info += (f'<div class="infotext-item"><p><b>parameters</b></p>'
                 f'<p class="infotext">{html.escape(geninfo)}</p></div>\n')
    for key, value in items.items():
        if isinstance(value, bytes):
            value = value.decode("utf8", errors="replace")
        info += (f'<div class="infotext-item"><p><b>{html.escape(str(key))}</b></p>'
                 f'<p class="infotext">{html.escape(str(value))}</p></div>\n')
    if not info:
        info = "<div><p>Nothing found in the image.</p></div>"
    return geninfo or "", info


def send_to_txt2img(text: str, field_names: list[str]) -> list:
    """gr.updates for the txt2img fields named in `field_names` and the txt2img scripts' paste fields from the
    infotext `text`, then the tab switch."""
    return [*txt2img.paste_all(text or "", field_names), gr.Tabs(selected="txt2img")]


def create_tab(txt2img_fields: dict[str, gr.components.Component] | None = None,
               tabs: gr.Tabs | None = None, img2img_fields: dict | None = None) -> None:
    """The tab; "Send to txt2img" fills `txt2img_fields` (txt2img.create_tab's result) and selects the txt2img tab
    of `tabs` (the app's gr.Tabs)."""
    with create(gr.Tab, "PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
        with create(gr.Row, equal_height=False):
            with create(gr.Column, variant="panel"):
                image = create(gr.Image, label="Source", type="filepath", image_mode=None,
                                         sources=["upload", "clipboard"],
                                         elem_id="pnginfo_image", height=480)
            with create(gr.Column, variant="panel"):
                html_info = create(gr.HTML, elem_id="pnginfo_html_info")
                generation_info = create(gr.Textbox, label="Parameters", lines=6, interactive=False,
                                                     elem_id="pnginfo_generation_info")
                with create(gr.Row):
                    send_button = create(gr.Button, "Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                    send_img2img = create(gr.Button, "Send to img2img", elem_id="pnginfo_send_to_img2img",
                                                     visible=img2img_fields is not None and tabs is not None)

        image.change(image_info, inputs=[image], outputs=[generation_info, html_info], api_name="pnginfo")

        if txt2img_fields:
            names = [name for name in txt2img_fields if name in txt2img.FIELD_NAMES]
            outputs = [txt2img_fields[name] for name in names]
            outputs += [component for component, _ in scripts.scripts_txt2img.infotext_fields]
            if tabs is not None:
                outputs.append(tabs)

            def send(text: str) -> list:
                updates = send_to_txt2img(text, names)
                return updates if tabs is not None else updates[:-1]
            send_button.click(send, inputs=[generation_info], outputs=outputs, show_progress="hidden")
        if img2img_fields is not None and tabs is not None:
            from modules.ui import send_to

            send_to.connect_image_source(send_img2img, image, generation_info, img2img_fields, tabs)
