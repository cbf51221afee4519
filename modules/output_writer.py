"""The one output writer: every image the WebUI saves goes through `save_output_image`.

txt2img and img2img results and grids (`processing.save_output_image`, which scripts use too), Extras results
(`postprocessing`) and A1111's `images.save_image` (extensions, the Save button) all call it, so one set of rules
applies the saving settings, as A1111 v1.10.1's `images.save_image` does:

- folder: `<folder>/<directories_filename_pattern>` when `save_to_dirs` (`grid_save_to_dirs` for grids; never for
  Extras, which save "without a prompt");
- name: `{n:05}-{samples_filename_pattern or [seed]}{suffix}` (`[seed]-[prompt_spaces]` when `save_to_dirs` is
  off), grids `grid-{n:04}` plus that pattern only with `grid_extended_filename`; no number with
  `save_images_add_number` off (then an existing file is replaced, or numbered "-1", "-2" with A1111's
  `save_images_replace_action` = "Add number suffix");
- format: `samples_format` / `grid_format` (JPEG/WebP too large for the format fall back to PNG), `jpeg_quality`
  for JPEG, WebP and AVIF, `webp_lossless`;
- metadata, with `enable_pnginfo`: PNG text chunks (the infotext under its section name plus the other items), EXIF
  UserComment for JPEG/WebP/AVIF; `save_txt` writes the infotext to `<same name>.txt` (whatever enable_pnginfo says,
  as A1111);
- `export_for_4chan`: when the saved file is larger than `img_downscale_threshold` MB or a side is longer than
  `target_side_length`, a JPEG beside it (the longer side cut to the limit when too long); a main file that is a
  `.jpg` is itself replaced by that JPEG (or it goes to "-1.jpg" with "Add number suffix"), as in A1111;
- `directories_max_prompt_words` for `[prompt_words]`;
- the `before_image_saved` hook (may replace the image or edit the text items) and `image_saved` (the final path).

Files are written to a hidden temporary file and published atomically; numbered names are never shared or
overwritten (`image_files.publish_file`). Whether to save at all (`samples_save`, `grid_save`,
`save_images_before_highres_fix`) is the caller's decision.

Two more of A1111's savers live here, so they follow the same rules: `save_init_images` (img2img's
`save_init_img`, called by processing before sampling) and `save_gallery` (the Save / Zip buttons under a gallery:
`save_selected_only`, `use_save_to_dirs_for_ui`, `save_write_log_csv`, `grid_zip_filename_pattern`).

The writer never reads global state: callers pass their settings. `configure(opts)` registers the application's
settings object once at start, for A1111's entry points that are called without settings (`images.save_image`,
`images.image_grid`, `images.FilenameGenerator` from extensions).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import logging
import os
import threading
import types
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules import hooks, image_files, infotext

log = logging.getLogger("webui")

REPLACE = "Replace"                       # A1111's save_images_replace_action choices
ADD_NUMBER_SUFFIX = "Add number suffix"

# Pillow's limits: past these sizes A1111 saves PNG instead.
MAX_JPEG_SIDE = 65535
MAX_WEBP_SIDE = 16383


@dataclass(frozen=True)
class SaveSettings:
    """The settings that decide how an image is saved (A1111's names and defaults)."""

    samples_format: str = "png"
    grid_format: str = "png"
    samples_filename_pattern: str = ""
    directories_filename_pattern: str = "[date]"
    save_to_dirs: bool = True
    grid_save_to_dirs: bool = True
    save_images_add_number: bool = True
    grid_extended_filename: bool = False
    enable_pnginfo: bool = True
    save_txt: bool = False
    jpeg_quality: int = 80
    webp_lossless: bool = False
    save_images_replace_action: str = REPLACE
    export_for_4chan: bool = True
    img_downscale_threshold: float = 4.0  # MB
    target_side_length: float = 4000.0    # px
    directories_max_prompt_words: int = 8

    @classmethod
    def from_opts(cls, opts: Any) -> SaveSettings:
        """Read the fields from a settings object (`shared.opts`, `Options`, or anything with those attributes);
        missing ones keep their defaults."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            value = getattr(opts, item.name, None)
            if value is None:
                continue
            # bool first: it is an int subclass, and "quality 80" must not become True
            kind = type(item.default)
            values[item.name] = bool(value) if kind is bool else kind(value)
        return cls(**values)


_app_opts: Any = None


def configure(opts: Any) -> None:
    """Register the application's settings object (`shared.opts`, called once by `shared.initialize`): A1111's
    entry points that take no settings (`images.save_image`, `images.image_grid`, ...) read it at each call, so a
    changed setting applies at once, and a job's thread sees that job's override_settings."""
    global _app_opts
    _app_opts = opts


def app_opts() -> Any:
    """The registered settings object (None before `configure`)."""
    return _app_opts


def app_settings() -> SaveSettings:
    """The saving settings of the registered settings object, or A1111's defaults when none is registered."""
    return SaveSettings() if _app_opts is None else SaveSettings.from_opts(_app_opts)


@dataclass
class SavedImage:
    """Where an image went: the file, the `.txt` beside it (save_txt), the downscaled JPEG (export_for_4chan)."""

    path: str
    txt_path: str | None = None
    downscaled_path: str | None = None


def output_folder(opts: Any, kind: str, *, grid: bool = False, data_dir: str = ".") -> str:
    """A1111's folder for a kind of job ("txt2img", "img2img", "extras"): `outdir_samples` / `outdir_grids` when
    set, else `outdir_<kind>_samples` / `outdir_<kind>_grids`; relative folders are inside `data_dir`."""
    if grid:
        folder = getattr(opts, "outdir_grids", "") or getattr(opts, f"outdir_{kind}_grids", "")
    else:
        folder = getattr(opts, "outdir_samples", "") or getattr(opts, f"outdir_{kind}_samples", "")
    return os.path.join(data_dir, folder or "outputs")


def _samples_pattern(settings: SaveSettings, p: Any) -> str:
    # A1111 reads a job's override first: scripts may save after process_images restored the settings
    overrides = getattr(p, "override_settings", None)
    if isinstance(overrides, Mapping) and overrides.get("samples_filename_pattern") is not None:
        return str(overrides["samples_filename_pattern"])
    return settings.samples_filename_pattern or ("[seed]" if settings.save_to_dirs else "[seed]-[prompt_spaces]")


def _format_fallback(image: Image.Image, extension: str) -> str:
    too_big_for_jpeg = max(image.size) > MAX_JPEG_SIDE and extension in ("jpg", "jpeg")
    if too_big_for_jpeg or (max(image.size) > MAX_WEBP_SIDE and extension == "webp"):
        log.info("Image of %dx%d is too large for %s; saving it as PNG", *image.size, extension)
        return "png"
    return extension


def _downscale_for_export(image: Image.Image, target: float) -> Image.Image:
    """A1111's export_for_4chan resize: the longer side to `target`, aspect kept."""
    if image.width <= target and image.height <= target:
        return image
    # at least one pixel: A1111 fails on a 16384x1 strip (rounds to 0)
    if image.width > image.height:
        size = round(target), max(1, round(image.height * target / image.width))
    else:
        size = max(1, round(image.width * target / image.height)), round(target)
    try:
        return image.resize(size, Image.Resampling.LANCZOS)
    except (ValueError, OSError):  # modes LANCZOS cannot resample (I;16...)
        return image.resize(size)


def save_output_image(
    image: Image.Image,
    *,
    opts: Any,
    folder: str,
    seed: int | None = None,
    prompt: str | None = None,
    info: str | None = None,
    p: Any = None,
    grid: bool = False,
    suffix: str = "",
    basename: str = "",
    existing_pnginfo: Mapping[str, object] | None = None,
    pnginfo_section_name: str = "parameters",
    extension: str | None = None,
    forced_filename: str | None = None,
    short_filename: bool | None = None,
    no_prompt: bool = False,
    save_to_dirs: bool | None = None,
    filename_fields: Mapping[str, object] | None = None,
    now: datetime.datetime | None = None,
) -> SavedImage:
    """Save `image` into `folder` under the saving settings `opts` (a settings object or `SaveSettings`).

    `info` is the infotext (stored under `pnginfo_section_name`), `existing_pnginfo` further text items; `p` the
    job (file name patterns, callbacks), `filename_fields` pattern values the job does not carry (model name and
    hash, job timestamp). `grid` picks the grid settings and the "grid" basename; `forced_filename` gives the exact
    name (Extras' original names); `short_filename` (default: grids unless `grid_extended_filename`) leaves the
    pattern out; `no_prompt` keeps the image out of the date folders; `extension` overrides the format setting.
    """
    settings = opts if isinstance(opts, SaveSettings) else SaveSettings.from_opts(opts)
    if grid and basename == "":
        basename = "grid"
    if short_filename is None:
        short_filename = grid and not settings.grid_extended_filename
    if save_to_dirs is None:
        save_to_dirs = settings.grid_save_to_dirs if grid else settings.save_to_dirs and not no_prompt
    extension = _format_fallback(image, (extension or (settings.grid_format if grid else settings.samples_format))
                                 .lstrip(".").lower())
    namegen = image_files.FilenameGenerator(p, seed, prompt, image, basename=basename, now=now, fields=filename_fields,
                                       max_prompt_words=settings.directories_max_prompt_words)

    base_folder = folder
    if save_to_dirs:
        subfolder = namegen.apply(settings.directories_filename_pattern or "[prompt_words]")
        folder = os.path.join(folder, subfolder.lstrip(" ").rstrip("\\ /"))
    os.makedirs(folder, exist_ok=True)

    if forced_filename is not None:
        stem, numbered = forced_filename, False
    else:
        decoration = "" if short_filename or seed is None else namegen.apply(_samples_pattern(settings, p))
        decoration += suffix
        numbered = settings.save_images_add_number or decoration == ""
        stem = f"-{decoration}" if numbered and decoration else decoration

    pnginfo = dict(existing_pnginfo or {})
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    # the numbered name is only chosen while publishing, so listeners get the output folder the caller named
    # (without the date subfolder, as before); image_saved gets the file's path
    params = hooks.ImageSaveParams(image, p, base_folder, pnginfo)
    hooks.fire("before_image_saved", params)
    image = params.image
    pnginfo = dict(params.pnginfo or {})
    info = pnginfo.get(pnginfo_section_name)
    info = None if info is None else str(info)
    embedded_info = info if settings.enable_pnginfo else None
    embedded_items = pnginfo if settings.enable_pnginfo else None

    def write(temp_path: str, what: Image.Image = image, as_extension: str = extension) -> None:
        image_files.save_image_with_geninfo(what, embedded_info, temp_path, "." + as_extension, embedded_items,
                                       pnginfo_section_name, settings.jpeg_quality, settings.webp_lossless)

    replace = settings.save_images_replace_action != ADD_NUMBER_SUFFIX
    path = image_files.publish_file(folder, write, stem, extension, numbered=numbered, basename=basename,
                               replace_existing=replace)
    image.already_saved_as = path  # A1111's UI reads it to avoid saving the same image twice
    path_stem = os.path.splitext(path)[0]
    saved = SavedImage(path)

    oversize = max(image.size) > settings.target_side_length
    if settings.export_for_4chan and (
            oversize or os.path.getsize(path) > settings.img_downscale_threshold * 1024 * 1024):
        # A1111 writes `<same name>.jpg` whatever the main format: a .jpg main file is replaced by this copy
        # (with "Add number suffix" it goes to "-1.jpg"); only a too long side is resized
        try:
            small = _downscale_for_export(image, settings.target_side_length) if oversize else image
            saved.downscaled_path = image_files.publish_file(
                folder, lambda temp: write(temp, small, "jpg"), os.path.basename(path_stem), "jpg",
                numbered=False, replace_existing=replace)
        except (OSError, ValueError):  # the main image is saved; a failed extra copy is only reported
            log.exception("Could not save the downscaled JPEG of %s", path)

    if settings.save_txt and info is not None:
        saved.txt_path = f"{path_stem}.txt"
        image_files.write_text_atomically(saved.txt_path, f"{info}\n")

    params.filename = path
    hooks.fire("image_saved", params)
    return saved


# --- img2img's init images (A1111's save_init_img) --------------------------------------------------------------

def save_init_images(p: Any, opts: Any, data_dir: str = ".") -> list[str]:
    """A1111's `save_init_img`: with the setting on, each of the job's `init_images` goes to `outdir_init_images`
    as `<md5 of its pixels>.png` (no date folder; the same picture again replaces its file), carrying its own text
    items; the job gets `init_img_hash` and the infotext's "Init image hash". Returns the paths written."""
    if not getattr(opts, "save_init_img", False):
        return []
    folder = os.path.join(data_dir, getattr(opts, "outdir_init_images", "") or os.path.join("outputs", "init-images"))
    written = []
    for image in getattr(p, "init_images", None) or []:
        digest = hashlib.md5(image.tobytes(), usedforsecurity=False).hexdigest()
        # A1111 passes `img.info` as the text items; only text can be a PNG text chunk (not an ICC profile)
        items = {k: v for k, v in (image.info or {}).items() if isinstance(k, str) and isinstance(v, str)}
        saved = save_output_image(image, opts=opts, folder=folder, existing_pnginfo=items, extension="png",
                                  forced_filename=digest, save_to_dirs=False)
        written.append(saved.path)
        p.init_img_hash = digest
        p.extra_generation_params["Init image hash"] = digest
    return written


# --- the Save / Zip buttons (A1111's ui_common.save_files) ------------------------------------------------------

LOG_FIELDS = ["prompt", "seed", "width", "height", "sampler_name", "cfg_scale", "steps", "filename", "negative_prompt",
              "sd_model_name", "sd_model_hash"]  # A1111's log.csv columns
_log_lock = threading.Lock()  # two Save clicks at once append whole rows


def _job_from_infotext(params: Mapping[str, object]) -> types.SimpleNamespace:
    """A job-like object from a parsed infotext, the fields A1111's Save button takes from the page's generation
    data (for file name patterns, the before/after saving hooks and log.csv)."""
    return types.SimpleNamespace(
        prompt=params.get("Prompt"), negative_prompt=params.get("Negative prompt"), seed=params.get("Seed"),
        width=params.get("Size-1"), height=params.get("Size-2"), sampler_name=params.get("Sampler"),
        scheduler=params.get("Schedule type"), cfg_scale=params.get("CFG scale"), steps=params.get("Steps"),
        sd_model_name=params.get("Model"), sd_model_hash=params.get("Model hash"),
        clip_skip=params.get("Clip skip"), denoising_strength=params.get("Denoising strength"))


def _update_log_header(log_path: str) -> None:
    """A1111's `update_logfile`: a log.csv of an older column set gets today's header, its rows padded."""
    try:
        with open(log_path, encoding="utf8", newline="") as file:
            rows = list(csv.reader(file))
    except FileNotFoundError:
        return
    if not rows or len(rows[0]) == len(LOG_FIELDS):
        return
    rows[0] = list(LOG_FIELDS)
    for row in rows[1:]:
        row.extend([""] * (len(LOG_FIELDS) - len(row)))
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    image_files.write_text_atomically(log_path, buffer.getvalue())


def _append_log_row(log_path: str, row: list[object]) -> None:
    with _log_lock:
        _update_log_header(log_path)
        with open(log_path, "a", encoding="utf8", newline="") as file:
            writer = csv.writer(file)
            if file.tell() == 0:
                writer.writerow(LOG_FIELDS)
            writer.writerow(row)


def _load(item: Image.Image | str) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    with Image.open(item) as opened:
        opened.load()
        return opened.copy()


def save_gallery(
    items: Sequence[Image.Image | str | None],
    infotexts: Sequence[str],
    *,
    opts: Any,
    folder: str,
    index: int = -1,
    index_of_first_image: int = 0,
    make_zip: bool = False,
    now: datetime.datetime | None = None,
) -> list[str]:
    """A1111's Save / Zip buttons: save gallery images (PIL images or files; None is skipped) into `folder`
    (`outdir_save`) under the settings `opts`; returns the files to offer for download (the archive first).

    - which: the selected image (`index`) when `save_selected_only` and it is not a grid (grids come before
      `index_of_first_image`), else all of them;
    - how: `samples_format`, numbered names with the `samples_filename_pattern` (seed and prompt from each image's
      infotext, which is also embedded), the `.txt` beside with `save_txt`, into a `directories_filename_pattern`
      folder only with `use_save_to_dirs_for_ui`;
    - `save_write_log_csv`: one row for the first saved image in `<folder>/log.csv` (A1111's columns);
    - `make_zip`: an archive named by `grid_zip_filename_pattern` (default `[datetime]_[[model_name]]_[seed]-
      [seed_last]`) holding the saved files.
    """
    settings = SaveSettings.from_opts(opts)
    chosen = range(len(items))
    if 0 <= index < len(items) and getattr(opts, "save_selected_only", True) and index >= index_of_first_image:
        chosen = range(index, index + 1)
    to_dirs = bool(getattr(opts, "use_save_to_dirs_for_ui", False))
    os.makedirs(folder, exist_ok=True)

    files: list[str] = []       # what the download offers: each image, then its .txt
    names: list[str] = []       # the same, relative to `folder` (log.csv and the archive)
    parsed: list[Mapping[str, object]] = []
    image = None
    for i in chosen:
        if items[i] is None:
            continue
        image = _load(items[i])
        text = infotexts[i] if i < len(infotexts) else ""
        params = infotext.parse_generation_parameters(text) if text else {}
        job = _job_from_infotext(params)
        job.batch_index = i - 1  # as A1111 sets it (the grid comes first)
        saved = save_output_image(image, opts=settings, folder=folder, seed=params.get("Seed"),
                                  prompt=params.get("Prompt"), info=text or None, p=job,
                                  extension=settings.samples_format, short_filename=False, save_to_dirs=to_dirs,
                                  now=now)
        parsed.append(params)
        for path in (saved.path, saved.txt_path):
            if path is not None:
                files.append(path)
                names.append(os.path.relpath(path, folder))
    if not files:
        return []

    first = _job_from_infotext(parsed[0])
    if getattr(opts, "save_write_log_csv", True):
        _append_log_row(os.path.join(folder, "log.csv"), [
            first.prompt, first.seed, first.width, first.height, first.sampler_name, first.cfg_scale, first.steps,
            names[0], first.negative_prompt, first.sd_model_name, first.sd_model_hash])

    if make_zip:
        # A1111 names the archive from the first image's job, with all saved images' seeds; the gallery's images
        # stand for the job's batch
        first.all_seeds = [params.get("Seed") for params in parsed]
        first.batch_size = max(1, len(items) - index_of_first_image)
        namegen = image_files.FilenameGenerator(first, parsed[0].get("Seed"), parsed[0].get("Prompt"), image, zip=True,
                                           now=now, max_prompt_words=settings.directories_max_prompt_words)
        pattern = getattr(opts, "grid_zip_filename_pattern", "") or "[datetime]_[[model_name]]_[seed]-[seed_last]"
        stem = image_files.sanitize_filename_part(namegen.apply(pattern), replace_spaces=False) or "images"

        def write_zip(temp_path: str) -> None:
            with zipfile.ZipFile(temp_path, "w") as archive:
                for path, name in zip(files, names):
                    archive.write(path, arcname=name)

        files.insert(0, image_files.publish_file(folder, write_zip, stem, "zip", numbered=False, replace_existing=True))
    return files
