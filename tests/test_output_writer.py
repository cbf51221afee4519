"""The one output writer (modules/output_writer.py): every saving setting, in txt2img, img2img, grids and Extras.

Real jobs on a tiny random SD1 checkpoint (1-2 steps, 64x64) and real Extras runs; assertions are on the files
written: names, folders, bytes, pixels, PNG text chunks, EXIF UserComment and the `.txt` beside.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from modules import hooks, output_writer
from modules.devices import choose_policy
from modules.infotext import read_info_from_image
from modules.models.loader import load_model
from modules.models.registry import CheckpointInfo
from modules.models.tiny import write_tiny_checkpoint
from modules.options import OptionInfo, Options
from modules.postprocessing import ExtrasRequest, run_extras
from modules.processing import Context, Job, Processed, process_images
from modules.state import State
from modules.upscaling import UpscalerRegistry

pytestmark = pytest.mark.integration

MODES = ("txt2img", "img2img")
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_tiny_checkpoint("sd1", tmp_path_factory.mktemp("tiny") / "tiny-sd1.safetensors", seed=1)
    return load_model(CheckpointInfo(str(path), path.name), choose_policy(use_cpu=["all"]))


def noise(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def options(**values: object) -> Options:
    opts = Options()
    for key, value in values.items():
        opts.set(key, value)
    return opts


def generate(model, tmp_path: Path, opts: Options, mode: str = "txt2img", **fields: object) -> Processed:
    fields = {"prompt": PROMPT, "seed": 3, "steps": 1, "width": 64, "height": 64, **fields}
    if mode == "img2img":
        fields = {"init_images": [noise(7)], "denoising_strength": 0.5, **fields, "steps": 2}
    return process_images(Job(**fields), Context(model=model, opts=opts, state=State(), data_dir=str(tmp_path)))


def extras(tmp_path: Path, opts: Options, image: Image.Image | None = None, **fields: object):
    request = ExtrasRequest(image=image if image is not None else noise(1, (24, 24)), upscaling_resize=2,
                            extras_upscaler_1="Lanczos", **fields)
    return run_extras(request, opts, str(tmp_path), registry=UpscalerRegistry({}))


def names(paths: list[str]) -> list[str]:
    return [os.path.basename(p) for p in paths]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def reencoded(image: Image.Image, fmt: str, **params: object) -> np.ndarray:
    """What Pillow's own encoder gives for `image` with `params`, decoded: the writer must have used the same."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=fmt, **params)
    return pixels(Image.open(buffer))


def user_comment(path: str) -> str | None:
    with Image.open(path) as image:
        return read_info_from_image(image)[0] if "exif" in image.info else None


# --- save_txt -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_save_txt_writes_the_infotext_beside_every_sample_and_grid(model, tmp_path, mode):
    processed = generate(model, tmp_path, options(save_txt=True), mode, batch_size=2)
    sample_1, sample_2, grid = processed.saved_files
    assert names([sample_1, sample_2, grid]) == ["00000-3.png", "00001-4.png", "grid-0000.png"]
    texts = processed.infotexts  # grid first
    for path, text in ((sample_1, texts[1]), (sample_2, texts[2]), (grid, texts[0])):
        assert Path(path).with_suffix(".txt").read_text(encoding="utf8") == text + "\n"
        assert f"Seed: {3 if path != sample_2 else 4}" in text
        with Image.open(path) as saved:
            assert saved.text == {"parameters": text}  # enable_pnginfo is on by default
    # off (the default): no text files, and nothing else beside the images (no export_for_4chan JPEG)
    plain = generate(model, tmp_path / "off", Options(), mode, batch_size=2)
    written = sorted(p.name for p in (tmp_path / "off" / "outputs").rglob("*") if p.is_file())
    assert written == sorted(names(plain.saved_files)) == ["00000-3.png", "00001-4.png", "grid-0000.png"]


def test_save_txt_in_extras_writes_the_postprocess_infotext(tmp_path):
    result = extras(tmp_path, options(save_txt=True))
    (path,) = result.saved_files
    assert names([path]) == ["00000.png"]
    assert Path(path).with_suffix(".txt").read_text(encoding="utf8") == result.infotext + "\n"
    assert result.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


