"""The "send to" buttons under a gallery: the selected image and its parameters go to img2img, inpaint or extras.

A1111 pastes the image's infotext into the target tab's fields (the same mapping as PNG Info's paste), puts the
image into the target's image input and switches tabs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules.ui import txt2img
from modules.ui.output_panel import OutputPanel, selected_image

# img2img fields that an infotext fills (the prompt row and the shared sampling fields).
IMG2IMG_PASTE_FIELDS = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "seed",
                        "width", "height", "batch_size", "denoising_strength")
SUB_TABS = {"img2img": "img2img_img2img_tab", "Inpaint": "img2img_inpaint_tab"}


def img2img_updates(gallery_value: list | None, index: int, infotexts: list[str], mode: str) -> list:
    """Updates for [image input of `mode`, IMG2IMG_PASTE_FIELDS..., mode, sub-tabs, inpaint controls, app tabs]."""
    image, index = selected_image(gallery_value, index)
    if image is None:
        raise gr.Error("Nothing to send: generate an image first.")
    text = infotexts[index] if 0 <= index < len(infotexts) else ""
    values = txt2img.infotext_values(text)
    fields = [gr.update(value=values[name]) if name in values else gr.update() for name in IMG2IMG_PASTE_FIELDS]
    if mode == "Inpaint":
        image_update = gr.update(value={"background": image, "layers": [], "composite": image})
    else:
        image_update = gr.update(value=image)
    return [image_update, *fields, mode, gr.Tabs(selected=SUB_TABS[mode]), gr.Group(visible=mode == "Inpaint"),
            gr.Tabs(selected="img2img")]


def extras_updates(gallery_value: list | None, index: int) -> list:
    image, _ = selected_image(gallery_value, index)
    if image is None:
        raise gr.Error("Nothing to send: generate an image first.")
    return [gr.update(value=image), gr.Tabs(selected="extras")]


def connect(panel: OutputPanel, img2img_fields: dict[str, Any], extras_image: Any | None, tabs: gr.Tabs) -> None:
    """Wire one panel's send-to buttons to the img2img tab (its `create_tab` result) and the extras image input."""
    fields = [img2img_fields[name] for name in IMG2IMG_PASTE_FIELDS]
    common = [img2img_fields["mode"], img2img_fields["mode_tabs"], img2img_fields["inpaint_controls"], tabs]
    inputs = [panel.gallery, panel.selected, panel.infotexts]
    hidden = {"show_progress": "hidden", "api_visibility": "undocumented"}
    panel.send_to_img2img.click(lambda v, i, t: img2img_updates(v, i, t, "img2img"), inputs=inputs,
                                outputs=[img2img_fields["init_img"], *fields, *common], **hidden)
    panel.send_to_inpaint.click(lambda v, i, t: img2img_updates(v, i, t, "Inpaint"), inputs=inputs,
                                outputs=[img2img_fields["inpaint"], *fields, *common], **hidden)
    if extras_image is not None:
        panel.send_to_extras.click(extras_updates, inputs=[panel.gallery, panel.selected],
                                   outputs=[extras_image, tabs], **hidden)
    else:
        panel.send_to_extras.visible = False


def connect_image_source(button: gr.Button, image_path: Any, infotext: Any, img2img_fields: dict[str, Any],
                         tabs: gr.Tabs) -> None:
    """PNG Info's "Send to img2img": the dropped file and its parameters go to img2img."""
    fields = [img2img_fields[name] for name in IMG2IMG_PASTE_FIELDS]
    common = [img2img_fields["mode"], img2img_fields["mode_tabs"], img2img_fields["inpaint_controls"], tabs]

    def send(path: str | None, text: str) -> list:
        return img2img_updates([(path, None)] if path else [], 0, [text or ""], "img2img")

    button.click(send, inputs=[image_path, infotext], outputs=[img2img_fields["init_img"], *fields, *common],
                 show_progress="hidden", api_visibility="undocumented")
