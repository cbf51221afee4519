"""The result column of a generating tab (A1111's output panel): gallery, the selected image's infotext, and the
buttons under it — open folder, save, zip, send to img2img / inpaint / extras.

The send-to buttons are wired by modules/ui/__init__.py once every tab exists (`send_to_targets`)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from modules import output_writer, shared
from modules.ui.components import create


@dataclass
class OutputPanel:
    tabname: str
    gallery: gr.Gallery
    infotext: gr.Textbox
    html_info: gr.HTML
    infotexts: gr.State        # one infotext per gallery image
    selected: gr.State         # index of the selected gallery image (-1: none)
    files: gr.File
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button

    @property
    def result_outputs(self) -> list:
        """What a generate handler yields into: see modules/ui/common.stream_job."""
        return [self.gallery, self.infotext, self.html_info, self.infotexts]


def image_path(item: object) -> str | None:
    """The file behind one gallery value item: (path, caption), a dict with a path, or a path."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("path") or (item.get("image") or {}).get("path")
    if hasattr(item, "path"):
        item = item.path
    return item if isinstance(item, str) else None


def selected_image(gallery_value: list | None, index: int) -> tuple[Image.Image | None, int]:
    """(image, its index) for the selected gallery item, or the first when none is selected."""
    if not gallery_value:
        return None, -1
    index = index if 0 <= index < len(gallery_value) else 0
    path = image_path(gallery_value[index])
    if path is None:
        return None, -1
    with Image.open(path) as image:
        image.load()
        return image.copy(), index


def output_folder(tabname: str) -> str:
    """The folder this tab's images go to (A1111: outdir_samples, else outdir_<tab>_samples)."""
    opts = shared.opts
    folder = opts.outdir_samples or getattr(opts, f"outdir_{tabname}_samples", "") or "outputs"
    return os.path.join(shared.cmd_opts.data_dir, folder)


def grid_count(gallery_value: list | None, infotexts: list[str] | None) -> int:
    """How many grids lead the gallery (A1111's index_of_first_image): 1 when the first image is a grid, which
    carries the first image's infotext and is larger than it; the page keeps no other record of it."""
    if not gallery_value or len(gallery_value) < 3 or not infotexts or len(infotexts) < 2:
        return 0
    if infotexts[0] != infotexts[1]:
        return 0
    first, second = image_path(gallery_value[0]), image_path(gallery_value[1])
    if first is None or second is None:
        return 0
    try:
        with Image.open(first) as grid, Image.open(second) as image:
            bigger = grid.width >= image.width and grid.height >= image.height and grid.size != image.size
    except OSError:
        return 0
    return 1 if bigger else 0


def save_files(gallery_value: list | None, infotexts: list[str] | None, index: int, make_zip: bool,
               save_dir: str | None = None, opts: Any = None) -> list[str]:
    """A1111's Save / Zip buttons, through the output writer (`output_writer.save_gallery`) with the settings `opts`
    (default: the application's): samples_format, jpeg_quality, webp_lossless, save_txt, enable_pnginfo,
    save_selected_only, use_save_to_dirs_for_ui, save_write_log_csv, grid_zip_filename_pattern. `save_dir`
    defaults to `outdir_save` in the data folder. Returns the files to offer for download."""
    if not gallery_value:
        raise gr.Error("Nothing to save: generate an image first.")
    opts = shared.opts if opts is None else opts
    if save_dir is None:
        save_dir = os.path.join(shared.cmd_opts.data_dir, opts.outdir_save)
    return output_writer.save_gallery([image_path(item) for item in gallery_value], infotexts or [], opts=opts,
                                      folder=save_dir, index=index,
                                      index_of_first_image=grid_count(gallery_value, infotexts), make_zip=make_zip)


def server_is_local() -> bool:
    args = shared.cmd_opts
    return not (args.share or args.listen or args.server_name or getattr(args, "hide_ui_dir_config", False))