# --- samples_format, grid_format, jpeg_quality, webp_lossless --------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_jpeg_quality_is_the_quality_of_saved_jpeg_samples_and_grids(model, tmp_path, mode):
    sizes = {}
    for quality in (10, 95):
        folder = tmp_path / f"q{quality}"
        opts = options(samples_format="jpg", grid_format="jpg", jpeg_quality=quality)
        processed = generate(model, folder, opts, mode, batch_size=2)
        sample, _, grid = processed.saved_files
        assert names([sample, grid]) == ["00000-3.jpg", "grid-0000.jpg"]
        for path, image in ((sample, processed.images[1]), (grid, processed.images[0])):
            with Image.open(path) as saved:
                assert saved.format == "JPEG"
                assert np.array_equal(pixels(saved), reencoded(image, "JPEG", quality=quality))
        assert user_comment(sample) == processed.infotexts[1]
        sizes[quality] = os.path.getsize(sample)
    assert sizes[95] > 1.5 * sizes[10]


def test_jpeg_quality_and_format_in_extras(tmp_path):
    for quality in (10, 95):
        result = extras(tmp_path / f"q{quality}", options(samples_format="jpg", jpeg_quality=quality))
        (path,) = result.saved_files
        assert path.endswith("00000.jpg")
        with Image.open(path) as saved:
            assert np.array_equal(pixels(saved), reencoded(result.images[0], "JPEG", quality=quality))
        assert user_comment(path) == result.infotext


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")
def test_jpeg_quality_applies_to_avif(model, tmp_path):
    sizes = []
    for quality in (10, 95):
        processed = generate(model, tmp_path / f"q{quality}", options(samples_format="avif", jpeg_quality=quality))
        (path,) = processed.saved_files
        assert path.endswith("00000-3.avif") and user_comment(path) == processed.infotexts[0]
        sizes.append(os.path.getsize(path))
    assert sizes[1] > sizes[0]


@pytest.mark.parametrize("mode", MODES)
def test_webp_lossless_gives_pixel_exact_webp_samples_and_grids(model, tmp_path, mode):
    opts = options(samples_format="webp", grid_format="webp", webp_lossless=True)
    processed = generate(model, tmp_path, opts, mode, batch_size=2)
    sample, _, grid = processed.saved_files
    assert names([sample, grid]) == ["00000-3.webp", "grid-0000.webp"]
    for path, image in ((sample, processed.images[1]), (grid, processed.images[0])):
        with Image.open(path) as saved:
            assert saved.format == "WEBP" and np.array_equal(pixels(saved), pixels(image))
    assert user_comment(sample) == processed.infotexts[1]
    # lossy (the default) differs from the image, and is what Pillow's lossy WebP at jpeg_quality gives
    lossy = generate(model, tmp_path / "lossy", options(samples_format="webp", jpeg_quality=60), mode)
    with Image.open(lossy.saved_files[0]) as saved:
        assert not np.array_equal(pixels(saved), pixels(lossy.images[0]))
        assert np.array_equal(pixels(saved), reencoded(lossy.images[0], "WEBP", quality=60))


def test_webp_lossless_in_extras(tmp_path):
    result = extras(tmp_path, options(samples_format="webp", webp_lossless=True))
    (path,) = result.saved_files
    with Image.open(path) as saved:
        assert path.endswith("00000.webp") and np.array_equal(pixels(saved), pixels(result.images[0]))


def test_samples_and_grid_formats_are_separate(model, tmp_path):
    processed = generate(model, tmp_path, options(samples_format="webp", grid_format="jpg"), batch_size=2)
    assert names(processed.saved_files) == ["00000-3.webp", "00001-4.webp", "grid-0000.jpg"]


# --- enable_pnginfo -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_enable_pnginfo_off_leaves_out_text_chunks_and_exif(model, tmp_path, mode):
    opts = options(enable_pnginfo=False, save_txt=True, samples_format="jpg")
    processed = generate(model, tmp_path, opts, mode, batch_size=2)
    sample, _, grid = processed.saved_files
    with Image.open(sample) as saved, Image.open(grid) as saved_grid:
        assert saved.format == "JPEG" and "exif" not in saved.info
        assert saved_grid.format == "PNG" and saved_grid.text == {}
    for path in processed.saved_files:  # A1111: the .txt does not depend on enable_pnginfo
        assert Path(path).with_suffix(".txt").read_text(encoding="utf8").startswith(PROMPT)


