"""The result column of a generating tab (A1111's output panel): gallery, the selected image's infotext, and the
buttons under it — open folder, save, zip, send to img2img / inpaint / extras.

The send-to buttons are wired by modules/ui/__init__.py once every tab exists (`send_to_targets`)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from modules import images, shared
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


def save_files(gallery_value: list | None, infotexts: list[str] | None, index: int, make_zip: bool,
               save_dir: str, selected_only: bool = True) -> list[str]:
    """A1111's Save / Zip buttons: write the selected image (or all) with its infotext into `save_dir`, log a row
    per image to `save_dir/../log.csv`, and for Zip also pack them into one archive; returns the files to offer for
    download."""
    if not gallery_value:
        raise gr.Error("Nothing to save: generate an image first.")
    infotexts = infotexts or []
    indices = [index] if selected_only and 0 <= index < len(gallery_value) else range(len(gallery_value))
    os.makedirs(save_dir, exist_ok=True)
    saved: list[str] = []
    log_path = os.path.join(os.path.dirname(save_dir.rstrip("/")) or save_dir, "log.csv")
    new_log = not os.path.exists(log_path)
    with open(log_path, "a", newline="", encoding="utf8") as log_file:
        writer = csv.writer(log_file)
        if new_log:
            writer.writerow(["prompt", "filename", "time", "parameters"])
        for i in indices:
            path = image_path(gallery_value[i])
            if path is None:
                continue
            info = infotexts[i] if i < len(infotexts) else ""
            with Image.open(path) as image:
                image.load()
                written, _ = images.save_image(image, save_dir, "", info=info, save_to_dirs=False,
                                               short_filename=True)
            saved.append(written)
            writer.writerow([info.split("\n", 1)[0], os.path.basename(written), time.strftime("%Y-%m-%d %H:%M:%S"),
                             info])
    if make_zip and saved:
        zip_path = os.path.join(save_dir, f"images-{time.strftime('%Y%m%d-%H%M%S')}.zip")
        with zipfile.ZipFile(zip_path, "w") as archive:
            for path in saved:
                archive.write(path, arcname=os.path.basename(path))
        return [zip_path, *saved]
    return saved


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
        save_dir = os.path.join(shared.cmd_opts.data_dir, shared.opts.outdir_save)
        return gr.File(value=save_files(value, texts, index, make_zip, save_dir), visible=True)

    save_button.click(save, inputs=[gallery, infotexts, selected], outputs=[files], show_progress="hidden",
                      api_visibility="undocumented")
    zip_button.click(lambda v, t, i: save(v, t, i, make_zip=True), inputs=[gallery, infotexts, selected],
                     outputs=[files], show_progress="hidden", api_visibility="undocumented")
    folder_button.click(lambda: open_folder(tabname), inputs=[], outputs=[], **hidden)
    return panel