def open_folder(tabname: str) -> None:
    """Open this tab's output folder in the desktop's file manager — only when the server is local (A1111 hides it
    with --hide-ui-dir-config; a server reachable from the network never opens folders on its host)."""
    if not server_is_local():
        raise gr.Error("Opening folders is only available when the server runs locally.")
    folder = output_folder(tabname)
    os.makedirs(folder, exist_ok=True)
    opener = {"win32": ["explorer"], "darwin": ["open"]}.get(sys.platform, ["xdg-open"])
    try:
        subprocess.Popen([*opener, folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as e:
        raise gr.Error(f"Could not open {folder}: {e}") from e
    create(gr.Info, f"Opened {folder}")


def create_output_panel(tabname: str) -> OutputPanel:
    gallery = create(gr.Gallery, label="Output", elem_id=f"{tabname}_gallery", columns=4, format="png", type="filepath")
    with create(gr.Row, elem_id=f"image_buttons_{tabname}", elem_classes=["image-buttons"]):
        folder_button = create(gr.Button, "📂", elem_id=f"{tabname}_open_folder", scale=0, min_width=40,
                                          elem_classes=["tool"], visible=server_is_local())
        save_button = create(gr.Button, "💾", elem_id=f"save_{tabname}", scale=0, min_width=40, elem_classes=["tool"])
        zip_button = create(gr.Button, "🗃️", elem_id=f"save_zip_{tabname}", scale=0, min_width=40,
                                       elem_classes=["tool"])
        send_to_img2img = create(gr.Button, "🖼️", elem_id=f"{tabname}_send_to_img2img", scale=0, min_width=40,
                                            elem_classes=["tool"])
        send_to_inpaint = create(gr.Button, "🎨️", elem_id=f"{tabname}_send_to_inpaint", scale=0, min_width=40,
                                            elem_classes=["tool"])
        send_to_extras = create(gr.Button, "📐", elem_id=f"{tabname}_send_to_extras", scale=0, min_width=40,
                                           elem_classes=["tool"])
    files = create(gr.File, label="Saved files", file_count="multiple", interactive=False, visible=False,
                            elem_id=f"download_files_{tabname}")
    infotext = create(gr.Textbox, label="Generation parameters", interactive=False, lines=3,
                                  elem_id=f"{tabname}_infotext")
    html_info = create(gr.HTML, elem_id=f"html_info_{tabname}")
    # A1111's hidden button of the output panel; extensions place their controls after it (after_component)
    create(gr.Button, visible=False, elem_id=f"{tabname}_generation_info_button")
    infotexts = gr.State([])
    selected = gr.State(-1)
    panel = OutputPanel(tabname, gallery, infotext, html_info, infotexts, selected, files, send_to_img2img,
                        send_to_inpaint, send_to_extras)

    def on_select(texts: list[str], event: gr.SelectData) -> tuple:
        index = int(event.index) if event is not None else -1
        text = texts[index] if 0 <= index < len(texts) else gr.skip()
        return index, text

    hidden = {"queue": False, "show_progress": "hidden", "api_visibility": "undocumented"}
    gallery.select(on_select, inputs=[infotexts], outputs=[selected, infotext], **hidden)
    # a new result resets the selection: the infotext shown is the job's first until an image is picked
    gallery.change(lambda: -1, inputs=[], outputs=[selected], **hidden)

    def save(value: list | None, texts: list[str], index: int, make_zip: bool = False) -> gr.File:
        return gr.File(value=save_files(value, texts, index, make_zip), visible=True)

    save_button.click(save, inputs=[gallery, infotexts, selected], outputs=[files], show_progress="hidden",
                      api_visibility="undocumented")
    zip_button.click(lambda v, t, i: save(v, t, i, make_zip=True), inputs=[gallery, infotexts, selected],
                     outputs=[files], show_progress="hidden", api_visibility="undocumented")
    folder_button.click(lambda: open_folder(tabname), inputs=[], outputs=[], **hidden)
    return panel
