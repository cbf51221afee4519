"""The Extras operation (modules/postprocessing.py) and its tab's handler, with real images, settings and files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.options import Options
from modules.postprocessing import ExtrasError, ExtrasRequest, run_extras
from modules.upscaling import UpscalerRegistry

LANCZOS = Image.Resampling.LANCZOS
SOURCE_PARAMETERS = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 24x24"


def picture(seed: int = 0, size: tuple[int, int] = (24, 24)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def save_png(image: Image.Image, path: Path, parameters: str | None = None) -> Path:
    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    image.save(path, pnginfo=info)
    return path


@pytest.fixture
def run(tmp_path):
    """run_extras with default settings, the data dir in tmp_path and only the built-in upscalers."""
    def runner(request: ExtrasRequest, **kwargs):
        return run_extras(request, Options(), str(tmp_path), registry=UpscalerRegistry({}), **kwargs)
    return runner


def test_single_image_scale_by_two_with_lanczos(run, tmp_path):
    image = picture()
    result = run(ExtrasRequest(image=image, upscaling_resize=2, extras_upscaler_1="Lanczos"))
    (output,) = result.images
    assert output.size == (48, 48)
    assert np.array_equal(pixels(output), pixels(image.resize((48, 48), LANCZOS)))
    assert result.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert result.infotext in result.html_info
    (path,) = result.saved_files
    assert Path(path) == tmp_path / "outputs" / "extras-images" / "00000.png"  # no date folder, as A1111
    with Image.open(path) as saved:
        assert saved.size == (48, 48)
        assert saved.text["extras"] == saved.text["postprocessing"] == result.infotext
        assert "parameters" not in saved.text
    second = run(ExtrasRequest(image=image, upscaling_resize=2, extras_upscaler_1="Lanczos"))
    assert second.saved_files[0].endswith("00001.png")


def test_scale_to_with_and_without_crop(run):
    image = picture(size=(24, 24))
    cropped = run(ExtrasRequest(image=image, resize_mode=1, upscaling_resize_w=48, upscaling_resize_h=32,
                                upscaling_crop=True, extras_upscaler_1="Lanczos"), save_output=False)
    (output,) = cropped.images
    assert output.size == (48, 32)
    assert np.array_equal(pixels(output), pixels(image.resize((48, 48), LANCZOS).crop((0, 8, 48, 40))))
    assert cropped.infotext == ("Postprocess upscale to: 48x32, Postprocess crop to: 48x32, "
                                "Postprocess upscaler: Lanczos")
    assert cropped.saved_files == []
    # without crop A1111 scales by the larger ratio and keeps the aspect ratio
    kept = run(ExtrasRequest(image=image, resize_mode=1, upscaling_resize_w=48, upscaling_resize_h=32,
                             upscaling_crop=False, extras_upscaler_1="Lanczos"), save_output=False)
    assert kept.images[0].size == (48, 48)
    # scale by, with A1111's "Max side length": the longer side is limited, the aspect ratio kept
    limited = run(ExtrasRequest(image=picture(size=(24, 16)), upscaling_resize=4, max_side_length=64,
                                extras_upscaler_1="Lanczos"), save_output=False)
    assert limited.images[0].size == (64, 42)
    assert limited.infotext == "Postprocess upscale by: 4, Max side length: 64, Postprocess upscaler: Lanczos"


def test_upscaler_2_visibility_blends_both_results(run):
    image = picture()
    result = run(ExtrasRequest(image=image, upscaling_resize=2, extras_upscaler_1="Lanczos",
                               extras_upscaler_2="Nearest", extras_upscaler_2_visibility=0.5), save_output=False)
    expected = Image.blend(image.resize((48, 48), LANCZOS), image.resize((48, 48), Image.Resampling.NEAREST), 0.5)
    assert np.array_equal(pixels(result.images[0]), pixels(expected))
    assert result.infotext == ("Postprocess upscale by: 2, Postprocess upscaler: Lanczos, "
                               "Postprocess upscaler 2: Nearest")
    # upscaler 1 "None" does nothing at all (A1111), whatever upscaler 2 says
    unchanged = run(ExtrasRequest(image=image, extras_upscaler_2="Nearest", extras_upscaler_2_visibility=1),
                    save_output=False)
    assert unchanged.images[0].size == (24, 24) and unchanged.infotext == ""


def test_batch_of_files_keeps_names_and_source_parameters(run, tmp_path):
    sources = tmp_path / "in"
    sources.mkdir()
    first = save_png(picture(1), sources / "first.png", SOURCE_PARAMETERS)
    second = save_png(picture(2), sources / "second.png")
    result = run(ExtrasRequest(extras_mode=1, image_folder=[str(first), second, picture(3)], upscaling_resize=2,
                               extras_upscaler_1="Lanczos"))
    out = tmp_path / "outputs" / "extras-images"
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "first.png", "second.png"]
    assert [Path(p).name for p in result.saved_files] == ["first.png", "second.png", "00000.png"]
    assert len(result.images) == 3 and all(im.size == (48, 48) for im in result.images)
    with Image.open(out / "first.png") as saved:
        assert saved.text["parameters"] == SOURCE_PARAMETERS  # the source's generation parameters are kept
        assert saved.text["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    with Image.open(out / "second.png") as saved:
        assert "parameters" not in saved.text and saved.text["postprocessing"].startswith("Postprocess upscale by")


def test_batch_from_directory(run, tmp_path):
    sources = tmp_path / "in"
    sources.mkdir()
    for n in range(3):
        save_png(picture(n), sources / f"img{n}.png", SOURCE_PARAMETERS if n == 0 else None)
    (sources / "readme.txt").write_text("not an image")
    target = tmp_path / "out"
    result = run(ExtrasRequest(extras_mode=2, input_dir=str(sources), output_dir=str(target),
                               show_extras_results=False, resize_mode=1, upscaling_resize_w=40,
                               upscaling_resize_h=30, extras_upscaler_1="Nearest"))
    assert sorted(p.name for p in target.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert result.images == []  # "Show result images" off
    assert result.skipped == ["readme.txt"] and "readme.txt" in result.html_info
    with Image.open(target / "img0.png") as saved:
        assert saved.size == (40, 30)
        assert saved.text["parameters"] == SOURCE_PARAMETERS
        assert saved.text["extras"] == ("Postprocess upscale to: 40x30, Postprocess crop to: 40x30, "
                                        "Postprocess upscaler: Nearest")
    # without an output directory: the extras folder
    default = run(ExtrasRequest(extras_mode=2, input_dir=str(sources), extras_upscaler_1="Lanczos"))
    assert len(default.images) == 3
    assert len(list((tmp_path / "outputs" / "extras-images").iterdir())) == 3


def test_bad_input_gives_clear_errors(run, tmp_path):
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(ExtrasError, match=r"notes\.png: not an image file"):
        run(ExtrasRequest(image=str(text_file), extras_upscaler_1="Lanczos"))
    with pytest.raises(ExtrasError, match=r"notes\.png: not an image file"):
        run(ExtrasRequest(extras_mode=1, image_folder=[str(text_file)], extras_upscaler_1="Lanczos"))
    with pytest.raises(ExtrasError, match="No image selected"):
        run(ExtrasRequest(extras_upscaler_1="Lanczos"))
    with pytest.raises(ExtrasError, match="Input directory not found: .*missing"):
        run(ExtrasRequest(extras_mode=2, input_dir=str(tmp_path / "missing"), extras_upscaler_1="Lanczos"))
    with pytest.raises(ExtrasError, match="output directory is the input directory"):
        run(ExtrasRequest(extras_mode=2, input_dir=str(tmp_path), output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"Unknown upscaler 'ESRGAN_4x'\. Valid upscalers: None, Lanczos, Nearest"):
        run(ExtrasRequest(image=picture(), extras_upscaler_1="ESRGAN_4x"))
    with pytest.raises(ExtrasError, match="upscaling_resize must be above 0"):
        run(ExtrasRequest(image=picture(), upscaling_resize=0, extras_upscaler_1="Lanczos"))
    assert not (tmp_path / "outputs").exists()  # nothing was written


# --- the tab --------------------------------------------------------------------------------------------------

def tab_values(image: Image.Image | None, **overrides) -> list:
    """The Generate button's inputs, in order, as the page sends them."""
    values = {"extras_mode": 0, "image": image, "image_batch": None, "input_dir": "", "output_dir": "",
              "show_extras_results": True, "resize_mode": 0, "upscaling_resize": 2.0, "max_side_length": 0,
              "upscaling_resize_w": 512.0, "upscaling_resize_h": 512.0, "upscaling_crop": True,
              "extras_upscaler_1": "Lanczos", "extras_upscaler_2": "None", "extras_upscaler_2_visibility": 0.0}
    values.update(overrides)
    return list(values.values())


