"""A1111's `modules.img2img`: `img2img(id_task, request, mode, prompt, ...)` in A1111 v1.10's positional form (the
img2img tab's inputs, then the scripts' values), and `process_batch` (every image of a folder through the job, which
ControlNet and ADetailer wrap). Over this WebUI's job and queue. An adapter: nothing in the core uses it."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from modules import infotext_utils, scripts, shared
from modules.infotext import parse_generation_parameters, read_info_from_image
from modules.processing import Job, Processed, process_images
from modules.processing_helpers import create_binary_mask
from modules.txt2img import answer, attach_scripts, named_args

# A1111 v1.10's img2img inputs before the scripts' values
IMG2IMG_ARGS = ("mode", "prompt", "negative_prompt", "prompt_styles", "init_img", "sketch", "init_img_with_mask",
                "inpaint_color_sketch", "inpaint_color_sketch_orig", "init_img_inpaint", "init_mask_inpaint",
                "mask_blur", "mask_alpha", "inpainting_fill", "n_iter", "batch_size", "cfg_scale", "image_cfg_scale",
                "denoising_strength", "selected_scale_tab", "height", "width", "scale_by", "resize_mode",
                "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert", "img2img_batch_input_dir",
                "img2img_batch_output_dir", "img2img_batch_inpaint_mask_dir", "override_settings_texts",
                "img2img_batch_use_png_info", "img2img_batch_png_info_props", "img2img_batch_png_info_dir",
                "img2img_batch_source_type", "img2img_batch_upload")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _editor_image(value: Any) -> Image.Image | None:
    """A PIL image from what an image input holds: an image, or A1111's {"image", "mask"} dict."""
    if isinstance(value, dict):
        value = value.get("image") or value.get("background")
    return value if isinstance(value, Image.Image) else None


def _image_and_mask(mode: int, values: dict[str, Any]) -> tuple[Image.Image | None, Image.Image | None]:
    """A1111's modes: 0 img2img, 1 sketch, 2 inpaint (mask drawn as alpha), 3 inpaint sketch, 4 inpaint upload."""
    if mode == 0:
        return _editor_image(values["init_img"]), None
    if mode == 1:
        return _editor_image(values["sketch"]), None
    if mode == 2:
        drawn = values["init_img_with_mask"]
        image = _editor_image(drawn)
        mask = drawn.get("mask") if isinstance(drawn, dict) else None
        return image, create_binary_mask(mask) if isinstance(mask, Image.Image) else None
    if mode == 3:
        image = _editor_image(values["inpaint_color_sketch"])
        original = _editor_image(values["inpaint_color_sketch_orig"]) or image
        if image is None or original is None:
            return image, None
        difference = np.abs(np.asarray(image.convert("RGB"), dtype=np.int16)
                            - np.asarray(original.convert("RGB").resize(image.size), dtype=np.int16))
        return image, Image.fromarray((difference.max(axis=2) > 0).astype(np.uint8) * 255)  # painted pixels
    if mode == 4:
        return _editor_image(values["init_img_inpaint"]), _editor_image(values["init_mask_inpaint"])
    if mode == 5:  # batch: the images come from the folder
        return None, None
    raise ValueError(f"img2img mode must be 0-5, got {mode}")


def img2img_create_processing(id_task: str, request: Any, *args: Any) -> tuple[Job, dict[str, Any]]:
    values, script_args = named_args(IMG2IMG_ARGS, args)
    mode = int(values["mode"])
    image, mask = _image_and_mask(mode, values)
    width, height = int(values["width"]), int(values["height"])
    if int(values["selected_scale_tab"] or 0) == 1 and image is not None:  # "Resize by"
        scale = float(values["scale_by"])
        width, height = int(image.width * scale) // 8 * 8, int(image.height * scale) // 8 * 8
    fields: dict[str, Any] = dict(
        prompt=values["prompt"] or "", negative_prompt=values["negative_prompt"] or "",
        styles=list(values["prompt_styles"] or []), n_iter=int(values["n_iter"]),
        batch_size=int(values["batch_size"]), cfg_scale=float(values["cfg_scale"]),
        denoising_strength=float(values["denoising_strength"]), width=width, height=height,
        resize_mode=int(values["resize_mode"]), init_images=[image.convert("RGB")] if image is not None else [],
        override_settings=infotext_utils.create_override_settings_dict(values["override_settings_texts"]))
    if mask is not None:
        fields.update(image_mask=mask, mask_blur=int(values["mask_blur"]),
                      inpainting_fill=int(values["inpainting_fill"]),
                      inpaint_full_res=bool(values["inpaint_full_res"]),
                      inpaint_full_res_padding=int(values["inpaint_full_res_padding"]),
                      inpainting_mask_invert=int(values["inpainting_mask_invert"]))
    job = Job(**fields)
    attach_scripts(job, scripts.scripts_img2img, script_args)
    return job, values


