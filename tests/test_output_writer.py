"""The one output writer (modules/output_writer.py): every saving setting, in txt2img, img2img, grids and Extras.

Real jobs on a tiny random SD1 checkpoint (1-2 steps, 64x64) and real Extras runs; assertions are on the files
written: names, folders, bytes, pixels, PNG text chunks, EXIF UserComment and the `.txt` beside.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from modules import hooks, images, infotext, output_writer
from modules.devices import choose_policy
from modules.infotext import read_info_from_image
from modules.models.loader import load_model
from modules.models.registry import CheckpointInfo
from modules.models.tiny import write_tiny_checkpoint
from modules.options import Options, default_option_table
from modules.postprocessing import ExtrasRequest, run_extras
from modules.processing import Context, Job, Processed, process_images
from modules.state import State
from modules.upscaling import UpscalerRegistry

pytestmark = pytest.mark.integration

MODES = ("txt2img", "img2img")
PROMPT = "a red circle"


@pytest.fixture(autouse=True)
def application_settings():
    """Tests may register settings as the application's (output_writer.configure); restored after each."""
    before = output_writer.app_opts()
    yield
    output_writer.configure(before)


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


# --- the settings -------------------------------------------------------------------------------------------------

# A1111 v1.10's "Saving images/grids", "Paths for saving" and "Saving to a directory" settings: (default, label)
A1111_SAVING_SETTINGS = {
    "saving-images": {
        "samples_save": (True, "Always save all generated images"),
        "samples_format": ("png", "File format for images"),
        "samples_filename_pattern": ("", "Images filename pattern"),
        "save_images_add_number": (True, "Add number to filename when saving"),
        "save_images_replace_action": ("Replace", "Saving the image to an existing file"),
        "grid_save": (True, "Always save all generated image grids"),
        "grid_format": ("png", "File format for grids"),
        "grid_extended_filename": (False, "Add extended info (seed, prompt) to filename when saving grid"),
        "grid_only_if_multiple": (True, "Do not save grids consisting of one picture"),
        "grid_prevent_empty_spots": (False, "Prevent empty spots in grid (when set to autodetect)"),
        "grid_zip_filename_pattern": ("", "Archive filename pattern"),
        "n_rows": (-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size"),
        "font": ("", "Font for image grids that have text"),
        "grid_text_active_color": ("#000000", "Text color for image grids"),
        "grid_text_inactive_color": ("#999999", "Inactive text color for image grids"),
        "grid_background_color": ("#ffffff", "Background color for image grids"),
        "enable_pnginfo": (True, "Save text information about generation parameters as chunks to png files"),
        "save_txt": (False, None),  # None: this WebUI words the label a little differently
        "save_images_before_face_restoration": (False, "Save a copy of image before doing face restoration."),
        "save_images_before_highres_fix": (False, None),
        "save_images_before_color_correction": (
            False, "Save a copy of image before applying color correction to img2img results"),
        "save_mask": (False, "For inpainting, save a copy of the greyscale mask"),
        "save_mask_composite": (False, "For inpainting, save a masked composite"),
        "jpeg_quality": (80, "Quality for saved jpeg and avif images"),
        "webp_lossless": (False, "Use lossless compression for webp images"),
        "export_for_4chan": (True, "Save copy of large images as JPG"),
        "img_downscale_threshold": (4.0, "File size limit for the above option, MB"),
        "target_side_length": (4000, "Width/height limit for the above option, in pixels"),
        "img_max_size_mp": (200, "Maximum image size"),
        "use_original_name_batch": (True, "Use original name for output filename during batch process in extras tab"),
        "use_upscaler_name_as_suffix": (False, "Use upscaler name as filename suffix in the extras tab"),
        "save_selected_only": (True, "When using 'Save' button, only save a single selected image"),
        "save_write_log_csv": (True, "Write log.csv when saving images using 'Save' button"),
        "save_init_img": (False, "Save init images when using img2img"),
        "temp_dir": ("", "Directory for temporary images; leave empty for default"),
        "clean_temp_dir_at_start": (False, "Cleanup non-default temporary directory when starting webui"),
        "save_incomplete_images": (False, "Save incomplete images"),
        "notification_audio": (True, "Play notification sound after image generation"),
        "notification_volume": (100, "Notification sound volume"),
    },
    "saving-paths": {
        "outdir_samples": ("", "Output directory for images; if empty, defaults to three directories below"),
        "outdir_txt2img_samples": ("outputs/txt2img-images", "Output directory for txt2img images"),
        "outdir_img2img_samples": ("outputs/img2img-images", "Output directory for img2img images"),
        "outdir_extras_samples": ("outputs/extras-images", "Output directory for images from extras tab"),
        "outdir_grids": ("", "Output directory for grids; if empty, defaults to two directories below"),
        "outdir_txt2img_grids": ("outputs/txt2img-grids", "Output directory for txt2img grids"),
        "outdir_img2img_grids": ("outputs/img2img-grids", "Output directory for img2img grids"),
        "outdir_save": ("log/images", "Directory for saving images using the Save button"),
        "outdir_init_images": ("outputs/init-images", "Directory for saving init images when using img2img"),
    },
    "saving-to-dirs": {
        "save_to_dirs": (True, "Save images to a subdirectory"),
        "grid_save_to_dirs": (True, "Save grids to a subdirectory"),
        "use_save_to_dirs_for_ui": (False, 'When using "Save" button, save images to a subdirectory'),
        "directories_filename_pattern": ("[date]", "Directory name pattern"),
        "directories_max_prompt_words": (8, "Max prompt words for [prompt_words] pattern"),
    },
}


@pytest.mark.unit
def test_every_a1111_saving_setting_exists_with_its_default_label_and_section():
    table = default_option_table()
    opts = Options()
    for section, settings in A1111_SAVING_SETTINGS.items():
        keys = [key for key, info in table.items() if info.section == section]
        assert keys == list(settings), section  # A1111's order too
        for key, (default, label) in settings.items():
            assert getattr(opts, key) == default and type(table[key].default) is type(default), key
            assert label is None or table[key].label == label, key
    assert table["save_images_replace_action"].choices == ["Replace", "Add number suffix"]
    assert table["grid_zip_filename_pattern"].api_path and table["temp_dir"].api_path  # a name / a folder
    assert table["directories_max_prompt_words"].component_args == {"minimum": 1, "maximum": 20, "step": 1}


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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["Replace", "Add number suffix"])
def test_save_images_replace_action_for_samples_and_grids(model, tmp_path, mode, action):
    opts = options(save_images_add_number=False, grid_extended_filename=True, samples_filename_pattern="[seed]",
                   save_to_dirs=False, grid_save_to_dirs=False, save_images_replace_action=action)
    samples, grids = tmp_path / "outputs" / f"{mode}-images", tmp_path / "outputs" / f"{mode}-grids"
    for folder in (samples, grids):  # a file of an earlier job under the name this job's first image gets
        folder.mkdir(parents=True)
        (folder / "3.png").write_bytes(b"earlier")
    processed = generate(model, tmp_path, opts, mode, batch_size=2)
    sample, _, grid = processed.saved_files
    if action == "Replace":  # A1111's default: the new image takes the name
        assert names(processed.saved_files) == ["3.png", "4.png", "3.png"]
        assert sorted(os.listdir(samples)) == ["3.png", "4.png"] and os.listdir(grids) == ["3.png"]
    else:  # the earlier files stay; the new ones get "-1"
        assert names(processed.saved_files) == ["3-1.png", "4.png", "3-1.png"]
        assert (samples / "3.png").read_bytes() == (grids / "3.png").read_bytes() == b"earlier"
    for path, image in ((sample, processed.images[1]), (grid, processed.images[0])):
        with Image.open(path) as saved:
            assert np.array_equal(pixels(saved), pixels(image))


