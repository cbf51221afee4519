"""The built-in selectable scripts X/Y/Z plot, SD upscale and Loopback, run for real on the demo model through
`shared.run_job` with the tab's ScriptRunner attached (64×64 images, 2-3 steps, few cells)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import processing, scripts, upscaling
from modules.processing import Job, JobError, Processed

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}

# X/Y/Z plot's inputs, in A1111's order
X_TYPE, X_VALUES, Y_TYPE, Y_VALUES, Z_TYPE, Z_VALUES = 0, 1, 3, 4, 6, 7
DRAW_LEGEND, SUB_IMAGES, SUB_GRIDS, KEEP_SEEDS, MARGIN, CSV_MODE = 9, 10, 11, 12, 13, 14


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(_pixels(a), _pixels(b))


def _script(runner: scripts.ScriptRunner, title: str) -> scripts.Script:
    return runner.selectable_scripts[runner.titles.index(title)]


def _module(script: scripts.Script) -> ModuleType:
    return sys.modules[type(script).__module__]


def run_script(app: Any, runner: scripts.ScriptRunner, title: str, values: dict[int, Any], **fields: Any
               ) -> Processed:
    """Select `title` in the tab's Script dropdown, set some of its inputs (index within the script's slice), and run
    the job as the UI does: through shared.run_job with the runner attached."""
    script = _script(runner, title)
    args = runner.default_args()
    args[0] = runner.selectable_scripts.index(script) + 1
    for index, value in values.items():
        args[script.args_from + index] = value
    job = Job(**{**SMALL, "prompt": "a red circle", "seed": 3, **fields})
    runner.attach(job, args)
    return app.run_job(job)


def single(app: Any, **fields: Any) -> Image.Image:
    return app.run_job(Job(**{**SMALL, "prompt": "a red circle", "seed": 3, "do_not_save_samples": True,
                              **fields})).images[0]


def _init_image() -> Image.Image:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(220, 40, 40))
    return image


@pytest.fixture
def built_ins(app):
    """The app with only the repository's scripts loaded."""
    scripts.load_scripts(extension_dirs=[])
    return app


@pytest.fixture
def xyz_module() -> ModuleType:
    scripts.load_scripts(extension_dirs=[])
    return _module(_script(scripts.scripts_txt2img, "X/Y/Z plot"))


# --- listing ---------------------------------------------------------------------------------------------------

def test_scripts_are_listed_for_their_tabs(built_ins):
    txt2img, img2img = scripts.scripts_txt2img.titles, scripts.scripts_img2img.titles
    assert "X/Y/Z plot" in txt2img and "X/Y/Z plot" in img2img
    assert "SD upscale" in img2img and "SD upscale" not in txt2img
    assert "Loopback" in img2img and "Loopback" not in txt2img
    module = _module(_script(scripts.scripts_txt2img, "X/Y/Z plot"))
    txt_axes = [o.label for o in module.options_for(False)]
    img_axes = [o.label for o in module.options_for(True)]
    for label in ("Nothing", "Seed", "Steps", "CFG Scale", "Sampler", "Schedule type", "Checkpoint name",
                  "Prompt S/R", "Clip skip", "Denoising", "Size", "VAE"):
        assert label in txt_axes and label in img_axes
    assert "Hires steps" in txt_axes and "Hires steps" not in img_axes
    assert txt_axes.count("Sampler") == img_axes.count("Sampler") == 1


# --- X/Y/Z plot: value syntax ------------------------------------------------------------------------------------

