"""A1111's `modules.images`: building grids and `save_image`, the entry point extensions call. Naming and atomic
writing live in `modules.image_files` (re-exported here under A1111's names); what to save where, under which
settings, is decided by `modules.output_writer`, which `save_image` goes through."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageColor

from modules import hooks, upscaling
from modules.grid_annotations import GridAnnotation, draw_grid_annotations, get_font  # noqa: F401 (A1111's)
from modules.image_files import (  # noqa: F401,E402 (A1111's images.* names, for extensions)
    DEFAULT_DATETIME_FORMAT,
    INVALID_FILENAME_CHARS,
    MAX_FILENAME_PART_LENGTH,
    MAX_PROMPT_WORDS,
    get_next_sequence_number,
    publish_file,
    publish_without_overwrite,
    remove_stale_temporary_files,
    sanitize_filename_part,
    save_image_with_geninfo,
    write_text_atomically,
)
from modules.image_files import FilenameGenerator as _FilenameGenerator  # noqa: E402
from modules.infotext import read_info_from_image

__all__ = [
    "FilenameGenerator",
    "get_next_sequence_number",
    "flatten",
    "image_grid",
    "publish_file",
    "read_info_from_image",  # A1111 keeps it in images.py; extensions import it from here
    "resize_image",
    "sanitize_filename_part",
    "save_image",
    "save_image_with_geninfo",
    "write_text_atomically",
]

def _app_setting(name: str, default: Any) -> Any:
    """A setting of the application (registered with `output_writer.configure`), for A1111's entry points that
    extensions call without it; `default` (A1111's) when none is registered."""
    from modules import output_writer  # the writer builds on this module: imported when used

    value = getattr(output_writer.app_opts(), name, None)
    return default if value is None else value


# --- grids -----------------------------------------------------------------------------------------------------------


def grid_rows(image_count: int, batch_size: int = 1, n_rows: int = -1, prevent_empty_spots: bool = False) -> int:
    """Row count of A1111's `image_grid` for the `n_rows` setting (-1 auto, 0 = batch size, >0 fixed)."""
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif prevent_empty_spots:
        rows = math.floor(math.sqrt(image_count))
        while image_count % rows != 0:
            rows -= 1
    else:
        rows = round(math.sqrt(image_count))
    return max(1, min(rows, image_count))


def image_grid(
    imgs: list[Image.Image],
    batch_size: int = 1,
    rows: int | None = None,
    *,
    n_rows: int | None = None,
    prevent_empty_spots: bool | None = None,
    background_color: str | None = None,
) -> Image.Image:
    """Paste images into a grid, row by row, as A1111 does.

    Without `rows`, the row count follows the `n_rows` setting (-1: round(sqrt(n)), so 4 images give 2x2 and 3
    give 2 rows of 2 with one empty cell; with `prevent_empty_spots`, the largest row count up to sqrt(n) that
    divides n). Cells are as large as the largest image; smaller images are centred; empty cells keep the
    background colour. `n_rows`, `prevent_empty_spots` and `background_color` left out are the application's
    settings `n_rows`, `grid_prevent_empty_spots` and `grid_background_color` (A1111's image_grid reads them).

    Listeners of the `image_grid` hook (A1111's `on_image_grid`) see the images, columns and rows first and may
    change them; the grid is drawn from what they leave.
    """
    if not imgs:
        raise ValueError("image_grid needs at least one image")
    if rows is None:
        n_rows = int(_app_setting("n_rows", -1)) if n_rows is None else n_rows
        if prevent_empty_spots is None:
            prevent_empty_spots = bool(_app_setting("grid_prevent_empty_spots", False))
        rows = grid_rows(len(imgs), batch_size, n_rows, prevent_empty_spots)
    rows = min(rows, len(imgs))
    cols = math.ceil(len(imgs) / rows)

    params = hooks.ImageGridLoopParams(list(imgs), cols, rows)
    hooks.fire("image_grid", params)
    imgs, cols, rows = params.imgs, int(params.cols), int(params.rows)
    if not imgs or cols < 1 or rows < 1:
        raise ValueError(f"an image_grid listener left no grid to draw ({len(imgs)} images, {cols}x{rows})")

    cell_w = max(img.width for img in imgs)
    cell_h = max(img.height for img in imgs)
    background_color = background_color or str(_app_setting("grid_background_color", "#ffffff"))
    grid = Image.new("RGB", size=(cols * cell_w, rows * cell_h), color=ImageColor.getcolor(background_color, "RGB"))
    for i, img in enumerate(imgs):
        x_offset = (cell_w - img.width) // 2
        y_offset = (cell_h - img.height) // 2
        grid.paste(img, box=(i % cols * cell_w + x_offset, i // cols * cell_h + y_offset))
    return grid


# --- resizing ------------------------------------------------------------------------------------------------------

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


def _resize_with_upscaler(image: Image.Image, width: int, height: int, upscaler_name: str | None,
                          force_rgba: bool) -> Image.Image:
    """`image` at exactly width x height: enlarged with the named upscaler (a model or a built-in of
    `modules.upscaling`), Lanczos for shrinking, for "None", for masks and for RGBA (as A1111)."""
    if upscaler_name in (None, "None") or image.mode == "L" or force_rgba:
        return image.resize((width, height), LANCZOS)
    if max(width / image.width, height / image.height) > 1.0:
        image = upscaling.upscale(image.convert("RGB"), upscaler_name, size=(width, height))
    if image.size != (width, height):
        image = image.resize((width, height), LANCZOS)
    return image


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name: str | None = None,
                 force_RGBA: bool = False) -> Image.Image:  # noqa: N803 (A1111's keyword)
    """A1111's `images.resize_image`: `im` brought to width x height.

    - 0 "Just resize": stretched to the size.
    - 1 "Crop and resize": scaled to cover the size (aspect kept), centred, the overflow cut off.
    - 2 (and other values) "Resize and fill": scaled to fit inside, centred; the empty bands are filled by
      stretching the image's outer rows or columns.

    Enlarging goes through `upscaler_name` (default: the `upscaler_for_img2img` setting; an unknown name raises
    ValueError listing the valid ones)."""
    if upscaler_name is None:
        upscaler_name = _app_setting("upscaler_for_img2img", None)
    mode = "RGBA" if force_RGBA else "RGB"
    if resize_mode == 0:
        return _resize_with_upscaler(im, width, height, upscaler_name, force_RGBA)
    ratio, src_ratio = width / height, im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = _resize_with_upscaler(im, src_w, src_h, upscaler_name, force_RGBA)
        result = Image.new(mode, (width, height))
        result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return result
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = _resize_with_upscaler(im, src_w, src_h, upscaler_name, force_RGBA)
    result = Image.new(mode, (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            result.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            result.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                         box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            result.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            result.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                         box=(fill_width + src_w, 0))
    return result


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """An RGB image with the transparent parts of `img` replaced by `bgcolor` (e.g. "#ffffff")."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


# --- file names ------------------------------------------------------------------------------------------------------

class FilenameGenerator(_FilenameGenerator):
    """A1111's `images.FilenameGenerator`: `[prompt_words]` takes the application's directories_max_prompt_words
    unless given."""

    def __init__(self, *args: Any, max_prompt_words: int | None = None, **kwargs: Any) -> None:
        if max_prompt_words is None:
            max_prompt_words = int(_app_setting("directories_max_prompt_words", MAX_PROMPT_WORDS))
        super().__init__(*args, max_prompt_words=max_prompt_words, **kwargs)


def save_image(
    image: Image.Image,
    path: str,
    basename: str = "",
    seed: int | None = None,
    prompt: str | None = None,
    extension: str = "png",
    info: str | None = None,
    short_filename: bool | None = None,
    no_prompt: bool = False,
    grid: bool = False,
    pnginfo_section_name: str = "parameters",
    p: object | None = None,
    existing_info: Mapping[str, object] | None = None,
    forced_filename: str | None = None,
    suffix: str = "",
    save_to_dirs: bool | None = None,
    *,
    directories_filename_pattern: str | None = None,
    samples_filename_pattern: str | None = None,
    now: datetime.datetime | None = None,
    save_txt: bool | None = None,
    add_number: bool | None = None,
    replace_existing: bool | None = None,
    jpeg_quality: int | None = None,
    webp_lossless: bool | None = None,
    enable_pnginfo: bool | None = None,
) -> tuple[str, str | None]:
    """A1111's `images.save_image`; returns (image path, txt path).

    Extensions and scripts call it; it is the one output writer (`modules.output_writer`), so names, formats,
    metadata, callbacks and atomic publishing are those of generated images. Settings not given as arguments are
    the application's (registered with `output_writer.configure`; A1111's defaults before that), as A1111 reads
    `shared.opts`: `save_txt`, `enable_pnginfo`, `jpeg_quality`, `webp_lossless`, `export_for_4chan`,
    `save_images_add_number` (`add_number`), `save_images_replace_action` (`replace_existing`), the patterns.

    - Folder: `path/<directories_filename_pattern>` when `save_to_dirs`; None applies A1111's rule (the settings
      `save_to_dirs` / `grid_save_to_dirs`, never for `no_prompt` samples).
    - Name: `{n:05}-{pattern}{suffix}.{ext}` (pattern `samples_filename_pattern`, or `[seed]`; `[seed]-
      [prompt_spaces]` without folders); grids `grid-{n:04}{suffix}.{ext}`; `short_filename` (default: True for
      grids) or no seed drops the pattern; `add_number=False` drops the number. `forced_filename` gives exactly
      `<forced_filename>.<ext>`, replacing an existing file unless `replace_existing` is False ("-1", "-2", ...).
    - Format: `extension` (A1111 takes it from the caller, "png" by default, not from `samples_format`).
    - Metadata: `info` in the `pnginfo_section_name` PNG chunk (plus `existing_info` items), or EXIF UserComment;
      `save_txt` also writes `info` to `<same name>.txt`.
    """
    from modules import output_writer  # here: the writer builds on this module's names and publishing

    given: dict[str, object] = {
        "directories_filename_pattern": directories_filename_pattern,
        "samples_filename_pattern": samples_filename_pattern,
        "save_images_add_number": add_number,
        "save_txt": save_txt,
        "jpeg_quality": jpeg_quality,
        "webp_lossless": webp_lossless,
        "enable_pnginfo": enable_pnginfo,
        "save_images_replace_action": None if replace_existing is None else (
            output_writer.REPLACE if replace_existing else output_writer.ADD_NUMBER_SUFFIX),
    }
    settings = dataclasses.replace(output_writer.app_settings(), samples_format=extension, grid_format=extension,
                                   **{key: value for key, value in given.items() if value is not None})
    saved = output_writer.save_output_image(
        image, opts=settings, folder=path, seed=seed, prompt=prompt, info=info, p=p, grid=grid, suffix=suffix,
        basename=basename, existing_pnginfo=existing_info, pnginfo_section_name=pnginfo_section_name,
        forced_filename=forced_filename, short_filename=grid if short_filename is None else short_filename,
        no_prompt=no_prompt, save_to_dirs=save_to_dirs, now=now)
    return saved.path, saved.txt_path