@pytest.mark.parametrize("action", ["Replace", "Add number suffix"])
def test_save_images_replace_action_in_extras_batches(tmp_path, action):
    batch = [("photo.png", noise(1, (24, 24)))]
    first = extras(tmp_path, options(save_images_replace_action=action), extras_mode=1, image_folder=batch)
    second = extras(tmp_path, options(save_images_replace_action=action), extras_mode=1,
                    image_folder=[("photo.png", noise(2, (24, 24)))])
    expected = ["photo.png", "photo.png"] if action == "Replace" else ["photo.png", "photo-1.png"]
    assert names(first.saved_files + second.saved_files) == expected
    with Image.open(second.saved_files[0]) as latest:
        assert np.array_equal(pixels(latest), pixels(second.images[0]))
    if action != "Replace":
        with Image.open(first.saved_files[0]) as kept:
            assert np.array_equal(pixels(kept), pixels(first.images[0]))


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


# --- export_for_4chan, img_downscale_threshold, target_side_length ----------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_export_for_4chan_writes_a_downscaled_jpeg_beside_a_large_image(model, tmp_path, mode):
    opts = options(target_side_length=32)  # export_for_4chan is on by default, as in A1111
    processed = generate(model, tmp_path, opts, mode, batch_size=2)
    for path, text in zip(processed.saved_files, [*processed.infotexts[1:], processed.infotexts[0]]):
        jpeg = Path(path).with_suffix(".jpg")
        with Image.open(jpeg) as small:
            assert small.format == "JPEG" and max(small.size) == 32
        assert user_comment(str(jpeg)) == text
    # below both limits: nothing extra; over img_downscale_threshold (MB): a JPEG of the same size
    settings = output_writer.SaveSettings()
    small = output_writer.save_output_image(noise(), opts=settings, folder=str(tmp_path / "small"), seed=1,
                                            save_to_dirs=False)
    assert small.downscaled_path is None and os.listdir(tmp_path / "small") == ["00000-1.png"]
    heavy = dataclasses.replace(settings, img_downscale_threshold=0.001)
    copy = output_writer.save_output_image(noise(), opts=heavy, folder=str(tmp_path / "heavy"), seed=1,
                                           save_to_dirs=False)
    assert copy.downscaled_path == str(tmp_path / "heavy" / "00000-1.jpg")
    with Image.open(copy.downscaled_path) as same_size:
        assert same_size.size == (64, 64)
    # off: nothing beside even an image over both limits
    off = dataclasses.replace(heavy, export_for_4chan=False, target_side_length=32.0)
    none = output_writer.save_output_image(noise(), opts=off, folder=str(tmp_path / "off"), seed=1, save_to_dirs=False)
    assert none.downscaled_path is None and os.listdir(tmp_path / "off") == ["00000-1.png"]