def test_axis_value_syntax(xyz_module):
    m = xyz_module
    assert m.expand_int_values(["1-5"]) == [1, 2, 3, 4, 5]
    assert m.expand_int_values(["1-10 (+2)"]) == [1, 3, 5, 7, 9]
    assert m.expand_int_values(["10-1 (-3)"]) == [10, 7, 4, 1]
    assert m.expand_int_values(["10-5 (-3)"]) == [10, 7]  # A1111's wiki example
    assert m.expand_int_values(["3-1"]) == [3, 2, 1]
    assert m.expand_int_values(["1-3 [3]"]) == [1, 2, 3]
    assert m.expand_int_values(["1-10 [5]"]) == [1, 3, 5, 7, 10]  # evenly spaced, truncated
    assert m.expand_int_values(["-2-2"]) == [-2, -1, 0, 1, 2]
    assert m.expand_int_values(["7", "1-2", "-1"]) == ["7", 1, 2, "-1"]  # plain values are converted later
    assert m.expand_float_values(["1-3 (+0.5)"]) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert m.expand_float_values(["0-1 (+0.1)"])[-1] == 1.0 and len(m.expand_float_values(["0-1 (+0.1)"])) == 11
    assert m.expand_float_values(["1-0 (-0.25)"]) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert m.expand_float_values(["0.0-1.0 [6]"]) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert m.expand_float_values(["1.5-3.5"]) == [1.5, 2.5, 3.5]
    assert m.csv_string_to_list_strip('a, "b, c" ,d') == ["a", "b, c", "d"]
    assert m.csv_string_to_list_strip("") == []

    options = {o.label: o for o in m.options_for(False)}
    job = Job(prompt="a cat", negative_prompt="a dog")
    assert m.parse_axis(job, options["Steps"], "2, 4-8 (+3), 1-3 [2]") == [2, 4, 7, 1, 3]
    assert m.parse_axis(job, options["CFG Scale"], "7, 1-2 (+0.5)") == [7.0, 1.0, 1.5, 2.0]
    assert m.parse_axis(job, options["Sampler"], "Euler a, DPM++ 2M") == ["Euler a", "DPM++ 2M"]
    assert m.parse_axis(job, options["Size"], "64x96, 128 x 64") == ["64x96", "128 x 64"]
    assert m.parse_axis(job, options["Nothing"], "anything") == [0]
    for label, text, message in (("Steps", "2, two", "'two' is not a valid int"),
                                 ("CFG Scale", "1-5 (+0)", "step of 0"),
                                 ("Steps", " ", "no values"),
                                 ("Size", "64x", "WIDTHxHEIGHT"),
                                 ("Schedule type", "Karras, Bogus", "Bogus"),
                                 ("Prompt S/R", "bird, fish", "did not find 'bird'")):
        with pytest.raises(JobError, match=message):
            m.parse_axis(job, options[label], text)


# --- X/Y/Z plot: running -----------------------------------------------------------------------------------------

def test_xyz_two_axes_grid_and_cells_equal_single_runs(built_ins):
    runner = scripts.scripts_txt2img
    module = _module(_script(runner, "X/Y/Z plot"))
    margin = 6
    processed = run_script(built_ins, runner, "X/Y/Z plot", {
        X_TYPE: "Steps", X_VALUES: "2,3", Y_TYPE: "CFG Scale", Y_VALUES: "3, 7", SUB_IMAGES: True, MARGIN: margin})
    assert len(processed.images) == 5 and processed.index_of_first_image == 1
    grid, cells = processed.images[0], processed.images[1:]

    pad_left, pad_top = module.annotation_padding(64, 64, ["Steps: 2", "Steps: 3"],
                                                  ["CFG Scale: 3.0", "CFG Scale: 7.0"])
    assert pad_left == 64 * 3 // 4 and pad_top > 0  # A1111: row legends take 3/4 of a cell's width
    assert grid.size == (pad_left + 2 * 64 + margin, pad_top + 2 * 64 + margin)
    settings = [(2, 3.0), (3, 3.0), (2, 7.0), (3, 7.0)]  # X varies fastest, as in A1111
    for index, ((steps, cfg), cell) in enumerate(zip(settings, cells)):
        col, row = index % 2, index // 2
        x, y = pad_left + col * (64 + margin), pad_top + row * (64 + margin)
        assert _same(grid.crop((x, y, x + 64, y + 64)), cell)  # the grid shows the cells themselves
        assert _same(cell, single(built_ins, steps=steps, cfg_scale=cfg))  # one job per cell, same seed
        assert f"Steps: {steps}," in processed.infotexts[1 + index] and f"CFG scale: {cfg}," in \
            processed.infotexts[1 + index] and "Seed: 3," in processed.infotexts[1 + index]
    margin_strip = _pixels(grid.crop((pad_left + 64, pad_top, pad_left + 64 + margin, grid.height)))
    assert (margin_strip == 255).all()
    legend = _pixels(grid.crop((pad_left, 0, grid.width, pad_top)))
    assert (legend < 128).any()  # the column legends are drawn

    assert "X Type: Steps" in processed.infotexts[0] and 'Y Values: "3, 7"' in processed.infotexts[0]
    assert "Script: X/Y/Z plot" in processed.infotexts[0] and "Script" not in processed.infotexts[1]
    grid_files = [f for f in processed.saved_files if "txt2img-grids" in f]
    assert len(grid_files) == 1 and Image.open(grid_files[0]).text["parameters"] == processed.infotexts[0]
    assert _same(Image.open(grid_files[0]), grid)
    assert len([f for f in processed.saved_files if "txt2img-images" in f]) == 4  # the cells' own samples