def test_enable_pnginfo_in_extras(tmp_path):
    source = noise(2, (24, 24))
    source.info = {"parameters": "a cat\nSteps: 3, Seed: 1, Size: 24x24"}
    on = extras(tmp_path / "on", Options(), source)
    with Image.open(on.saved_files[0]) as saved:
        assert saved.text == {"parameters": source.info["parameters"], "postprocessing": on.infotext,
                              "extras": on.infotext}
    off = extras(tmp_path / "off", options(enable_pnginfo=False), source)
    with Image.open(off.saved_files[0]) as saved:
        assert saved.text == {}


# --- file names and folders ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_save_images_add_number_off_names_samples_by_pattern_only(model, tmp_path, mode):
    opts = options(save_images_add_number=False, grid_extended_filename=True)
    processed = generate(model, tmp_path, opts, mode, batch_size=2)
    assert names(processed.saved_files) == ["3.png", "4.png", "3.png"]  # the grid: its own folder
    assert "grids" in Path(processed.saved_files[2]).parent.parent.name
    # A1111's default replace action: the same name again replaces the file (atomically)
    again = generate(model, tmp_path, opts, mode, seed=3)
    assert again.saved_files[0] == processed.saved_files[0]
    assert sorted(os.listdir(Path(again.saved_files[0]).parent)) == ["3.png", "4.png"]
    # a grid without the extended name has no pattern, so it keeps its number (A1111)
    short_grid = generate(model, tmp_path / "short", options(save_images_add_number=False), mode, batch_size=2)
    assert names(short_grid.saved_files) == ["3.png", "4.png", "grid-0000.png"]


def test_save_images_replace_action_add_number_suffix_keeps_both_files(model, tmp_path):
    opts = options(save_images_add_number=False)
    # an A1111 setting this WebUI does not list; an A1111 config.json (or an extension) brings it
    opts.add_option("save_images_replace_action", OptionInfo("Replace", "Saving the image to an existing file"))
    opts.set("save_images_replace_action", "Add number suffix")
    first = generate(model, tmp_path, opts)
    second = generate(model, tmp_path, opts)
    assert names(first.saved_files + second.saved_files) == ["3.png", "3-1.png"]


def test_extras_names_stay_numbered_whatever_save_images_add_number_says(tmp_path):
    result = extras(tmp_path, options(save_images_add_number=False))
    assert names(result.saved_files) == ["00000.png"]  # A1111: an empty pattern always gets the number


@pytest.mark.parametrize("mode", MODES)
def test_grid_extended_filename_adds_the_seed_and_prompt(model, tmp_path, mode):
    extended = generate(model, tmp_path / "ext", options(grid_extended_filename=True), mode, batch_size=2)
    assert names(extended.saved_files)[-1] == "grid-0000-3.png"
    # without subfolders A1111's pattern is [seed]-[prompt_spaces]
    flat = generate(model, tmp_path / "flat", options(grid_extended_filename=True, save_to_dirs=False), mode,
                    batch_size=2)
    assert names(flat.saved_files) == ["00000-3-a red circle.png", "00001-4-a red circle.png",
                                       "grid-0000-3-a red circle.png"]


@pytest.mark.parametrize("mode", MODES)
def test_samples_filename_pattern_with_job_and_model_fields(model, tmp_path, mode):
    opts = options(samples_filename_pattern="[seed]-[steps]-[sampler]-[model_name]-[prompt_words]",
                   grid_extended_filename=True)
    processed = generate(model, tmp_path, opts, mode, batch_size=2, sampler_name="Euler a")
    steps = 2 if mode == "img2img" else 1
    stem = f"{steps}-Euler a-tiny-sd1-a red circle"
    assert names(processed.saved_files) == [f"00000-3-{stem}.png", f"00001-4-{stem}.png", f"grid-0000-3-{stem}.png"]
    # a job's override_settings pattern wins (A1111 reads p.override_settings)
    overridden = generate(model, tmp_path, opts, mode, override_settings={"samples_filename_pattern": "[seed]x"})
    assert names(overridden.saved_files) == ["00002-3x.png"]