@pytest.mark.parametrize("action", ["Replace", "Add number suffix"])
def test_export_for_4chan_replaces_a_large_jpeg_with_the_downscaled_one(model, tmp_path, action):
    """A1111 writes the copy as `<same name>.jpg`: a JPEG sample or grid is itself replaced by the smaller JPEG;
    with "Add number suffix" the copy goes beside it as "-1.jpg"."""
    opts = options(samples_format="jpg", grid_format="jpg", target_side_length=32, save_images_replace_action=action)
    processed = generate(model, tmp_path, opts, batch_size=2)
    sample, _, grid = processed.saved_files
    assert names([sample, grid]) == ["00000-3.jpg", "grid-0000.jpg"]
    replaced = action == "Replace"
    for path, image, text in ((sample, processed.images[1], processed.infotexts[1]),
                              (grid, processed.images[0], processed.infotexts[0])):
        copy = path if replaced else path[: -len(".jpg")] + "-1.jpg"
        with Image.open(path) as main, Image.open(copy) as small:
            assert small.format == "JPEG" and max(small.size) == 32 and user_comment(copy) == text
            assert main.size == (small.size if replaced else image.size)
    assert sorted(os.listdir(Path(sample).parent)) == (
        ["00000-3.jpg", "00001-4.jpg"] if replaced else ["00000-3-1.jpg", "00000-3.jpg", "00001-4-1.jpg",
                                                         "00001-4.jpg"])
    assert sorted(os.listdir(Path(grid).parent)) == (["grid-0000.jpg"] if replaced else
                                                      ["grid-0000-1.jpg", "grid-0000.jpg"])


