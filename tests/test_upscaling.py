"""Upscaler registry: real tiny ESRGAN / RealESRGAN-compact model files loaded by spandrel, run, tiled, refused
when crafted, and used by hires fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from modules import cmd_args, upscaling
from modules.models.safe_load import CheckpointLoadError
from modules.processing import Job, JobError
from modules.upscaling import UpscalerRegistry

LANCZOS = Image.Resampling.LANCZOS


def esrgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 4x RRDBNet (old ESRGAN key layout, 1 block, 8 filters) with weights large enough that its output depends
    clearly on the input (PyTorch's default init gives a constant image through this tiny net)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict()
    state = {key: torch.randn(value.shape, generator=generator) * 0.1 for key, value in shapes.items()}
    state["model.10.bias"] = torch.full_like(state["model.10.bias"], 0.5)  # the last conv: centre the output
    return state


def to_new_layout(old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same 4x/1-block RRDBNet in the Real-ESRGAN (BasicSR) key layout: conv_first, body.N.rdbM.convK, ..."""
    fixed = {"model.0": "conv_first", "model.1.sub.1": "conv_body", "model.3": "conv_up1", "model.6": "conv_up2",
             "model.8": "conv_hr", "model.10": "conv_last"}
    new = {}
    for key, value in old.items():
        layer, kind = key.rsplit(".", 1)
        if layer in fixed:
            new[f"{fixed[layer]}.{kind}"] = value
        else:  # model.1.sub.<block>.RDB<n>.conv<k>.0
            _, _, _, block, rdb, conv, _ = layer.split(".")
            new[f"body.{block}.{rdb.lower()}.{conv}.{kind}"] = value
    return new