@pytest.mark.parametrize("mode", MODES)
def test_directories_pattern_and_save_to_dirs(model, tmp_path, mode):
    opts = options(directories_filename_pattern="[prompt_words]-[seed]", grid_save_to_dirs=False)
    processed = generate(model, tmp_path, opts, mode, batch_size=2)
    sample, _, grid = (Path(p) for p in processed.saved_files)
    assert sample.parent == tmp_path / "outputs" / f"{mode}-images" / "a red circle-3"
    assert grid.parent == tmp_path / "outputs" / f"{mode}-grids"  # grid_save_to_dirs off
    flat = generate(model, tmp_path / "flat", options(save_to_dirs=False, grid_save_to_dirs=True), mode,
                    batch_size=2)
    sample, _, grid = (Path(p) for p in flat.saved_files)
    assert sample == tmp_path / "flat" / "outputs" / f"{mode}-images" / "00000-3-a red circle.png"
    assert grid.parent.parent == tmp_path / "flat" / "outputs" / f"{mode}-grids"  # in its date folder


def test_extras_never_use_the_date_folders(tmp_path):
    result = extras(tmp_path, options(save_to_dirs=True, directories_filename_pattern="[date]"))
    assert Path(result.saved_files[0]).parent == tmp_path / "outputs" / "extras-images"


def test_output_folder_settings(model, tmp_path):
    opts = options(outdir_txt2img_samples="mine/t2i", outdir_img2img_grids="mine/i2i-grids",
                   outdir_extras_samples="mine/extras", save_to_dirs=False, grid_save_to_dirs=False)
    txt = generate(model, tmp_path, opts, batch_size=2)
    img = generate(model, tmp_path, opts, "img2img", batch_size=2)
    ext = extras(tmp_path, opts)
    assert Path(txt.saved_files[0]).parent == tmp_path / "mine" / "t2i"
    assert Path(txt.saved_files[2]).parent == tmp_path / "outputs" / "txt2img-grids"
    assert Path(img.saved_files[2]).parent == tmp_path / "mine" / "i2i-grids"
    assert Path(ext.saved_files[0]).parent == tmp_path / "mine" / "extras"
    # outdir_samples / outdir_grids take every kind of job
    opts.set("outdir_samples", "all")
    opts.set("outdir_grids", "all-grids")
    txt = generate(model, tmp_path, opts, batch_size=2)
    ext = extras(tmp_path, opts)
    assert [Path(p).parent.name for p in [*txt.saved_files, *ext.saved_files]] == ["all", "all", "all-grids", "all"]


# --- whether to save ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_samples_save_and_grid_save(model, tmp_path, mode):
    no_samples = generate(model, tmp_path / "a", options(samples_save=False), mode, batch_size=2)
    assert names(no_samples.saved_files) == ["grid-0000.png"]
    no_grid = generate(model, tmp_path / "b", options(grid_save=False), mode, batch_size=2)
    assert names(no_grid.saved_files) == ["00000-3.png", "00001-4.png"]
    assert not (tmp_path / "b" / "outputs" / f"{mode}-grids").exists()


def test_save_images_before_highres_fix(model, tmp_path):
    processed = generate(model, tmp_path, options(save_images_before_highres_fix=True, save_txt=True),
                         enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=1)
    (final,) = processed.saved_files
    folder = Path(final).parent
    assert sorted(p.name for p in folder.iterdir()) == ["00000-3-before-highres-fix.png",
                                                        "00000-3-before-highres-fix.txt", "00001-3.png",
                                                        "00001-3.txt"]
    with Image.open(folder / "00000-3-before-highres-fix.png") as first, Image.open(final) as hr:
        assert first.size == (64, 64) and hr.size == (96, 96)
        assert first.text["parameters"].startswith(PROMPT)
    # off (the default): only the final image
    plain = generate(model, tmp_path / "off", Options(), enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                     hr_second_pass_steps=1)
    assert names(os.listdir(Path(plain.saved_files[0]).parent)) == ["00000-3.png"]


# --- export_for_4chan (A1111 settings not on this WebUI's page) ---------------------------------------------------