def test_export_for_4chan_in_extras(tmp_path):
    big = extras(tmp_path / "big", options(target_side_length=32))  # 24x24 upscaled to 48x48
    (path,) = big.saved_files
    with Image.open(Path(path).with_suffix(".jpg")) as small:
        assert small.size == (32, 32) and user_comment(str(Path(path).with_suffix(".jpg"))) == big.infotext
    heavy = extras(tmp_path / "heavy", options(img_downscale_threshold=0.0001))  # file size over the limit
    with Image.open(Path(heavy.saved_files[0]).with_suffix(".jpg")) as same_size:
        assert same_size.size == (48, 48)
    off = extras(tmp_path / "off", options(export_for_4chan=False, target_side_length=32))
    assert names(os.listdir(Path(off.saved_files[0]).parent)) == ["00000.png"]


# --- save_init_img, outdir_init_images ----------------------------------------------------------------------------

def test_save_init_img_saves_img2img_init_images_before_sampling(model, tmp_path):
    source = noise(7)
    source.info = {"parameters": "an earlier picture\nSteps: 5, Seed: 9", "icc_profile": b"\x00binary"}
    opts = options(save_init_img=True, outdir_init_images="mine/init")
    processed = generate(model, tmp_path, opts, "img2img", init_images=[source])
    digest = hashlib.md5(source.tobytes()).hexdigest()  # A1111's name: the pixels' md5
    folder = tmp_path / "mine" / "init"
    assert os.listdir(folder) == [f"{digest}.png"]  # no date folder
    with Image.open(folder / f"{digest}.png") as saved:
        assert np.array_equal(pixels(saved), pixels(source))
        assert saved.text == {"parameters": source.info["parameters"]}  # its own text items, no binary ones
    assert f"Init image hash: {digest}" in processed.infotexts[0] and processed.job.init_img_hash == digest
    # the same picture again replaces its file (A1111's default replace action)
    again = output_writer.save_init_images(processed.job, opts, str(tmp_path))
    assert again == [str(folder / f"{digest}.png")] and os.listdir(folder) == [f"{digest}.png"]


@pytest.mark.unit
def test_save_init_img_has_nothing_to_save_for_txt2img_and_is_off_by_default(tmp_path):
    txt2img = Job(prompt=PROMPT)
    assert output_writer.save_init_images(txt2img, options(save_init_img=True), str(tmp_path)) == []
    img2img = Job(init_images=[noise(7)])
    assert output_writer.save_init_images(img2img, Options(), str(tmp_path)) == []  # off, A1111's default
    assert os.listdir(tmp_path) == [] and img2img.extra_generation_params == {}


# --- Extras: use_original_name_batch, use_upscaler_name_as_suffix -------------------------------------------------

def test_use_original_name_batch_names_batch_results_after_their_files(tmp_path):
    batch = [("photo one.png", noise(1, (24, 24))), ("other.jpg", noise(2, (24, 24)))]
    on = extras(tmp_path / "on", Options(), extras_mode=1, image_folder=batch)  # on by default, as in A1111
    assert names(on.saved_files) == ["photo one.png", "other.png"]
    off = extras(tmp_path / "off", options(use_original_name_batch=False), extras_mode=1, image_folder=batch)
    assert names(off.saved_files) == ["00000.png", "00001.png"]
    for path, image in zip(on.saved_files, on.images):
        with Image.open(path) as saved:
            assert np.array_equal(pixels(saved), pixels(image))


