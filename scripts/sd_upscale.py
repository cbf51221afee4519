"""A1111's "SD upscale" (img2img): upscale the init image, then redraw it tile by tile with img2img.

The init image is enlarged by the scale factor with the chosen upscaler (A1111 rounds the size down to a multiple of
8; "None" keeps the image as it is), cut into tiles of the job's width×height that overlap by at least `overlap`
pixels (A1111's `split_grid`), every tile goes through img2img with the job's settings (batches of the job's batch
size; seeds go up by one per batch, as in A1111), and the tiles are put back with a linear blend over the overlap
(A1111's `combine_grid`). Batch count gives that many upscales, with seeds seed, seed+1, ...
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modules import processing, scripts, shared, upscaling
from modules.processing import JobError
from modules.sampling import rng

log = logging.getLogger("webui")


@dataclasses.dataclass
class Grid:
    """Tiles of an image (A1111's namedtuple): `tiles` is a list of rows [y, tile_h, [[x, tile_w, tile], ...]]."""

    tiles: list[list[Any]]
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """Cover `image` with tiles of tile_w×tile_h spread evenly so that neighbours share at least `overlap` pixels;
    the last row and column end at the image's edge (A1111's function)."""
    w, h = image.width, image.height
    non_overlap_width, non_overlap_height = tile_w - overlap, tile_h - overlap
    if non_overlap_width <= 0 or non_overlap_height <= 0:
        raise JobError(f"SD upscale: the tile overlap ({overlap}) must be smaller than the tile size "
                       f"({tile_w}x{tile_h})")
    cols = max(1, math.ceil((w - overlap) / non_overlap_width))
    rows = max(1, math.ceil((h - overlap) / non_overlap_height))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        row_images = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            row_images.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.tiles.append([y, tile_h, row_images])
    return grid


def _ramp(length: int, across: int, horizontal: bool) -> Image.Image:
    """A1111's blend mask: 0 → 255·(n-1)/n over `length` pixels, the same in every line."""
    ramp = (np.arange(length, dtype=np.float32) * 255 / length).astype(np.uint8)
    array = np.repeat(ramp[None, :], across, axis=0) if horizontal else np.repeat(ramp[:, None], across, axis=1)
    return Image.fromarray(array, "L")


def combine_grid(grid: Grid) -> Image.Image:
    """Put the tiles back (A1111's function): each tile's first `overlap` columns (rows, for a row of tiles) are
    blended linearly over what is already there, the rest is pasted as is."""
    overlap = grid.overlap
    mask_w = _ramp(overlap, grid.tile_h, horizontal=True) if overlap > 0 else None
    mask_h = _ramp(overlap, grid.image_w, horizontal=False) if overlap > 0 else None
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        combined_row = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                combined_row.paste(tile, (0, 0))
                continue
            if mask_w is not None:
                combined_row.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w)
            combined_row.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0:
            combined.paste(combined_row, (0, 0))
            continue
        if mask_h is not None:
            combined.paste(combined_row.crop((0, 0, combined_row.width, overlap)), (0, y), mask=mask_h)
        combined.paste(combined_row.crop((0, overlap, combined_row.width, h)), (0, y + overlap))
    return combined