def test_xyz_seed_range_with_z_axis_and_sub_grids(built_ins):
    runner = scripts.scripts_txt2img
    module = _module(_script(runner, "X/Y/Z plot"))
    processed = run_script(built_ins, runner, "X/Y/Z plot", {
        X_TYPE: "Seed", X_VALUES: "1-3", Z_TYPE: "CFG Scale", Z_VALUES: "3,7", SUB_GRIDS: True, SUB_IMAGES: True},
        seed=-1)
    main, sub_3, sub_7, *cells = processed.images
    assert processed.index_of_first_image == 3 and len(cells) == 6
    assert [int(t.split("Seed: ")[1].split(",")[0]) for t in processed.infotexts[3:]] == [1, 2, 3, 1, 2, 3]
    assert 'Fixed X Values: "1, 2, 3"' in processed.infotexts[0] and "Z Type: CFG Scale" in processed.infotexts[0]
    assert "Z Type" not in processed.infotexts[1]  # the sub grids carry X and Y only, as in A1111
    # no Y axis: no row legends, so the sub grid is the three cells under their seed legends
    pad_left, pad_top = module.annotation_padding(64, 64, ["Seed: 1", "Seed: 2", "Seed: 3"], [""])
    assert pad_left == 0 and sub_3.size == (3 * 64, pad_top + 64)
    assert _same(sub_3.crop((128, pad_top, 192, pad_top + 64)), cells[2])
    # the main grid: the sub grids side by side under the Z legends
    _, z_top = module.annotation_padding(sub_3.width, sub_3.height, ["CFG Scale: 3.0", "CFG Scale: 7.0"], [""])
    assert main.size == (2 * sub_3.width, z_top + sub_3.height)
    assert _same(main.crop((sub_3.width, z_top, 2 * sub_3.width, main.height)), sub_7)
    assert _same(cells[4], single(built_ins, seed=2, cfg_scale=7.0))


def test_xyz_prompt_search_and_replace(built_ins):
    runner = scripts.scripts_txt2img
    processed = run_script(built_ins, runner, "X/Y/Z plot", {X_TYPE: "Prompt S/R", X_VALUES: "red, blue",
                                                              SUB_IMAGES: True, DRAW_LEGEND: False},
                           negative_prompt="red blur")
    assert processed.all_prompts == ["a red circle", "a blue circle"]
    assert processed.all_negative_prompts == ["red blur", "blue blur"]
    assert processed.infotexts[2].startswith("a blue circle\nNegative prompt: blue blur\n")
    assert processed.images[0].size == (128, 64)  # no legend: just the cells
    assert _same(processed.images[2], single(built_ins, prompt="a blue circle", negative_prompt="blue blur"))
    with pytest.raises(JobError, match="did not find 'green'"):
        run_script(built_ins, runner, "X/Y/Z plot", {X_TYPE: "Prompt S/R", X_VALUES: "green, blue"})


def test_xyz_checkpoint_and_clip_skip_are_restored(built_ins):
    from modules.models.tiny import write_tiny_checkpoint

    models, opts = built_ins.models, built_ins.opts
    original = models.get().checkpoint  # loaded before the second file exists, so the demo model stays default
    write_tiny_checkpoint("sd1", Path(built_ins.cmd_opts.ckpt_dir) / "tiny-b.safetensors", seed=5)
    models.refresh()
    runner = scripts.scripts_txt2img
    processed = run_script(built_ins, runner, "X/Y/Z plot", {
        X_TYPE: "Clip skip", X_VALUES: "1, 2", Y_TYPE: "Checkpoint name", Y_VALUES: "demo-shapes-sd1, tiny-b",
        SUB_IMAGES: True})
    demo_1, demo_2, tiny_1, tiny_2 = processed.images[1:]
    texts = processed.infotexts[1:]
    assert "Model: demo-shapes-sd1," in texts[0] and "Model: tiny-b," in texts[2] and "Model: tiny-b," in texts[3]
    assert "Clip skip" not in texts[0] and "Clip skip: 2," in texts[1] and "Clip skip: 2," in texts[3]
    assert not _same(demo_1, tiny_1) and not _same(demo_1, demo_2)
    # the originally loaded checkpoint and settings are current again
    assert models.current.checkpoint.filename == original.filename
    assert opts.sd_model_checkpoint == original.title and opts.CLIP_stop_at_last_layers == 1
    assert _same(demo_2, single(built_ins, override_settings={"CLIP_stop_at_last_layers": 2}))
    assert _same(demo_1, single(built_ins))
    with pytest.raises(JobError, match="Unknown checkpoint: nope"):
        run_script(built_ins, runner, "X/Y/Z plot", {X_TYPE: "Checkpoint name", X_VALUES: "tiny-b, nope"})
    assert models.current.checkpoint.filename == original.filename