def test_use_upscaler_name_as_suffix_adds_the_upscalers_to_extras_names(tmp_path):
    opts = options(use_upscaler_name_as_suffix=True)
    single = extras(tmp_path, opts)
    blended = extras(tmp_path, opts, extras_upscaler_2="Nearest", extras_upscaler_2_visibility=0.5)
    named = extras(tmp_path, opts, extras_mode=1, image_folder=[("photo.png", noise(1, (24, 24)))])
    # A1111: the tags follow "-" and the numbered name puts its own "-" before them
    assert names(single.saved_files + blended.saved_files + named.saved_files) == [
        "00000--Lanczos.png", "00001--Lanczos-Nearest 0.5.png", "photo-Lanczos.png"]
    assert names(extras(tmp_path / "off", Options()).saved_files) == ["00000.png"]


# --- directories_max_prompt_words, grid_prevent_empty_spots, grid_background_color --------------------------------

def test_directories_max_prompt_words_limits_prompt_words_folders(model, tmp_path):
    opts = options(directories_filename_pattern="[prompt_words]", directories_max_prompt_words=2)
    processed = generate(model, tmp_path, opts, batch_size=2)
    assert [Path(p).parent.name for p in processed.saved_files] == ["a red", "a red", "a red"]
    # an extension's FilenameGenerator without the argument reads the application's setting
    output_writer.configure(opts)
    assert images.FilenameGenerator(None, 1, "one two three", None).apply("[prompt_words]") == "one two"


@pytest.mark.parametrize("prevent", [False, True])
def test_grid_prevent_empty_spots_and_grid_background_color(model, tmp_path, prevent):
    opts = options(grid_prevent_empty_spots=prevent, grid_background_color="#ff0000")
    output_writer.configure(opts)  # A1111's image_grid reads them from the application's settings, as here
    processed = generate(model, tmp_path, opts, batch_size=3)
    with Image.open(processed.saved_files[-1]) as grid:
        if prevent:  # 3 images: one row of three, no empty spot
            assert grid.size == (192, 64)
        else:  # 2x2 with an empty spot in the background colour
            assert grid.size == (128, 128) and grid.getpixel((100, 100)) == (255, 0, 0)


# --- the Save / Zip buttons (output_writer.save_gallery) ---------------------------------------------------------

SAVE_NOW = datetime.datetime(2024, 7, 27, 13, 45, 6)


@pytest.fixture(scope="module")
def gallery(model, tmp_path_factory):
    """A txt2img result as the gallery shows it: the grid, then two images (seeds 3 and 4)."""
    processed = generate(model, tmp_path_factory.mktemp("job"), options(samples_save=False, grid_save=False),
                         batch_size=2)
    assert processed.index_of_first_image == 1
    return processed


def save(gallery: Processed, folder: Path, opts: Options, index: int = -1, make_zip: bool = False) -> list[str]:
    return output_writer.save_gallery(gallery.images, gallery.infotexts, opts=opts, folder=str(folder), index=index,
                                      index_of_first_image=gallery.index_of_first_image, make_zip=make_zip,
                                      now=SAVE_NOW)


def test_save_selected_only(gallery, tmp_path):
    selected = save(gallery, tmp_path / "a", Options(), index=2)  # on by default
    assert names(selected) == ["00000-4.png"]
    with Image.open(selected[0]) as saved:
        assert np.array_equal(pixels(saved), pixels(gallery.images[2]))
        assert saved.text == {"parameters": gallery.infotexts[2]}
    # the grid selected, or nothing selected: every image (A1111)
    assert names(save(gallery, tmp_path / "b", Options(), index=0)) == ["00000-3.png", "00001-3.png", "00002-4.png"]
    assert len(save(gallery, tmp_path / "c", Options(), index=-1)) == 3
    # off: every image whatever is selected
    assert len(save(gallery, tmp_path / "d", options(save_selected_only=False), index=2)) == 3


