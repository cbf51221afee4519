"""Live previews: made by the core every N steps during a job, by full decode or the cheap linear map."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from modules import previews
from modules.processing import Job


def test_preview_methods(app):
    model = app.models.get()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    full = previews.decode_preview(model, latents, "Full")
    cheap = previews.decode_preview(model, latents, "Approx cheap")
    assert full.size == (64, 64) and cheap.size == (8, 8)
    assert previews.preview_method(model, "Auto") == "Full"  # the demo model's VAE is tiny
    pixel = previews.approx_cheap(torch.tensor([1.0, 0, 0, 0]).view(4, 1, 1), sdxl=False)[:, 0, 0]
    assert torch.allclose(pixel, torch.tensor(previews.SD_COEFFICIENTS[0]))


@pytest.mark.parametrize("mode", ["medvram", "lowvram"])
def test_offloaded_vaes_are_never_used_for_previews(mode, tiny_checkpoints):
    """--medvram keeps the VAE off the device while sampling, --lowvram moves its layers on use: a side-thread
    preview decode would meet CPU weights or move layers under the real decode, so the cheap map is used."""
    from modules import memory
    from modules.devices import DevicePolicy
    from modules.models.loader import load_model
    from modules.models.registry import CheckpointInfo

    path = tiny_checkpoints["sd1"]
    policy = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32)
    model = load_model(CheckpointInfo(str(path), path.name), policy,
                       place=lambda m: memory.place(m, mode, torch.device("cpu")))
    assert previews.preview_method(model, "Full") == "Approx cheap"
    assert previews.preview_method(model, "Auto") == "Approx cheap"  # tiny VAE: "Full" in normal mode


def test_state_holds_a_preview_every_n_steps(app):
    app.opts.set("show_progress_every_n_steps", 2)
    seen = []
    app.state.listeners.append(lambda event: seen.append((event.step, app.state.current_image_step)))
    app.run_job(Job(prompt="a red circle", seed=1, steps=5, width=64, height=64, do_not_save_samples=True))
    # the preview listener runs first (registered at start-up): after steps 2 and 4 a new preview exists
    assert [step for step, preview_step in seen if step == preview_step] == [2, 4]
    app.opts.set("live_previews_enable", False)
    seen.clear()
    app.run_job(Job(prompt="a red circle", seed=1, steps=4, width=64, height=64, do_not_save_samples=True))
    assert all(preview_step == -1 for _, preview_step in seen)


def _original_taesd_file(folder, seed: int = 0):
    """A TAESD decoder saved the way madebyollin's file is: one Sequential whose item 0 is the clamp."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    decoder = AutoencoderTiny().decoder.eval()
    state = {f"{int(k.split('.')[1]) + 1}.{k.split('.', 2)[2]}": v for k, v in decoder.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "taesd_decoder.pth")
    return decoder


def test_taesd_preview_from_the_original_file_layout(app, tmp_path):
    model = app.models.get()
    folder = tmp_path / "VAE-taesd"
    assert previews.preview_method(model, "TAESD", str(folder)) == "Full"  # not installed: falls back
    reference = _original_taesd_file(folder)
    assert previews.preview_method(model, "Auto", str(folder)) == "TAESD"
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    image = previews.decode_preview(model, latents, "Auto", str(folder))
    with torch.no_grad():
        expected = ((reference(latents[:1])[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert image.size == (64, 64)
    assert (torch.tensor(list(image.getdata())).view(64, 64, 3).numpy() == expected).all()


def test_taesd_live_preview_during_a_job(app):
    _original_taesd_file(Path(app.cmd_opts.models_dir) / "VAE-taesd")
    previews._taesd_cache.clear()
    app.opts.set("show_progress_every_n_steps", 1)
    app.run_job(Job(prompt="a red circle", seed=1, steps=2, width=64, height=64, do_not_save_samples=True))
    assert [Path(p).name for p in previews._taesd_cache] == ["taesd_decoder.pth"]  # it made the previews


def test_a_code_running_taesd_pickle_is_refused(app, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "VAE-taesd"
    folder.mkdir()
    (folder / "taesd_decoder.pth").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(Exception, match="taesd_decoder.pth"):
        previews.decode_preview(app.models.get(), torch.zeros(1, 4, 8, 8), "TAESD", str(folder))
    assert not marker.exists()