def test_xyz_vae_axis_loads_each_vae_and_restores_the_setting(built_ins):
    from modules.models.ldm_layout import save_single_file, vae_to_ldm
    from modules.models.tiny import build_tiny_components

    vae = build_tiny_components("sd1", seed=42)["vae"]
    save_single_file(vae_to_ldm(vae.state_dict(), dict(vae.config)),
                     Path(built_ins.cmd_opts.vae_dir) / "other.safetensors")
    processed = run_script(built_ins, scripts.scripts_txt2img, "X/Y/Z plot",
                           {X_TYPE: "VAE", X_VALUES: "None, other", SUB_IMAGES: True})
    builtin, other = processed.images[1:]
    assert "VAE" not in processed.infotexts[1] and "VAE: other.safetensors" in processed.infotexts[2]
    assert not _same(builtin, other) and _same(builtin, single(built_ins))
    assert built_ins.opts.sd_vae == "Automatic" and built_ins.models.current.vae_info is None
    with pytest.raises(JobError, match="Unknown VAE: missing"):
        run_script(built_ins, scripts.scripts_txt2img, "X/Y/Z plot", {X_TYPE: "VAE", X_VALUES: "missing"})


def test_xyz_unknown_sampler_fails_before_any_image(built_ins, monkeypatch):
    calls = []
    real = processing.process_images
    monkeypatch.setattr(processing, "process_images", lambda job, ctx=None: calls.append(job) or real(job, ctx))
    with pytest.raises(JobError, match="Unknown sampler: Bogus sampler"):
        run_script(built_ins, scripts.scripts_txt2img, "X/Y/Z plot",
                   {X_TYPE: "Sampler", X_VALUES: "Euler, Bogus sampler", Y_TYPE: "Steps", Y_VALUES: "2,3"})
    assert calls == []
    outputs = Path(built_ins.cmd_opts.data_dir) / "outputs"
    assert not outputs.exists() or not any(p.is_file() for p in outputs.rglob("*"))


def test_xyz_grid_larger_than_img_max_size_mp_is_refused_before_any_image(built_ins, monkeypatch):
    calls = []
    real = processing.process_images
    monkeypatch.setattr(processing, "process_images", lambda job, ctx=None: calls.append(job) or real(job, ctx))
    built_ins.opts.set("img_max_size_mp", 1)
    try:  # 3 x 4 cells of 512x512: 3 MPixels
        with pytest.raises(JobError, match=r"Resulting grid would be too large \(3 MPixels\) \(max configured size "
                                           r"is 1 MPixels\)"):
            run_script(built_ins, scripts.scripts_txt2img, "X/Y/Z plot",
                       {X_TYPE: "Steps", X_VALUES: "1,2,3", Y_TYPE: "CFG Scale", Y_VALUES: "5,6,7,8"},
                       width=512, height=512)
    finally:
        built_ins.opts.set("img_max_size_mp", 200)
    assert calls == []


# --- SD upscale ----------------------------------------------------------------------------------------------------