def test_save_write_log_csv(gallery, tmp_path):
    save(gallery, tmp_path, Options(), index=2)
    save(gallery, tmp_path, Options(), index=1)
    with open(tmp_path / "log.csv", encoding="utf8", newline="") as file:
        rows = list(csv.reader(file))
    params = infotext.parse_generation_parameters(gallery.infotexts[2])
    assert rows[0] == output_writer.LOG_FIELDS == ["prompt", "seed", "width", "height", "sampler_name", "cfg_scale",
                                                   "steps", "filename", "negative_prompt", "sd_model_name",
                                                   "sd_model_hash"]
    assert rows[1] == [PROMPT, "4", "64", "64", params["Sampler"], params["CFG scale"], "1", "00000-4.png", "",
                       "tiny-sd1", params.get("Model hash", "")]
    assert rows[2][1] == "3" and rows[2][7] == "00001-3.png" and len(rows) == 3
    # off: no log
    save(gallery, tmp_path / "off", options(save_write_log_csv=False), index=2)
    assert os.listdir(tmp_path / "off") == ["00000-4.png"]


def test_save_write_log_csv_brings_an_older_log_to_the_new_columns(gallery, tmp_path):
    tmp_path.joinpath("log.csv").write_text("prompt,seed,width,height,sampler_name,cfg_scale,steps,filename,"
                                            "negative_prompt\r\nold,1,8,8,Euler,7,20,00000-1.png,\r\n", encoding="utf8")
    save(gallery, tmp_path, Options(), index=2)
    with open(tmp_path / "log.csv", encoding="utf8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == output_writer.LOG_FIELDS
    assert rows[1] == ["old", "1", "8", "8", "Euler", "7", "20", "00000-1.png", "", "", ""]
    assert rows[2][7] == "00000-4.png" and len(rows) == 3


def test_use_save_to_dirs_for_ui(gallery, tmp_path):
    flat = save(gallery, tmp_path / "flat", Options(), index=2)  # off by default
    assert Path(flat[0]).parent == tmp_path / "flat"
    opts = options(use_save_to_dirs_for_ui=True, directories_filename_pattern="[prompt_words]-[date]")
    nested = save(gallery, tmp_path / "nested", opts, index=2)
    assert Path(nested[0]) == tmp_path / "nested" / "a red circle-2024-07-27" / "00000-4.png"
    with open(tmp_path / "nested" / "log.csv", encoding="utf8", newline="") as file:
        assert list(csv.reader(file))[1][7] == os.path.join("a red circle-2024-07-27", "00000-4.png")


def test_save_button_formats_quality_text_and_metadata(gallery, tmp_path):
    opts = options(samples_format="jpg", jpeg_quality=10, save_txt=True)
    path, txt = save(gallery, tmp_path / "jpg", opts, index=2)
    assert names([path, txt]) == ["00000-4.jpg", "00000-4.txt"]
    with Image.open(path) as saved:
        assert np.array_equal(pixels(saved), reencoded(gallery.images[2], "JPEG", quality=10))
    assert user_comment(path) == gallery.infotexts[2]
    assert Path(txt).read_text(encoding="utf8") == gallery.infotexts[2] + "\n"
    (bare,) = save(gallery, tmp_path / "bare", options(samples_format="jpg", enable_pnginfo=False), index=2)
    with Image.open(bare) as saved:
        assert "exif" not in saved.info
    (lossless,) = save(gallery, tmp_path / "webp", options(samples_format="webp", webp_lossless=True), index=2)
    with Image.open(lossless) as saved:
        assert saved.format == "WEBP" and np.array_equal(pixels(saved), pixels(gallery.images[2]))


def test_grid_zip_filename_pattern_names_the_zip_archive(gallery, tmp_path):
    files = save(gallery, tmp_path / "default", options(save_txt=True), make_zip=True)
    archive, *saved = files
    # A1111's default "[datetime]_[[model_name]]_[seed]-[seed_last]": the first and the last saved image's seed
    assert names([archive]) == ["20240727134506_[tiny-sd1]_3-4.zip"]
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == sorted(names(saved)) and len(saved) == 6  # 3 images, 3 .txt
        assert zipped.read(names(saved)[0]) == Path(saved[0]).read_bytes()
    custom = save(gallery, tmp_path / "custom", options(grid_zip_filename_pattern="[seed]-[prompt_words]"), index=2,
                  make_zip=True)
    assert names(custom) == ["4-a red circle.zip", "00000-4.png"]


# --- A1111's entry points and the application's settings ---------------------------------------------------------

def test_save_image_without_settings_uses_the_application_settings(tmp_path):
    folder = str(tmp_path)
    default, _ = images.save_image(noise(), folder, seed=1, info="x", save_to_dirs=False)  # A1111's defaults
    assert names([default]) == ["00000-1.png"]
    output_writer.configure(options(save_txt=True, enable_pnginfo=False, samples_filename_pattern="[seed]x",
                                    target_side_length=32, save_images_add_number=False))
    path, txt = images.save_image(noise(), folder, seed=2, info="x", save_to_dirs=False)
    assert names([path, txt]) == ["2x.png", "2x.txt"]
    with Image.open(path) as saved, Image.open(Path(path).with_suffix(".jpg")) as small:
        assert saved.text == {} and max(small.size) == 32  # enable_pnginfo off; export_for_4chan's copy
    # an argument given wins over the setting
    _, no_txt = images.save_image(noise(), folder, seed=3, info="x", save_to_dirs=False, save_txt=False,
                                  add_number=True)
    assert no_txt is None and (tmp_path / "00001-3x.png").exists()  # one above 00000-1.png


def test_the_application_registers_its_settings_at_start(app):
    assert output_writer.app_opts() is app.opts


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
    assert (settings.jpeg_quality, settings.samples_format, settings.export_for_4chan) == (55, "webp", True)
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


# --- grid_only_if_multiple, save_mask, save_mask_composite ------------------------------------------------------

def test_grid_only_if_multiple_off_makes_and_saves_a_grid_of_one_image(model, tmp_path):
    alone = generate(model, tmp_path / "on", Options())  # the default: no grid for one picture
    assert len(alone.images) == 1 and not any(Path(p).name.startswith("grid") for p in alone.saved_files)
    grid = generate(model, tmp_path / "off", options(grid_only_if_multiple=False))
    assert len(grid.images) == 2 and grid.index_of_first_image == 1  # the grid first, as A1111 returns it
    (grid_file,) = [p for p in grid.saved_files if Path(p).name.startswith("grid")]
    with Image.open(grid_file) as saved:
        assert saved.size == (64, 64) and pixels(saved).tolist() == pixels(grid.images[1]).tolist()


def test_save_mask_and_mask_composite_for_inpainting(model, tmp_path):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    opts = options(save_mask=True, save_mask_composite=True)
    processed = generate(model, tmp_path, opts, "img2img", image_mask=mask, mask_blur=0, inpainting_fill=1)
    folder = Path(processed.saved_files[0]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["00000-3.png", "00001-3-mask.png",
                                                        "00002-3-mask-composite.png"]
    with Image.open(folder / "00001-3-mask.png") as saved_mask:
        assert saved_mask.mode == "RGB" and saved_mask.getpixel((32, 32)) == (255, 255, 255)
        assert saved_mask.getpixel((2, 2)) == (0, 0, 0)
    with Image.open(folder / "00002-3-mask-composite.png") as composite:
        assert composite.mode == "RGBA"
        assert composite.getpixel((2, 2))[3] == 0  # outside the mask: transparent
        assert composite.getpixel((32, 32)) == (*processed.images[0].getpixel((32, 32)), 255)
    # off (the default), and for img2img without a mask: only the sample
    plain = generate(model, tmp_path / "off", Options(), "img2img", image_mask=mask, mask_blur=0)
    assert names(os.listdir(Path(plain.saved_files[0]).parent)) == ["00000-3.png"]
    unmasked = generate(model, tmp_path / "nomask", opts, "img2img")
    assert names(os.listdir(Path(unmasked.saved_files[0]).parent)) == ["00000-3.png"]
