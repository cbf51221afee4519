"""The Extras tab (A1111's): upscale a single image, a batch of uploaded images, or a folder on the server.

The work is `shared.run_extras_job`, an item of the job runner's queue, so it never overlaps a generation.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
from PIL import Image

from modules import postprocessing, shared, upscaling
from modules.ui.common import USER_ERRORS, session_of
from modules.ui.components import create

log = logging.getLogger("webui")


def upscaler_names() -> list[str]:
    return upscaling.upscaler_names()


def refresh_upscalers(current_1: str | None, current_2: str | None) -> tuple[gr.Dropdown, gr.Dropdown]:
    """Scan the upscaler folders again; a selection that no longer exists falls back to "None"."""
    names = [info.name for info in upscaling.refresh_upscalers()]
    return tuple(gr.Dropdown(choices=names, value=value if value in names else "None")  # type: ignore[return-value]
                 for value in (current_1, current_2))


def build_request(extras_mode: int, image: Image.Image | None, image_batch: list | None, input_dir: str,
                  output_dir: str, show_extras_results: bool, resize_mode: int, upscaling_resize: float,
                  max_side_length: float, upscaling_resize_w: float, upscaling_resize_h: float, upscaling_crop: bool,
                  extras_upscaler_1: str, extras_upscaler_2: str, extras_upscaler_2_visibility: float
                  ) -> postprocessing.ExtrasRequest:
    """The core request from the tab's values (sliders arrive as floats; whole numbers are written like A1111's)."""
    from modules.infotext import as_ui_number

    return postprocessing.ExtrasRequest(
        extras_mode=int(extras_mode or 0), image=image, image_folder=list(image_batch or []),
        input_dir=(input_dir or "").strip(), output_dir=(output_dir or "").strip(),
        show_extras_results=bool(show_extras_results), resize_mode=int(resize_mode or 0),
        upscaling_resize=as_ui_number(float(upscaling_resize)), max_side_length=int(max_side_length or 0),
        upscaling_resize_w=int(upscaling_resize_w), upscaling_resize_h=int(upscaling_resize_h),
        upscaling_crop=bool(upscaling_crop), extras_upscaler_1=extras_upscaler_1 or "None",
        extras_upscaler_2=extras_upscaler_2 or "None",
        extras_upscaler_2_visibility=float(extras_upscaler_2_visibility or 0))


def run_extras(extras_mode: int, image: Image.Image | None, image_batch: list | None, input_dir: str,
               output_dir: str, show_extras_results: bool, resize_mode: int, upscaling_resize: float,
               max_side_length: float, upscaling_resize_w: float, upscaling_resize_h: float, upscaling_crop: bool,
               extras_upscaler_1: str, extras_upscaler_2: str, extras_upscaler_2_visibility: float,
               request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
               ) -> tuple[list[Image.Image], str]:
    """The Generate button: (result images for the gallery, infotext HTML). Errors become a message in the page."""
    if extras_mode == 2 and getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise gr.Error("Batch from Directory is disabled on this server (--hide-ui-dir-config).")
    try:
        job = build_request(extras_mode, image, image_batch, input_dir, output_dir, show_extras_results,
                            resize_mode, upscaling_resize, max_side_length, upscaling_resize_w, upscaling_resize_h,
                            upscaling_crop, extras_upscaler_1, extras_upscaler_2, extras_upscaler_2_visibility)
        progress(0, desc="Upscaling")
        result = shared.run_extras_job(job, save_output=True, owner=session_of(request))
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from e
    except gr.Error:
        raise
    except Exception as e:  # e.g. out of memory: report it in the page; the server keeps running
        log.exception("Extras failed")
        raise gr.Error(f"Extras failed: {type(e).__name__}: {e}") from e
    return result.images, result.html_info


def _constant(value: int):
    def constant() -> int:
        return value
    return constant


def create_tab() -> dict[str, gr.components.Component]:
    """Build the tab; returns its components by field name. "image" (elem_id `extras_image`) is the input that other
    tabs' "Send to extras" fill; "tabs" is the Single/Batch/Directory gr.Tabs (select "single_image" with it).
    Its blocks are made through `create`, so extensions' component callbacks see them (A1111's elem_ids)."""
    names = upscaler_names()
    with create(gr.Tab, "Extras", id="extras", elem_id="tab_extras"):
        extras_mode = create(gr.State, 0)
        resize_mode = create(gr.State, 0)
        with create(gr.Row, equal_height=False):
            with create(gr.Column, variant="compact"):
                with create(gr.Tabs, elem_id="mode_extras") as mode_tabs:
                    with create(gr.Tab, "Single Image", id="single_image", elem_id="extras_single_tab") as tab_single:
                        image = create(gr.Image, label="Source", type="pil", image_mode=None,
                                       sources=["upload", "clipboard"], elem_id="extras_image", height=400)
                    with create(gr.Tab, "Batch Process", id="batch_process",
                                elem_id="extras_batch_process_tab") as tab_batch:
                        image_batch = create(gr.File, label="Batch Process", file_count="multiple", type="filepath",
                                             elem_id="extras_image_batch")
                    with create(gr.Tab, "Batch from Directory", id="batch_from_directory",
                                elem_id="extras_batch_directory_tab") as tab_directory:
                        input_dir = create(gr.Textbox, label="Input directory", elem_id="extras_batch_input_dir",
                                           placeholder="A directory on the same machine where the server is "
                                                       "running.")
                        output_dir = create(gr.Textbox, label="Output directory", elem_id="extras_batch_output_dir",
                                            placeholder="Leave blank to save images to the default path.")
                        show_extras_results = create(gr.Checkbox, label="Show result images", value=True,
                                                     elem_id="extras_show_extras_results")
                submit = create(gr.Button, "Generate", variant="primary", elem_id="extras_generate")
                with create(gr.Group, elem_id="extras_upscale"):
                    with create(gr.Tabs, elem_id="extras_resize_mode"):
                        with create(gr.Tab, "Scale by", id="scale_by", elem_id="extras_scale_by_tab") as tab_scale_by:
                            upscaling_resize = create(gr.Slider, 1.0, 8.0, value=4, step=0.05, label="Resize",
                                                      elem_id="extras_upscaling_resize")
                            max_side_length = create(gr.Number, label="Max side length", value=0, precision=0,
                                                     elem_id="extras_upscale_max_side_length", info="0 = no limit")
                        with create(gr.Tab, "Scale to", id="scale_to", elem_id="extras_scale_to_tab") as tab_scale_to:
                            with create(gr.Row):
                                upscaling_resize_w = create(gr.Slider, 64, 8192, value=512, step=8, label="Width",
                                                            elem_id="extras_upscaling_resize_w")
                                switch = create(gr.Button, "⇅", elem_id="upscaling_res_switch_btn", scale=0,
                                                min_width=40, elem_classes=["tool"])
                                upscaling_resize_h = create(gr.Slider, 64, 8192, value=512, step=8, label="Height",
                                                            elem_id="extras_upscaling_resize_h")
                            upscaling_crop = create(gr.Checkbox, label="Crop to fit", value=True,
                                                    elem_id="extras_upscaling_crop")
                    with create(gr.Row):
                        extras_upscaler_1 = create(gr.Dropdown, label="Upscaler 1", choices=names, value=names[0],
                                                   elem_id="extras_upscaler_1", scale=4)
                        refresh = create(gr.Button, "🔄", elem_id="extras_refresh_upscalers", scale=0, min_width=40,
                                         elem_classes=["tool"])
                    with create(gr.Row):
                        extras_upscaler_2 = create(gr.Dropdown, label="Upscaler 2", choices=names, value=names[0],
                                                   elem_id="extras_upscaler_2", scale=2)
                        extras_upscaler_2_visibility = create(gr.Slider, 0.0, 1.0, value=0.0, step=0.001,
                                                              label="Upscaler 2 visibility", scale=2,
                                                              elem_id="extras_upscaler_2_visibility")
            with create(gr.Column):
                gallery = create(gr.Gallery, label="Result", elem_id="extras_gallery", columns=4, format="png",
                                 interactive=False)
                html_info = create(gr.HTML, elem_id="html_info_extras")

        hidden = {"queue": False, "show_progress": "hidden", "api_visibility": "undocumented"}
        for number, tab in enumerate((tab_single, tab_batch, tab_directory)):
            tab.select(_constant(number), inputs=[], outputs=[extras_mode], **hidden)
        tab_scale_by.select(_constant(0), inputs=[], outputs=[resize_mode], **hidden)
        tab_scale_to.select(_constant(1), inputs=[], outputs=[resize_mode], **hidden)
        switch.click(lambda w, h: (h, w), inputs=[upscaling_resize_w, upscaling_resize_h],
                     outputs=[upscaling_resize_w, upscaling_resize_h], **hidden)
        refresh.click(refresh_upscalers, inputs=[extras_upscaler_1, extras_upscaler_2],
                      outputs=[extras_upscaler_1, extras_upscaler_2], show_progress="hidden",
                      api_visibility="undocumented")
        inputs = [extras_mode, image, image_batch, input_dir, output_dir, show_extras_results, resize_mode,
                  upscaling_resize, max_side_length, upscaling_resize_w, upscaling_resize_h, upscaling_crop,
                  extras_upscaler_1, extras_upscaler_2, extras_upscaler_2_visibility]
        submit.click(run_extras, inputs=inputs, outputs=[gallery, html_info], api_name="extras")

    names_of_inputs = ("extras_mode", "image", "image_batch", "input_dir", "output_dir", "show_extras_results",
                       "resize_mode", "upscaling_resize", "max_side_length", "upscaling_resize_w",
                       "upscaling_resize_h", "upscaling_crop", "extras_upscaler_1", "extras_upscaler_2",
                       "extras_upscaler_2_visibility")
    fields: dict[str, Any] = dict(zip(names_of_inputs, inputs, strict=True))
    fields.update(tabs=mode_tabs, gallery=gallery, html_info=html_info, generate=submit)
    return fields
