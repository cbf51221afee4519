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
- `export_for_4chan` / `img_downscale_threshold` / `target_side_length`, A1111 settings this WebUI's settings page
  does not list: honoured when the settings object has them (an A1111 config.json), off otherwise;
- the `before_image_saved` hook (may replace the image or edit the text items) and `image_saved` (the final path).

Files are written to a hidden temporary file and published atomically; numbered names are never shared or
overwritten (`images.publish_file`). Whether to save at all (`samples_save`, `grid_save`,
`save_images_before_highres_fix`) is the caller's decision.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules import hooks, images

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
    # A1111 settings that are not on this WebUI's settings page; off unless the settings object has them
    export_for_4chan: bool = False
    img_downscale_threshold: float = 4.0  # MB
    target_side_length: float = 4000.0    # px

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
    if image.width > image.height:
        size = round(target), round(image.height * target / image.width)
    else:
        size = round(image.width * target / image.height), round(target)
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
    namegen = images.FilenameGenerator(p, seed, prompt, image, basename=basename, now=now, fields=filename_fields)

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
        images.save_image_with_geninfo(what, embedded_info, temp_path, "." + as_extension, embedded_items,
                                       pnginfo_section_name, settings.jpeg_quality, settings.webp_lossless)

    replace = settings.save_images_replace_action != ADD_NUMBER_SUFFIX
    path = images.publish_file(folder, write, stem, extension, numbered=numbered, basename=basename,
                               replace_existing=replace)
    image.already_saved_as = path  # A1111's UI reads it to avoid saving the same image twice
    path_stem = os.path.splitext(path)[0]
    saved = SavedImage(path)

    if settings.export_for_4chan and extension not in ("jpg", "jpeg"):
        oversize = max(image.size) > settings.target_side_length
        if oversize or os.path.getsize(path) > settings.img_downscale_threshold * 1024 * 1024:
            small = _downscale_for_export(image, settings.target_side_length)
            try:
                saved.downscaled_path = images.publish_file(
                    folder, lambda temp: write(temp, small, "jpg"), os.path.basename(path_stem), "jpg",
                    numbered=False, replace_existing=replace)
            except (OSError, ValueError):  # the main image is saved; a failed extra copy is only reported
                log.exception("Could not save the downscaled JPEG of %s", path)

    if settings.save_txt and info is not None:
        saved.txt_path = f"{path_stem}.txt"
        images.write_text_atomically(saved.txt_path, f"{info}\n")

    params.filename = path
    hooks.fire("image_saved", params)
    return saved
