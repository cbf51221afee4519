"""A1111's Extras operation: upscale one image, a batch of images, or a folder, and save the results.

`run_extras(request, opts, data_dir, ...)` is the core (no Gradio, no queue); `shared.run_extras_job(request, ...)`
runs it for the application as an item of the job runner's queue, which is what the Extras tab and the
`/sdapi/v1/extra-single-image` / `extra-batch-images` routes call. Face restoration is not available.

Output files follow A1111 v1.10.1's `run_postprocessing`: `outputs/extras-images/00000.png` (no date folder), or the
source file's name for batches (A1111's `use_original_name_batch`, on by default), both followed by the upscaler
names with `use_upscaler_name_as_suffix` (`00000--Lanczos.png`, as A1111). The postprocess infotext
("Postprocess upscale by: 2, Postprocess upscaler: Lanczos") goes into the PNG `extras` and `postprocessing` text
chunks, and the source image's own `parameters` (and other text chunks) are kept.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from modules import devices, hooks, images, infotext, output_writer, upscaling

log = logging.getLogger("webui")

EXTRAS_MODES = ("Single Image", "Batch Process", "Batch from Directory")
RESIZE_MODES = ("Scale by", "Scale to")


class ExtrasError(ValueError):
    """The extras request cannot run as given; the message says why (shown in the page / API error)."""


ImageInput = Image.Image | str | os.PathLike | tuple[str, Image.Image]


@dataclass
class ExtrasRequest:
    """A1111's `run_extras` arguments (field names as in A1111; the API's upscaler_1/2 map to extras_upscaler_1/2).

    `image_folder` (Batch Process) holds PIL images, image file paths, or (name, PIL image) pairs; a name (a file's
    stem) is used for the output file name, as A1111 does for uploaded files.
    """

    extras_mode: int = 0                       # 0 single image, 1 batch of images, 2 batch from directory
    image: Image.Image | str | os.PathLike | None = None
    image_folder: Sequence[ImageInput] = field(default_factory=list)
    input_dir: str = ""
    output_dir: str = ""                       # mode 2 only; empty: the extras output folder
    show_extras_results: bool = True           # mode 2: also return the images (else only save them)
    resize_mode: int = 0                       # 0 scale by `upscaling_resize`, 1 scale to w×h
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True                # scale to: crop to the exact w×h (else keep the aspect ratio)
    extras_upscaler_1: str = "None"
    extras_upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0  # blend of upscaler 2's result over upscaler 1's
    max_side_length: int = 0                   # scale by: limit the longer side (0 = no limit)
    upscale_first: bool = False                # accepted for API compatibility (it orders face restoration)
    gfpgan_visibility: float = 0.0             # accepted for API compatibility; face restoration is not available
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0


@dataclass
class ExtrasResult:
    images: list[Image.Image]
    infotext: str                      # the postprocess infotext of the last image
    html_info: str                     # what the page shows (A1111's html_info of the API response)
    saved_files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in the input folder that are not images


# --- inputs -----------------------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file with its metadata, upright (EXIF orientation applied, as A1111's `images.read`)."""
    name = os.path.basename(os.fspath(path))
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)  # a copy, so the file is closed when this returns
    except FileNotFoundError as e:
        raise ExtrasError(f"{name}: file not found") from e
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ExtrasError(f"{name}: not an image file that can be read ({e})") from e
    return image


def _name_of(path: str | os.PathLike) -> str:
    """A file's stem, made safe as an output file name (no folders: a name can never point outside the output)."""
    stem = os.path.splitext(os.path.basename(os.fspath(path).replace("\\", "/")))[0]
    return images.sanitize_filename_part(stem, replace_spaces=False) or ""


def _batch_inputs(items: Sequence[ImageInput]) -> Iterator[tuple[Image.Image | str, str | None]]:
    for item in items:
        if isinstance(item, Image.Image):
            yield item, None
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Image.Image):
            yield item[1], _name_of(item[0]) if item[0] else None
        elif isinstance(item, str | os.PathLike):
            yield os.fspath(item), _name_of(item)
        elif hasattr(item, "name") and isinstance(item.name, str):  # an uploaded-file object (Gradio's FileData)
            yield item.name, _name_of(getattr(item, "orig_name", None) or item.name)
        else:
            raise ExtrasError(f"Batch item of type {type(item).__name__} is not an image or an image file path")


def _directory_files(input_dir: str) -> list[str]:
    if not input_dir:
        raise ExtrasError("Input directory not selected")
    if not os.path.isdir(input_dir):
        raise ExtrasError(f"Input directory not found: {input_dir}")
    names = sorted(n for n in os.listdir(input_dir) if not n.startswith("."))
    return [os.path.join(input_dir, n) for n in names if os.path.isfile(os.path.join(input_dir, n))]


# --- the upscale step (A1111's scripts/postprocessing_upscale.py) -----------------------------------------------