def upscaled_size(image: Image.Image, scale: float) -> tuple[int, int]:
    """A1111's `Upscaler.upscale` target: the scaled size rounded down to a multiple of 8."""
    return max(8, int(image.width * scale // 8 * 8)), max(8, int(image.height * scale // 8 * 8))


def _flatten(image: Image.Image) -> Image.Image:
    """Transparent pixels become white (A1111's `images.flatten` with its default background)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _upscaler_name(value: Any) -> str:
    """The radio's value: an index into the upscaler list (A1111's type="index"), or a name (API clients)."""
    names = upscaling.upscaler_names()
    if isinstance(value, str) and not value.strip().isdigit():
        for name in names:
            if name.lower() == value.strip().lower():
                return name
        raise JobError(f"SD upscale: unknown upscaler {value!r}. Valid upscalers: {', '.join(names)}")
    index = int(value or 0)
    if not 0 <= index < len(names):
        raise JobError(f"SD upscale: upscaler index {index} out of range (0..{len(names) - 1})")
    return names[index]


class Script(scripts.Script):
    def title(self) -> str:
        return "SD upscale"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[gr.components.Component]:
        info = gr.HTML("<p style=\"margin-bottom:0.75em\">Will upscale the image by the selected scale factor; "
                       "use width and height sliders to set tile size</p>")
        overlap = gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64,
                            elem_id=self.elem_id("overlap"))
        scale_factor = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0,
                                 elem_id=self.elem_id("scale_factor"))
        names = upscaling.upscaler_names()
        upscaler_index = gr.Radio(label="Upscaler", choices=names, value=names[0], type="index",
                                  elem_id=self.elem_id("upscaler_index"))
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p: processing.Job, _: Any = None, overlap: float = 64, upscaler_index: Any = 0,
            scale_factor: float = 2.0) -> processing.Processed:
        if not p.init_images:
            raise JobError("SD upscale needs an init image")
        overlap = int(overlap or 0)
        upscaler = _upscaler_name(upscaler_index)
        p.seed = rng.fixed_seed(p.seed)
        p.subseed = rng.fixed_seed(p.subseed)
        seed = p.seed
        extra = {**p.extra_generation_params, "SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
        p.extra_generation_params = extra

        init_img = _flatten(p.init_images[0])
        if upscaler != "None":
            img = upscaling.upscale(init_img, upscaler, size=upscaled_size(init_img, float(scale_factor)))
        else:  # A1111: no upscaler means no resize either; the tiles then cover the image as it is
            img = init_img
        if img.width < p.width or img.height < p.height:
            # A1111 would crop tiles beyond the image and paste them back at negative offsets: a broken image
            raise JobError(f"SD upscale: the upscaled image ({img.width}x{img.height}) is smaller than a tile "
                           f"({p.width}x{p.height}); lower width/height (the tile size) or raise the scale factor")
        grid = split_grid(img, tile_w=p.width, tile_h=p.height, overlap=overlap)
        work = [tile[2] for _, _, row in grid.tiles for tile in row]
        batch_size = max(1, p.batch_size)
        batch_count = math.ceil(len(work) / batch_size)
        state = shared.state
        total = batch_count * p.n_iter
        log.info("SD upscaling will process a total of %d images tiled as %dx%d per upscale in a total of %d "
                 "batches.", len(work), len(grid.tiles[0][2]), len(grid.tiles), total)

        ctx = p.context if p.context is not None else shared.context()
        results: list[processing.Processed] = []
        images: list[Image.Image] = []
        infotexts: list[str] = []
        saved: list[str] = []
        for n in range(p.n_iter):
            start_seed = seed + n
            batch_seed = start_seed
            info = None
            work_results: list[Image.Image] = []
            for i in range(batch_count):
                if state.interrupted:
                    break
                state.job = f"Batch {i + 1 + n * batch_count} out of {total}"
                chunk = work[i * batch_size:(i + 1) * batch_size]
                # the tiles are exactly width×height, and a mask drawn for the whole image means nothing per tile
                job = dataclasses.replace(p, init_images=chunk, batch_size=len(chunk), n_iter=1, seed=batch_seed,
                                          image_mask=None, do_not_save_samples=True, do_not_save_grid=True,
                                          extra_generation_params=dict(extra), comments=list(p.comments),
                                          override_settings=dict(p.override_settings))
                processed = processing.process_images(job)
                results.append(processed)
                if info is None and processed.infotexts:
                    info = processed.infotexts[processed.index_of_first_image]
                batch_seed = processed.seed + 1
                work_results += processed.images[processed.index_of_first_image:]
            if state.interrupted and not work_results:
                break
            index = 0
            for _, _, row in grid.tiles:
                for tile in row:  # a tile that was never made (interrupted) stays black, as in A1111
                    tile[2] = work_results[index] if index < len(work_results) else Image.new("RGB",
                                                                                              (p.width, p.height))
                    index += 1
            combined = combine_grid(grid)
            images.append(combined)
            infotexts.append(info or "")
            if ctx.opts.samples_save and not p.do_not_save_samples:
                saved.append(processing.save_output_image(
                    combined, p, ctx, info or "", seed=start_seed,
                    prompt=results[-1].all_prompts[0] if results else str(p.prompt)))
            if state.interrupted:
                break

        if not results:
            raise JobError("SD upscale: interrupted before any tile was made")
        merged = scripts.merge_processed(p, results)
        count = len(images)
        return dataclasses.replace(
            merged, images=images, infotexts=infotexts, index_of_first_image=0, saved_files=saved, seed=seed,
            all_seeds=[seed + n for n in range(count)], all_subseeds=[p.subseed + n for n in range(count)],
            all_prompts=[merged.all_prompts[0]] * count, all_negative_prompts=[merged.all_negative_prompts[0]] * count)