def test_split_and_combine_grid_blend_linearly(built_ins):
    module = _module(_script(scripts.scripts_img2img, "SD upscale"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8))
    grid = module.split_grid(image, tile_w=64, tile_h=64, overlap=16)
    assert [len(row[2]) for row in grid.tiles] == [3, 3] and [row[2][-1][0] for row in grid.tiles] == [66, 66]
    assert _same(module.combine_grid(grid), image)  # unchanged tiles put back give the image back exactly

    two = module.split_grid(Image.new("RGB", (112, 64)), tile_w=64, tile_h=64, overlap=16)
    (_, _, [left, right]), = two.tiles
    assert (left[0], right[0]) == (0, 48)
    left[2], right[2] = Image.new("RGB", (64, 64), "black"), Image.new("RGB", (64, 64), "white")
    row = _pixels(module.combine_grid(two))[10, :, 0]
    assert (row[:48] == 0).all() and (row[64:] == 255).all()
    assert list(row[48:64]) == [int(i * 255 / 16) for i in range(16)]  # A1111's ramp over the overlap


def test_sd_upscale_tiles_img2img_and_blends(built_ins, monkeypatch):
    runner = scripts.scripts_img2img
    module = _module(_script(runner, "SD upscale"))
    lanczos = upscaling.upscaler_names().index("Lanczos")
    init = _init_image()
    inputs = {1: 16, 2: lanczos, 3: 2.0}  # overlap, upscaler (the radio's index), scale factor
    expected_upscale = init.resize((128, 128), Image.Resampling.LANCZOS)

    real = processing.process_images
    processed = run_script(built_ins, runner, "SD upscale", inputs, init_images=[init], denoising_strength=0.0,
                           steps=3)
    (result,) = processed.images
    assert result.size == (128, 128)
    assert "SD upscale overlap: 16" in processed.infotexts[0] and "SD upscale upscaler: Lanczos" in \
        processed.infotexts[0]
    assert len(processed.saved_files) == 1 and _same(Image.open(processed.saved_files[0]), result)
    # exactly what A1111 does: every tile of the Lanczos-upscaled image through img2img (seeds +1 per batch of one),
    # blended back; at denoising 0 each tile is the VAE's round trip of itself
    grid = module.split_grid(expected_upscale, 64, 64, 16)
    tiles = [tile for _, _, row in grid.tiles for tile in row]
    for k, tile in enumerate(tiles):
        tile[2] = single(built_ins, prompt="a red circle", init_images=[tile[2]], denoising_strength=0.0, steps=3,
                         seed=3 + k)
    assert _same(result, module.combine_grid(grid))

    # with img2img returning its init image unchanged, the result is the Lanczos upscale itself
    def identity(job: Job, ctx: Any = None) -> Processed:
        result = real(job, ctx)
        result.images = [image.copy() for image in job.init_images]
        return result

    monkeypatch.setattr(processing, "process_images", identity)
    processed = run_script(built_ins, runner, "SD upscale", inputs, init_images=[init], denoising_strength=0.0)
    assert _same(processed.images[0], expected_upscale)


# --- Loopback ------------------------------------------------------------------------------------------------------

def test_loopback_feeds_each_output_back_along_the_curve(built_ins):
    runner = scripts.scripts_img2img
    module = _module(_script(runner, "Loopback"))
    assert module.denoising_strength(1, 3, 0.6, 0.3, "Aggressive") == pytest.approx(0.6 - 0.3 * math.sin(math.pi / 4))
    assert module.denoising_strength(1, 3, 0.6, 0.3, "Lazy") == pytest.approx(0.6 - 0.3 * (1 - math.cos(math.pi / 4)))
    assert module.denoising_strength(0, 1, 0.6, 0.3, "Linear") == 0.6

    init = _init_image()
    processed = run_script(built_ins, runner, "Loopback", {0: 3, 1: 0.3, 2: "Linear"}, init_images=[init],
                           denoising_strength=0.6, steps=3)
    grid, *loops = processed.images
    assert len(loops) == 3 and processed.index_of_first_image == 1 and grid.size == (3 * 64, 64)
    strengths = [float(t.split("Denoising strength: ")[1].split(",")[0]) for t in processed.infotexts[1:]]
    assert strengths == pytest.approx([0.6, 0.45, 0.3])
    assert all("Final denoising strength: 0.3, Denoising curve: Linear" in t for t in processed.infotexts)
    previous = init
    for i, image in enumerate(loops):  # each loop is img2img of the previous output, seeds going up by one
        assert f"Seed: {3 + i}," in processed.infotexts[1 + i]
        again = single(built_ins, init_images=[previous], seed=3 + i, steps=3, denoising_strength=strengths[i])
        assert _same(image, again)
        previous = image
    assert any("img2img-grids" in f for f in processed.saved_files)