def limit_size_by_one_dimension(width: float, height: float, limit: int) -> tuple[int, int]:
    """Scale (width, height) down so the longer side is `limit` (A1111's `limit_size_by_one_dimention`)."""
    if height > width and height > limit:
        width, height = limit * width // height, limit
    elif width > limit:
        width, height = limit, limit * height // width
    return int(width), int(height)


def _upscale_once(image: Image.Image, info: dict[str, object], name: str, request: ExtrasRequest,
                  registry: upscaling.UpscalerRegistry) -> Image.Image:
    if request.resize_mode == 1:
        target_w, target_h = int(request.upscaling_resize_w), int(request.upscaling_resize_h)
        info["Postprocess upscale to"] = f"{target_w}x{target_h}"
        crop = request.upscaling_crop
        by = max(target_w / image.width, target_h / image.height)
        # the scaled image covers the target (the side that sets `by` exactly); crop trims the other side
        size = (max(target_w, round(image.width * by)), max(target_h, round(image.height * by)))
    else:
        by = request.upscaling_resize
        info["Postprocess upscale by"] = by
        crop, size = False, upscaling.target_size(image.size, by, None)
        limit = int(request.max_side_length or 0)
        if limit and max(image.size) * by > limit:
            size = limit_size_by_one_dimension(image.width * by, image.height * by, limit)
            info["Max side length"] = limit
    result = registry.upscale(image, name, size=size)
    if crop:
        left, top = (result.width - target_w) // 2, (result.height - target_h) // 2
        result = result.crop((left, top, left + target_w, top + target_h))
        info["Postprocess crop to"] = f"{result.width}x{result.height}"
    return result


def upscale_image(image: Image.Image, request: ExtrasRequest, registry: upscaling.UpscalerRegistry | None = None
                  ) -> tuple[Image.Image, dict[str, object]]:
    """(upscaled image, infotext items) for one image: upscaler 1, blended with upscaler 2 at its visibility.

    Upscaler 1 "None" leaves the image as it is (A1111)."""
    registry = registry or upscaling.registry()
    info: dict[str, object] = {}
    name_1 = request.extras_upscaler_1 or "None"
    if name_1 == "None":
        return image, info
    result = _upscale_once(image, info, name_1, request, registry)
    info["Postprocess upscaler"] = name_1
    name_2 = request.extras_upscaler_2 or "None"
    visibility = float(request.extras_upscaler_2_visibility or 0)
    if name_2 != "None" and visibility > 0:
        second = _upscale_once(image, info, name_2, request, registry)
        if second.mode != result.mode:
            second = second.convert(result.mode)
        result = Image.blend(result, second, visibility)
        info["Postprocess upscaler 2"] = name_2
    return result, info


def upscaler_suffix(info: dict[str, object], request: ExtrasRequest) -> str:
    """A1111's `use_upscaler_name_as_suffix` name tags: "-<upscaler 1>", then "-<upscaler 2> <visibility>" when
    upscaler 2 was blended in; "" when nothing was upscaled."""
    tags = []
    if "Postprocess upscaler" in info:
        tags.append(str(info["Postprocess upscaler"]))
    if "Postprocess upscaler 2" in info:
        tags.append(f"{info['Postprocess upscaler 2']} {request.extras_upscaler_2_visibility}")
    # a tag becomes part of a file name: no folder separators or other characters a file name cannot hold
    return "".join(f"-{images.sanitize_filename_part(tag, replace_spaces=False)}" for tag in tags)


def validate(request: ExtrasRequest, registry: upscaling.UpscalerRegistry) -> None:
    if request.extras_mode not in range(len(EXTRAS_MODES)):
        raise ExtrasError(f"extras_mode must be 0 (single image), 1 (batch) or 2 (directory), got "
                          f"{request.extras_mode}")
    if request.resize_mode not in range(len(RESIZE_MODES)):
        raise ExtrasError(f"resize_mode must be 0 (scale by) or 1 (scale to), got {request.resize_mode}")
    if request.resize_mode == 0 and not 0 < float(request.upscaling_resize) <= 16:
        raise ExtrasError(f"upscaling_resize must be above 0 and at most 16, got {request.upscaling_resize}")
    if int(request.max_side_length or 0) < 0:
        raise ExtrasError(f"max_side_length must be 0 (no limit) or more, got {request.max_side_length}")
    if request.resize_mode == 1:
        for label, value in (("upscaling_resize_w", request.upscaling_resize_w),
                             ("upscaling_resize_h", request.upscaling_resize_h)):
            if not 1 <= int(value) <= 16384:
                raise ExtrasError(f"{label} must be between 1 and 16384, got {value}")
    if not 0 <= float(request.extras_upscaler_2_visibility or 0) <= 1:
        raise ExtrasError(f"extras_upscaler_2_visibility must be between 0 and 1, got "
                          f"{request.extras_upscaler_2_visibility}")
    for name in (request.extras_upscaler_1, request.extras_upscaler_2):
        registry.find(name or "None")  # ValueError listing the valid names


