"""Live previews: made by the core every N steps during a job, by full decode or the cheap linear map."""

from __future__ import annotations

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