def test_tab_handler_upscales_saves_and_waits_for_the_queue(app):
    from modules.ui import extras

    with gr.Blocks():
        fields = extras.create_tab()
    assert fields["image"].elem_id == "extras_image"
    for name in ("extras_upscaler_1", "extras_upscaler_2", "extras_upscaler_2_visibility"):
        assert fields[name].elem_id == name
    for name in ("upscaling_resize", "upscaling_resize_w", "upscaling_resize_h"):
        assert fields[name].elem_id == f"extras_{name}"
    assert fields["generate"].elem_id == "extras_generate"
    assert fields["extras_upscaler_1"].choices[0][0] == "None"

    image = picture()
    done: dict[str, object] = {}
    app.queue_lock.acquire()  # a generation is running: the extras job must wait for it
    try:
        worker = threading.Thread(target=lambda: done.setdefault("result", extras.run_extras(*tab_values(image))))
        worker.start()
        time.sleep(0.3)
        assert "result" not in done
    finally:
        app.queue_lock.release()
    worker.join(10)
    gallery, html_info = done["result"]
    assert gallery[0].size == (48, 48)
    assert np.array_equal(pixels(gallery[0]), pixels(image.resize((48, 48), LANCZOS)))
    assert "Postprocess upscale by: 2, Postprocess upscaler: Lanczos" in html_info
    saved = Path(app.cmd_opts.data_dir) / "outputs" / "extras-images" / "00000.png"
    assert saved.is_file()

    with pytest.raises(gr.Error, match="No image selected"):
        extras.run_extras(*tab_values(None))
    with pytest.raises(gr.Error, match="Input directory not found"):
        extras.run_extras(*tab_values(None, extras_mode=2, input_dir="/nonexistent/folder"))
    assert not app.queue_lock.locked()