# --- the operation ----------------------------------------------------------------------------------------------

def plaintext_to_html(text: str) -> str:
    return '<div class="infotext">' + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</div>"


def _text_items(items: dict[str, object]) -> dict[str, str]:
    """The PNG text items worth carrying over (binary items such as an ICC profile are not text chunks)."""
    return {k: v for k, v in items.items() if isinstance(k, str) and isinstance(v, str)}


def run_extras(request: ExtrasRequest, opts: Any, data_dir: str, state: Any = None, save_output: bool = True,
               registry: upscaling.UpscalerRegistry | None = None) -> ExtrasResult:
    """Upscale the request's images; save them (when `save_output`) with A1111 names and metadata.

    `opts` is the settings object (samples_format, enable_pnginfo, outdir_samples/outdir_extras_samples, ...);
    relative output folders are relative to `data_dir`. `state` (optional) gets progress and is checked for
    interrupt/skip between images. Raises ExtrasError/ValueError for bad input, CheckpointLoadError for a model
    file that cannot be loaded.
    """
    registry = registry or upscaling.registry()
    validate(request, registry)
    skipped: list[str] = []
    if request.extras_mode == 1:
        if not request.image_folder:
            raise ExtrasError("No images selected for the batch")
        inputs = list(_batch_inputs(request.image_folder))
    elif request.extras_mode == 2:
        inputs = [(path, _name_of(path)) for path in _directory_files(request.input_dir)]
        if not inputs:
            raise ExtrasError(f"No files in the input directory {request.input_dir}")
    else:
        if request.image is None:
            raise ExtrasError("No image selected")
        inputs = [(request.image if isinstance(request.image, Image.Image) else os.fspath(request.image), None)]

    if request.extras_mode == 2 and request.output_dir:
        outpath = os.path.join(data_dir, request.output_dir)
        if os.path.realpath(outpath) == os.path.realpath(request.input_dir):
            raise ExtrasError("The output directory is the input directory: the results would replace the "
                              "originals. Choose another output directory.")
    else:
        outpath = output_writer.output_folder(opts, "extras", data_dir=data_dir)

    outputs: list[Image.Image] = []
    saved: list[str] = []
    text = ""
    if state is not None:
        state.job_count = len(inputs)
    for number, (source, name) in enumerate(inputs):
        if state is not None:
            if state.interrupted:
                break
            state.job_no = number
            state.textinfo = name or ""
            state.skipped = False
        if isinstance(source, str):
            try:
                image = read_image(source)
            except ExtrasError as e:
                if request.extras_mode != 2:
                    raise
                # A1111 skips the files of a folder that are not images; say which ones
                log.info("Extras: skipping %s (%s)", source, e)
                skipped.append(os.path.basename(source))
                continue
        else:
            image = source
        if image.mode not in ("RGBA", "RGB"):
            image = image.convert("RGB")

        parameters, existing = infotext.read_info_from_image(image)
        existing = _text_items(existing)
        if parameters:
            existing["parameters"] = parameters

        result, info = upscale_image(image, request, registry)
        if hooks.active("extras_image"):  # extensions' postprocessing scripts (A1111's scripts_postprocessing)
            params = hooks.ExtrasImageParams(result, info, name, request)
            hooks.fire("extras_image", params)
            result = params.image
        if state is not None and state.skipped:
            continue
        text = infotext.format_params_line(info)
        if result is image:
            result = image.copy()
        result.info = {**existing, "postprocessing": text} if opts.enable_pnginfo else {}

        if save_output:
            # the one output writer, as for generated images: samples_format, jpeg_quality, webp_lossless,
            # enable_pnginfo, save_txt and the image-saved hooks; no date folder and no seed in the name (A1111)
            suffix = upscaler_suffix(info, request) if getattr(opts, "use_upscaler_name_as_suffix", False) else ""
            forced = name + suffix if name and getattr(opts, "use_original_name_batch", True) else None
            written = output_writer.save_output_image(
                result, opts=opts, folder=outpath, info=text, existing_pnginfo={**existing, "postprocessing": text},
                pnginfo_section_name="extras", forced_filename=forced, suffix=suffix, short_filename=True,
                no_prompt=True)
            saved.append(written.path)
        if request.extras_mode != 2 or request.show_extras_results:
            outputs.append(result)

    if request.extras_mode == 2 and not saved and not outputs and skipped:
        raise ExtrasError(f"No images in the input directory {request.input_dir} "
                          f"(not images: {', '.join(skipped)})")
    html_info = plaintext_to_html(text)
    if skipped:
        html_info += f'<p class="comment">Skipped (not images): {html.escape(", ".join(skipped))}</p>'
    devices.torch_gc()
    return ExtrasResult(outputs, text, html_info, saved, skipped)