def compact_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 2x SRVGGNetCompact (RealESRGAN's compact net: 2 convs, 8 features)."""
    torch.manual_seed(seed)
    return {key: value.clone() for key, value in Compact(num_feat=8, num_conv=2, upscale=2).state_dict().items()}


def source_image(size: int = 24, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    smooth = np.kron(rng.randint(0, 256, (size // 4, size // 4, 3)), np.ones((4, 4, 1)))  # blocks, plus noise
    noisy = np.clip(smooth + rng.randint(-20, 21, smooth.shape), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def model_dirs(tmp_path) -> dict[str, str]:
    """The upscaler folders of a data dir (flags' defaults), with a tiny ESRGAN (.pth) and a compact (.safetensors,
    in a subfolder) model."""
    args = cmd_args.parse_args(["--data-dir", str(tmp_path)], environ={})
    folders = upscaling.model_folders(args)
    assert folders["ESRGAN"] == str(tmp_path / "models" / "ESRGAN") == args.esrgan_models_path
    assert folders["HAT"] == str(tmp_path / "models" / "HAT")
    os.makedirs(folders["ESRGAN"])
    torch.save(esrgan_state_dict(), os.path.join(folders["ESRGAN"], "4x-tiny-esrgan.pth"))
    Path(folders["ESRGAN"], "notes.txt").write_text("not a model")
    compact_dir = Path(folders["RealESRGAN"], "compact")
    compact_dir.mkdir(parents=True)
    save_file(compact_state_dict(), str(compact_dir / "tiny-compact.safetensors"))
    return folders


def test_model_files_are_listed_with_their_file_stems(model_dirs):
    registry = UpscalerRegistry(model_dirs)
    records = [info.api_record() for info in registry.list()]
    assert [r["name"] for r in records] == ["None", "Lanczos", "Nearest", "4x-tiny-esrgan", "tiny-compact"]
    assert records[1] == {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None, "scale": 4}
    esrgan = records[3]
    assert esrgan["model_name"] == "ESRGAN" and esrgan["model_url"] is None and esrgan["scale"] == 4
    assert esrgan["model_path"] == os.path.join(model_dirs["ESRGAN"], "4x-tiny-esrgan.pth")
    compact = registry.find("tiny-compact")
    assert compact.model_name == "RealESRGAN" and compact.scale == 4  # A1111's default until loaded
    registry.load(compact)
    assert compact.scale == 2  # the loaded model's real scale


def test_model_upscales_to_exact_sizes_and_really_runs(model_dirs):
    registry = UpscalerRegistry(model_dirs)
    image = source_image()
    for name, native in (("4x-tiny-esrgan", 4), ("tiny-compact", 2)):
        model = registry.load(registry.find(name))
        one_pass = upscaling.upscale_with_model(model, image)
        assert one_pass.size == (24 * native, 24 * native)
        lanczos = image.resize(one_pass.size, LANCZOS)
        assert np.abs(pixels(one_pass) - pixels(lanczos)).mean() > 5, name  # the model ran, not a resize

        for scale in (2, 4):
            result = registry.upscale(image, name, scale=scale)
            assert result.size == (24 * scale, 24 * scale)
        # 4x model, 2x wanted: one pass, then Lanczos down to the target (A1111's Upscaler.upscale)
        if native == 4:
            assert np.array_equal(pixels(registry.upscale(image, name, scale=2)),
                                  pixels(one_pass.resize((48, 48), LANCZOS)))
        # 2x model, 4x wanted: the model runs twice
        if native == 2:
            twice = upscaling.upscale_with_model(model, one_pass)
            assert np.array_equal(pixels(registry.upscale(image, name, scale=4)), pixels(twice))
        exact = registry.upscale(image, name, size=(50, 30))
        assert exact.size == (50, 30)


def test_new_key_layout_wrapped_in_params_ema_gives_the_same_model(model_dirs):
    """Real-ESRGAN's own .pth files hold {"params_ema": {...}} in the BasicSR key layout."""
    torch.save({"params_ema": to_new_layout(esrgan_state_dict())},
               os.path.join(model_dirs["ESRGAN"], "RealESRGAN_x4plus-tiny.pth"))
    registry = UpscalerRegistry(model_dirs)
    image = source_image()
    assert np.array_equal(pixels(registry.upscale(image, "RealESRGAN_x4plus-tiny", scale=4)),
                          pixels(registry.upscale(image, "4x-tiny-esrgan", scale=4)))


def test_tiling_matches_a_single_pass(model_dirs):
    image = source_image()
    whole = UpscalerRegistry(model_dirs)
    tiled = UpscalerRegistry(model_dirs, tile=16, overlap=8)   # 24 px: 2×2 overlapping tiles
    seams = UpscalerRegistry(model_dirs, tile=12, overlap=0)   # no overlap: hard seams, for contrast
    assert upscaling._tile_starts(24, 16, 8) == [0, 8]
    for name in ("4x-tiny-esrgan", "tiny-compact"):
        reference = pixels(whole.upscale(image, name, scale=2))
        difference = np.abs(pixels(tiled.upscale(image, name, scale=2)) - reference)
        assert difference.max() <= 6 and difference.mean() < 1, (name, difference.max(), difference.mean())
        if name == "4x-tiny-esrgan":  # its receptive field is wide enough that hard tile edges show
            assert np.abs(pixels(seams.upscale(image, name, scale=2)) - reference).max() > 3 * difference.max()


def test_alpha_channel_is_kept(model_dirs):
    image = source_image().convert("RGBA")
    image.putalpha(Image.new("L", image.size, 128))
    result = UpscalerRegistry(model_dirs).upscale(image, "tiny-compact", scale=2)
    assert result.mode == "RGBA" and result.size == (48, 48) and result.getpixel((10, 10))[3] == 128


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, model_dirs):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"model.0.weight": Exploit()}, os.path.join(model_dirs["ESRGAN"], "evil.pth"))
    registry = UpscalerRegistry(model_dirs)
    assert "evil" in registry.names()
    with pytest.raises(CheckpointLoadError, match=r"evil\.pth: refused to load"):
        registry.upscale(source_image(), "evil", scale=2)
    assert not marker.exists()

    torch.save({"weight": torch.zeros(3)}, os.path.join(model_dirs["ESRGAN"], "unknown-arch.pth"))
    with pytest.raises(CheckpointLoadError, match=r"unknown-arch\.pth: not an upscaler model"):
        registry.upscale(source_image(), "unknown-arch", scale=2)


def test_unknown_upscaler_lists_the_valid_names(model_dirs):
    registry = UpscalerRegistry(model_dirs)
    with pytest.raises(ValueError, match=r"Unknown upscaler 'Magic'\. Valid upscalers: None, Lanczos, Nearest, "
                                         r"4x-tiny-esrgan, tiny-compact"):
        registry.upscale(source_image(), "Magic", scale=2)


def test_builtins_are_pil_resizes():
    image = source_image()
    registry = UpscalerRegistry({})
    assert np.array_equal(pixels(registry.upscale(image, "Lanczos", scale=2)),
                          pixels(image.resize((48, 48), LANCZOS)))
    assert np.array_equal(pixels(registry.upscale(image, "Nearest", size=(30, 20))),
                          pixels(image.resize((30, 20), Image.Resampling.NEAREST)))
    with pytest.raises(ValueError, match="scale factor or a target size"):
        registry.upscale(image, "Lanczos")


def test_hires_fix_with_a_model_upscaler(app):
    folder = Path(app.cmd_opts.esrgan_models_path)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(compact_state_dict(), folder / "2x-compact.pth")  # added after start: found without a refresh
    assert "2x-compact" in [info.name for info in upscaling.list_upscalers()]
    processed = app.run_job(Job(prompt="p", seed=3, width=32, height=32, steps=1, enable_hr=True, hr_scale=2,
                                hr_second_pass_steps=1, hr_upscaler="2x-compact", denoising_strength=0.5,
                                do_not_save_samples=True))
    assert processed.images[0].size == (64, 64)
    assert "Hires upscale: 2, Hires steps: 1, Hires upscaler: 2x-compact" in processed.info
    with pytest.raises(JobError, match="Unknown hires upscaler 'Magic'.*Lanczos, Nearest, 2x-compact"):
        app.run_job(Job(prompt="p", width=32, height=32, steps=1, enable_hr=True, hr_upscaler="Magic"))