def img2img(id_task: str, request: Any, *args: Any) -> tuple[list[Any], str, str, str]:
    """Run the job the img2img inputs describe (mode 5: every image of the batch input folder)."""
    job, values = img2img_create_processing(id_task, request, *args)
    if int(values["mode"]) == 5:
        job.do_not_save_grid = True
        outcome: dict[str, Processed | None] = {}

        def work() -> None:
            job.context = shared.context()
            try:
                outcome["last"] = process_batch(
                    job, values["img2img_batch_input_dir"], values["img2img_batch_output_dir"],
                    values["img2img_batch_inpaint_mask_dir"], list(job.script_args or []),
                    use_png_info=bool(values["img2img_batch_use_png_info"]),
                    png_info_props=values["img2img_batch_png_info_props"],
                    png_info_dir=values["img2img_batch_png_info_dir"])
            finally:
                job.context = None

        shared.runner.run("img2img", work, label="img2img batch")
        processed = outcome.get("last")
        return ([], "", "", "") if processed is None else answer(processed)
    if not job.init_images:
        raise ValueError("img2img: no init image for this mode")
    from modules.txt2img import _task_id

    return answer(shared.run_job(job, "img2img", task_id=_task_id(id_task)))


def _folder_images(folder: str) -> list[str]:
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, name)))


def _mask_for(image_path: str, mask_dir: str | None) -> Image.Image | None:
    if not mask_dir:
        return None
    stem = os.path.splitext(os.path.basename(image_path))[0]
    for path in _folder_images(mask_dir):
        if os.path.splitext(os.path.basename(path))[0] == stem:
            return Image.open(path).convert("L")
    return None


def process_batch(p: Job, input: str, output_dir: str, inpaint_mask_dir: str | None, args: list[Any],
                  to_scale: bool = False, scale_by: float = 1.0, use_png_info: bool = False,
                  png_info_props: list[str] | None = None, png_info_dir: str | None = None
                  ) -> Processed | None:  # A1111's parameter names (`input` included)
    """Every image of the folder `input` through `p` (its mask from `inpaint_mask_dir` by file stem; with
    `use_png_info`, the prompt and the chosen infotext fields from the image's own parameters), saved into
    `output_dir` under the image's own name (the job's usual output folder when empty). Runs in the caller's turn
    of the queue (call it from a job). Returns the last image's result."""
    files = _folder_images(input)
    if not files:
        raise ValueError(f"No images in the batch input folder {input}")
    base_prompt, base_negative = p.prompt, p.negative_prompt
    shared.state.job_count = len(files) * max(1, int(p.n_iter))
    last: Processed | None = None
    for number, path in enumerate(files):
        if shared.state.interrupted:
            break
        shared.state.job = f"{number + 1} out of {len(files)}"
        try:
            image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        except (OSError, UnidentifiedImageError):
            continue
        if to_scale:
            p.width, p.height = int(image.width * scale_by), int(image.height * scale_by)
        p.init_images = [image] * max(1, int(p.batch_size))
        mask = _mask_for(path, inpaint_mask_dir)
        if mask is not None:
            p.image_mask = mask
        p.prompt, p.negative_prompt = base_prompt, base_negative
        if use_png_info:
            _apply_png_info(p, path, png_info_dir, png_info_props or [])
        if output_dir:
            p.outpath_samples = output_dir
            p.override_settings = {**dict(p.override_settings or {}), "save_to_dirs": False,
                                   "samples_filename_pattern": os.path.splitext(os.path.basename(path))[0]}
        processed = p.scripts.run(p, *args) if p.scripts is not None else None
        last = processed if processed is not None else process_images(p)
    return last


def _apply_png_info(p: Job, image_path: str, info_dir: str | None, props: list[str]) -> None:
    source = os.path.join(info_dir, os.path.basename(image_path)) if info_dir else image_path
    try:
        with Image.open(source) as info_image:
            geninfo, _ = read_info_from_image(info_image)
    except OSError:
        return
    params = parse_generation_parameters(geninfo or "")
    if "Prompt" in params:
        p.prompt = f"{p.prompt} {params['Prompt']}".strip() if p.prompt else params["Prompt"]
    if "Negative prompt" in params:
        p.negative_prompt = f"{p.negative_prompt} {params['Negative prompt']}".strip() \
            if p.negative_prompt else params["Negative prompt"]
    fields = {"Seed": ("seed", int), "Steps": ("steps", int), "CFG scale": ("cfg_scale", float),
              "Sampler": ("sampler_name", str), "Denoising strength": ("denoising_strength", float)}
    for prop in props:
        if prop in fields and prop in params:
            name, cast = fields[prop]
            setattr(p, name, cast(params[prop]))