def test_export_for_4chan_writes_a_downscaled_jpeg_beside_a_large_image(model, tmp_path):
    opts = Options()
    opts.add_option("export_for_4chan", OptionInfo(True, "Save copy of large images as JPG"))
    opts.add_option("target_side_length", OptionInfo(4000.0, "Width/height limit for the above option, in pixels"))
    opts.set("target_side_length", 32.0)
    processed = generate(model, tmp_path, opts, batch_size=2)
    for path, text in zip(processed.saved_files, [*processed.infotexts[1:], processed.infotexts[0]]):
        jpeg = Path(path).with_suffix(".jpg")
        with Image.open(jpeg) as small:
            assert small.format == "JPEG" and max(small.size) == 32
        assert user_comment(str(jpeg)) == text
    # below both limits: nothing extra; over img_downscale_threshold (MB): a JPEG of the same size
    settings = output_writer.SaveSettings(export_for_4chan=True)
    small = output_writer.save_output_image(noise(), opts=settings, folder=str(tmp_path / "small"), seed=1,
                                            save_to_dirs=False)
    assert small.downscaled_path is None and os.listdir(tmp_path / "small") == ["00000-1.png"]
    heavy = dataclasses.replace(settings, img_downscale_threshold=0.001)
    copy = output_writer.save_output_image(noise(), opts=heavy, folder=str(tmp_path / "heavy"), seed=1,
                                           save_to_dirs=False)
    assert copy.downscaled_path == str(tmp_path / "heavy" / "00000-1.jpg")
    with Image.open(copy.downscaled_path) as same_size:
        assert same_size.size == (64, 64)


# --- hooks ----------------------------------------------------------------------------------------------------

def test_saving_hooks_fire_for_samples_grids_and_extras(model, tmp_path):
    before: list[tuple[str, object]] = []
    after: list[str] = []

    def stamp(params: hooks.ImageSaveParams) -> None:
        before.append((params.filename, params.p))
        params.pnginfo["stamp"] = "seen"
        params.image = params.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def record(params: hooks.ImageSaveParams) -> None:
        after.append(params.filename)

    hooks.connect("before_image_saved", stamp)
    hooks.connect("image_saved", record)
    try:
        processed = generate(model, tmp_path, Options(), batch_size=2)
        result = extras(tmp_path, options(save_txt=True))
    finally:
        hooks.disconnect("before_image_saved", stamp)
        hooks.disconnect("image_saved", record)
    saved = [*processed.saved_files, *result.saved_files]
    assert after == saved
    assert [p is not None for _, p in before] == [True, True, True, False]  # Extras save without a job
    assert before[0][0] == str(tmp_path / "outputs" / "txt2img-images")
    for path, image in zip(saved, [*processed.images[1:], processed.images[0], result.images[0]]):
        with Image.open(path) as written:
            assert written.text["stamp"] == "seen"
            assert np.array_equal(pixels(written), pixels(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def test_image_grid_hook_may_change_the_layout(model, tmp_path):
    def one_row(params: hooks.ImageGridLoopParams) -> None:
        params.rows, params.cols = 1, len(params.imgs)

    hooks.connect("image_grid", one_row)
    try:
        processed = generate(model, tmp_path, Options(), batch_size=4)
    finally:
        hooks.disconnect("image_grid", one_row)
    assert processed.images[0].size == (256, 64)  # 4 images in one row instead of 2x2
    with Image.open(processed.saved_files[-1]) as grid:
        assert grid.size == (256, 64)


# --- the writer on its own ----------------------------------------------------------------------------------------

@pytest.mark.unit
def test_settings_come_from_any_settings_object_with_a1111_defaults():
    settings = output_writer.SaveSettings.from_opts(options(jpeg_quality=55, samples_format="webp"))
    assert (settings.jpeg_quality, settings.samples_format, settings.export_for_4chan) == (55, "webp", False)
    assert output_writer.SaveSettings.from_opts(object()) == output_writer.SaveSettings()


@pytest.mark.unit
def test_numbered_names_never_overwrite_a_file_already_there(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "00004-9.png").write_bytes(b"not mine")
    settings = output_writer.SaveSettings(save_to_dirs=False, samples_filename_pattern="[seed]")
    saved = output_writer.save_output_image(noise(), opts=settings, folder=str(folder), seed=9, info="x")
    assert os.path.basename(saved.path) == "00005-9.png"
    assert (folder / "00004-9.png").read_bytes() == b"not mine"
    assert sorted(os.listdir(folder)) == ["00004-9.png", "00005-9.png"]  # no temporary files left
