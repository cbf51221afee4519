"""The img2img tab (A1111 layout): img2img / Sketch / Inpaint / Inpaint upload sub-tabs, one call into processing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modules import scripts, shared
from modules.infotext import as_ui_number
from modules.processing import INPAINT_AREAS, MASKED_CONTENT, RESIZE_MODES, Job
from modules.sampling import samplers
from modules.ui import presets as presets_ui
from modules.ui.common import model_default_size, run_safely, session_of, stream_job
from modules.ui.components import create
from modules.ui.output_panel import create_output_panel
from modules.ui.txt2img import interrupt_own_job, negative_token_counter, skip_own_job, token_counter

MODES = ("img2img", "Sketch", "Inpaint", "Inpaint upload")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_MODES = ("Inpaint", "Inpaint upload")


def _as_pil(value: Any) -> Image.Image | None:
    """A PIL image from what Gradio hands over (PIL, numpy array or a file path), None for nothing."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if isinstance(value, str):
        return Image.open(value)
    if isinstance(value, dict) and value.get("path"):
        return Image.open(value["path"])
    raise gr.Error(f"Unsupported image value: {type(value).__name__}")


def editor_parts(value: Any) -> tuple[Image.Image | None, list[Image.Image], Image.Image | None]:
    """(background, layers, composite) of a gr.ImageEditor value (a dict or an EditorValue)."""
    if value is None:
        return None, [], None
    get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
    layers = [img for img in (_as_pil(layer) for layer in (get("layers") or [])) if img is not None]
    return _as_pil(get("background")), layers, _as_pil(get("composite"))


def mask_from_layers(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """White where any layer has a non-transparent pixel (the painted brush strokes), black elsewhere."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        if layer.mode in ("RGBA", "LA") or "transparency" in layer.info:
            painted = np.asarray(layer.convert("RGBA"))[..., 3] > 0
        else:  # an opaque layer: what is not black counts as painted
            painted = np.asarray(layer.convert("L")) > 0
        if painted.shape != mask.shape:
            painted = np.asarray(Image.fromarray(painted).resize(size, Image.Resampling.NEAREST))
        mask |= painted
    if not mask.any():
        return None
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def init_image_and_mask(mode: str, init_img: Any, sketch: Any, inpaint: Any, upload_img: Any,
                        upload_mask: Any) -> tuple[Image.Image, Image.Image | None]:
    """The init image and the mask (white = repaint, or None) for the active sub-tab."""
    mask = None
    if mode == "Sketch":
        background, layers, composite = editor_parts(sketch)
        image = composite if composite is not None else background
        if image is None:
            raise gr.Error("Upload an image first (Sketch tab)")
    elif mode == "Inpaint":
        background, layers, composite = editor_parts(inpaint)
        image = background if background is not None else composite
        if image is None:
            raise gr.Error("Upload an image first (Inpaint tab)")
        mask = mask_from_layers(layers, image.size)
        if mask is None:
            raise gr.Error("Paint the area to repaint on the image first (Inpaint tab)")
    elif mode == "Inpaint upload":
        image = _as_pil(upload_img)
        if image is None:
            raise gr.Error("Upload an image first (Inpaint upload tab)")
        mask_image = _as_pil(upload_mask)
        if mask_image is None:
            raise gr.Error("Upload a mask too (Inpaint upload tab): white = repaint")
        mask = mask_image.convert("L")
    else:
        image = _as_pil(init_img)
        if image is None:
            raise gr.Error("Upload an image first")
    if image.mode == "RGBA":  # transparent parts become white, as A1111 does for uploaded images
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    return image.convert("RGB"), mask


@run_safely
def generate(mode: str, init_img: Any, sketch: Any, inpaint: Any, upload_img: Any, upload_mask: Any,
             prompt: str, negative_prompt: str, sampler_name: str, scheduler: str, steps: float, cfg_scale: float,
             denoising_strength: float, seed: float, width: float, height: float, batch_count: float,
             batch_size: float, resize_mode: int, mask_blur: float, mask_mode: int, inpainting_fill: int,
             inpaint_area: int, padding: float, request: gr.Request,
             progress: gr.Progress = gr.Progress(), *script_args: object) -> Iterator[tuple]:
    """`script_args`: the Script dropdown and every script's inputs (modules.scripts); missing ones get defaults."""
    mode = mode if mode in MODES else "img2img"
    image, mask = init_image_and_mask(mode, init_img, sketch, inpaint, upload_img, upload_mask)
    job = Job(prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler_name, scheduler=scheduler,
              steps=int(steps), cfg_scale=as_ui_number(float(cfg_scale)), seed=int(seed), width=int(width),
              height=int(height), n_iter=int(batch_count), batch_size=int(batch_size),
              denoising_strength=float(denoising_strength), init_images=[image], resize_mode=int(resize_mode or 0),
              image_mask=mask)
    if mask is not None:
        job.mask_blur = int(mask_blur)
        job.inpainting_mask_invert = int(mask_mode or 0)
        job.inpainting_fill = int(inpainting_fill if inpainting_fill is not None else 1)
        job.inpaint_full_res = bool(inpaint_area)
        job.inpaint_full_res_padding = int(padding)
    scripts.scripts_img2img.attach(job, script_args)
    owner = session_of(request)
    yield from stream_job(lambda: shared.run_job(job, "img2img", owner=owner), progress, owner)


def create_tab(default_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Build the tab; returns its components by field name (prompt fields as txt2img's, the images, the sub-tabs)
    so other tabs can send images and parameters here."""
    default_size = default_size or model_default_size()
    scripts.ensure_loaded()
    # the tab's scripts see each of its components being made (Script.before_component / after_component)
    with scripts.current_runner(scripts.scripts_img2img), \
            create(gr.Tab, "img2img", id="img2img", elem_id="tab_img2img"):
        with create(gr.Row):
            with create(gr.Column, scale=6):
                prompt = create(gr.Textbox, label="Prompt", lines=3, elem_id="img2img_prompt",
                                            placeholder="Prompt (press Ctrl+Enter to generate)")
                prompt_tokens = create(gr.HTML, "0/75", elem_id="img2img_token_counter")
                negative = create(gr.Textbox, label="Negative prompt", lines=2, elem_id="img2img_neg_prompt")
                negative_tokens = create(gr.HTML, "0/75", elem_id="img2img_negative_token_counter")
            with create(gr.Column, scale=1, min_width=160):
                generate_button = create(gr.Button, "Generate", variant="primary", elem_id="img2img_generate")
                interrupt = create(gr.Button, "Interrupt", elem_id="img2img_interrupt")
                skip = create(gr.Button, "Skip", elem_id="img2img_skip")
        with create(gr.Row):
            with create(gr.Column):
                # which sub-tab is active: set by the sub-tabs' select events, an ordinary input for the API
                mode = create(gr.Radio, list(MODES), value="img2img", label="Mode", visible=False,
                                        elem_id="img2img_mode")
                with create(gr.Tabs, elem_id="mode_img2img") as mode_tabs:
                    with create(gr.Tab, "img2img", id="img2img_img2img_tab",
                                        elem_id="img2img_img2img_tab") as tab_plain:
                        init_img = create(gr.Image, label="Image for img2img", type="pil",
                                                    sources=["upload", "clipboard"],
                                                    image_mode="RGBA", height=480, elem_id="img2img_image")
                    with create(gr.Tab, "Sketch", id="img2img_sketch_tab",
                                        elem_id="img2img_img2img_sketch_tab") as tab_sketch:
                        sketch = create(gr.ImageEditor, label="Image for img2img", type="pil", image_mode="RGBA",
                                                        sources=["upload", "clipboard"], height=480, format="png",
                                                        elem_id="img2img_sketch",
                                                        brush=gr.Brush(colors=["#000000", "#ffffff", "#ff0000",
                                                                               "#00ff00", "#0000ff"],
                                                                       color_mode="defaults"))
                    with create(gr.Tab, "Inpaint", id="img2img_inpaint_tab",
                                        elem_id="img2img_inpaint_tab") as tab_inpaint:
                        inpaint = create(gr.ImageEditor, label="Image for inpainting with mask", type="pil",
                                                         image_mode="RGBA", sources=["upload", "clipboard"], height=480,
                                                         elem_id="img2maskimg", layers=False, format="png",
                                                         brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                    with create(gr.Tab, "Inpaint upload", id="img2img_inpaint_upload_tab",
                                        elem_id="img2img_inpaint_upload_tab") as tab_upload:
                        upload_img = create(gr.Image, label="Image for img2img", type="pil",
                                                      sources=["upload", "clipboard"],
                                                      image_mode="RGBA", elem_id="img_inpaint_base")
                        upload_mask = create(gr.Image, label="Mask", type="pil", sources=["upload", "clipboard"],
                                                       image_mode="RGBA", elem_id="img_inpaint_mask")
                resize_mode = create(gr.Radio, list(RESIZE_MODES), value=RESIZE_MODES[0], type="index",
                                               label="Resize mode",
                                               elem_id="resize_mode")
                with create(gr.Group, visible=False, elem_id="img2img_inpaint_controls") as inpaint_controls:
                    with create(gr.Row):
                        mask_blur = create(gr.Slider, 0, 64, value=4, step=1, label="Mask blur",
                                                      elem_id="img2img_mask_blur")
                        mask_mode = create(gr.Radio, list(MASK_MODES), value=MASK_MODES[0], type="index",
                                                     label="Mask mode",
                                                     elem_id="img2img_mask_mode")
                    inpainting_fill = create(gr.Radio, list(MASKED_CONTENT), value="original", type="index",
                                                       label="Masked content", elem_id="img2img_inpainting_fill")
                    with create(gr.Row):
                        inpaint_area = create(gr.Radio, list(INPAINT_AREAS), value=INPAINT_AREAS[0], type="index",
                                                        label="Inpaint area", elem_id="img2img_inpaint_full_res")
                        padding = create(gr.Slider, 0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                    elem_id="img2img_inpaint_full_res_padding")
                with create(gr.Row):
                    sampler = create(gr.Dropdown, label="Sampling method", choices=samplers.sampler_names(),
                                                  value="DPM++ 2M", elem_id="img2img_sampling")
                    scheduler = create(gr.Dropdown, label="Schedule type", choices=samplers.schedule_type_labels(),
                                                    value="Automatic", elem_id="img2img_scheduler")
                steps = create(gr.Slider, 1, 150, value=20, step=1, label="Sampling steps", elem_id="img2img_steps")
                preset_hint, preset_apply = presets_ui.create_row("img2img")
                with create(gr.Row):
                    width = create(gr.Slider, 64, 2048, value=default_size[0], step=8, label="Width",
                                              elem_id="img2img_width")
                    height = create(gr.Slider, 64, 2048, value=default_size[1], step=8, label="Height",
                                               elem_id="img2img_height")
                with create(gr.Row):
                    batch_count = create(gr.Slider, 1, 100, value=1, step=1, label="Batch count",
                                                    elem_id="img2img_batch_count")
                    batch_size = create(gr.Slider, 1, 8, value=1, step=1, label="Batch size",
                                                   elem_id="img2img_batch_size")
                cfg = create(gr.Slider, 1, 30, value=7, step=0.5, label="CFG Scale", elem_id="img2img_cfg_scale")
                denoising = create(gr.Slider, 0, 1, value=0.75, step=0.01, label="Denoising strength",
                                              elem_id="img2img_denoising_strength")
                seed = create(gr.Number, label="Seed", value=-1, precision=0, elem_id="img2img_seed")
                with create(gr.Group, elem_id="img2img_script_container"):
                    script_inputs = scripts.scripts_img2img.setup_ui()
            with create(gr.Column):
                panel = create_output_panel("img2img")

        hidden = {"queue": False, "api_visibility": "undocumented"}
        for tab, name in ((tab_plain, "img2img"), (tab_sketch, "Sketch"), (tab_inpaint, "Inpaint"),
                          (tab_upload, "Inpaint upload")):
            tab.select(lambda name=name: (name, gr.Group(visible=name in INPAINT_MODES)), inputs=[],
                       outputs=[mode, inpaint_controls], show_progress="hidden", **hidden)
        inputs = [mode, init_img, sketch, inpaint, upload_img, upload_mask, prompt, negative, sampler, scheduler,
                  steps, cfg, denoising, seed, width, height, batch_count, batch_size, resize_mode, mask_blur,
                  mask_mode, inpainting_fill, inpaint_area, padding]
        outputs = panel.result_outputs
        handler = scripts.with_script_parameters(generate, len(script_inputs))
        generate_button.click(handler, inputs=inputs + script_inputs, outputs=outputs, api_name="img2img")
        prompt.submit(handler, inputs=inputs + script_inputs, outputs=outputs, api_visibility="undocumented")
        for box, counter, count in ((prompt, prompt_tokens, token_counter),
                                    (negative, negative_tokens, negative_token_counter)):
            box.change(count, inputs=[box, steps], outputs=[counter], queue=False, show_progress="hidden",
                       api_visibility="undocumented")
        presets_ui.wire(preset_hint, preset_apply, prompt, steps, cfg, sampler, scheduler)
        interrupt.click(interrupt_own_job, inputs=[], outputs=[], **hidden)
        skip.click(skip_own_job, inputs=[], outputs=[], **hidden)
    return {"mode": mode, "mode_tabs": mode_tabs, "init_img": init_img, "inpaint": inpaint, "prompt": prompt,
            "negative_prompt": negative, "sampler_name": sampler, "scheduler": scheduler, "steps": steps,
            "cfg_scale": cfg, "seed": seed, "width": width, "height": height, "batch_size": batch_size,
            "denoising_strength": denoising, "inpaint_controls": inpaint_controls, "output_panel": panel}
