"""Named points in the core where adapters attach: the core fires, adapters listen.

The core (processing, sampling, output writing, the job runner) calls `fire("cfg_denoiser", params)` at A1111's
points and never imports an adapter. The A1111 surface (`modules.script_callbacks`) connects its dispatchers here
when it is imported; other adapters (the UI, built-in extensions) may connect their own. A listener that raises is
logged and skipped: one broken extension must not stop saving or sampling.

The parameter objects are the ones A1111's callbacks receive; they live here, in the core, because the core builds
them (`modules.script_callbacks` re-exports them under A1111's names).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module stays importable without loading torch
    import torch
    from PIL import Image

log = logging.getLogger("webui")

# Every point the core fires, with what it passes. Adapters may only connect to these (a typo is an error).
POINTS: dict[str, str] = {
    "before_image_saved": "ImageSaveParams, before an output file is written (image and pnginfo may be replaced)",
    "image_saved": "ImageSaveParams, after an output file is written (filename is the full path)",
    "image_grid": "ImageGridLoopParams, before a grid is assembled (cols/rows/imgs may be changed)",
    "extra_noise": "ExtraNoiseParams, before img2img's noise is added to the latents (noise may be replaced)",
    "cfg_denoiser": "CFGDenoiserParams, before every denoiser call",
    "cfg_denoised": "CFGDenoisedParams, after every denoiser call, before guidance is combined",
    "cfg_after_cfg": "AfterCFGCallbackParams, after guidance is combined",
    "before_token_counter": "BeforeTokenCounterParams, before the UI's token counter counts a prompt",
    "model_loaded": "the loaded model wrapper, after every checkpoint load",
    "sampler_start": "SamplerStartParams, before every sampling pass (a listener may attach guidance/step overrides)",
    "sampler_name": "SamplerNameParams, before a sampler is built from a name (a listener may name the core sampler)",
    "extra_networks_activate": "ExtraNetworksParams, each batch, once the first prompt's network tags are parsed",
    "extra_networks_deactivate": "ExtraNetworksParams, once a job is done with its networks",
    "extras_image": "ExtrasImageParams, each Extras image after upscaling, before it is saved (image/info may change)",
}

_lock = threading.Lock()
_listeners: dict[str, tuple[Callable[..., Any], ...]] = {point: () for point in POINTS}


def connect(point: str, listener: Callable[..., Any]) -> None:
    """Call `listener(*args)` whenever the core fires `point` (once per listener, however often connected)."""
    if point not in POINTS:
        raise KeyError(f"unknown hook point {point!r}; known: {', '.join(POINTS)}")
    with _lock:
        if listener not in _listeners[point]:
            _listeners[point] = (*_listeners[point], listener)


def disconnect(point: str, listener: Callable[..., Any]) -> None:
    with _lock:
        _listeners[point] = tuple(fn for fn in _listeners[point] if fn != listener)


def active(point: str) -> bool:
    """Whether anything listens (lets hot loops skip building parameter objects)."""
    listeners = _listeners[point]
    return any(getattr(fn, "has_listeners", lambda: True)() for fn in listeners)


def fire(point: str, *args: Any) -> None:
    """Call every listener of `point` in connection order; one that raises is logged and skipped."""
    for listener in _listeners[point]:
        try:
            listener(*args)
        except Exception:
            log.exception("Error in a listener of %s (%s)", point, getattr(listener, "__qualname__", listener))


# --- what the points pass -----------------------------------------------------------------------------------------

@dataclass
class ImageSaveParams:
    """What `before_image_saved` may change (image, pnginfo) and what `image_saved` reports.

    `filename`: before saving, the folder the image goes to (the numbered name is chosen atomically while writing);
    after saving, the file's full path."""

    image: Any
    p: Any
    filename: str
    pnginfo: dict[str, Any]


@dataclass
class ImageGridLoopParams:
    """Before a grid is drawn: a listener may reorder `imgs` or change `cols`/`rows` (A1111's class of that name)."""

    imgs: list[Any]
    cols: int
    rows: int


@dataclass
class ExtraNoiseParams:
    """img2img, before the noise is added to the encoded image: `noise` may be replaced (A1111's class)."""

    noise: Any
    x: Any
    xi: Any = None


@dataclass
class CFGDenoiserParams:
    """Before each denoiser call. `x` are the model-input latents (every conditioning row, then the unconditional
    rows), `sigma` the scheduler's timestep; changing `x`, `text_cond` or `text_uncond` changes what the model sees."""

    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """After each denoiser call, before guidance is combined: `x` is the model's output, which may be replaced."""

    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    """After guidance is combined, every step: `x` is the guided model prediction the scheduler steps with (noise or
    v, as the diffusers scheduler takes it; A1111's k-diffusion gives the denoised latents), which may be replaced."""

    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class BeforeTokenCounterParams:
    """Before the token counter counts: `prompt` may be rewritten (a wildcard extension expands it, say)."""

    prompt: str
    steps: int
    styles: list[str]
    is_positive: bool = True


@dataclass
class SamplerStartParams:
    """Before a sampling pass (the first pass, and again for a hires pass) of `job` with `sampler` (the core's
    configured scheduler), `steps` asked for and `total_steps` denoiser steps to run. A listener may attach:

    - `combine_denoised(x_out, conds_list, uncond, cond_scale, step) -> denoised`: classifier-free guidance done on
      denoised (x0) predictions, as A1111's CFGDenoiser does: `x_out` holds every prompt part's row then one
      unconditional row per image, `conds_list[i]` the (row, weight) pairs of image i, `uncond` the unconditional
      text embeddings; it returns one denoised latent per image.
    - `step_callback(d)`: called every step with k-diffusion's callback dict (`x`, `i`, `sigma`, `sigma_hat`,
      `denoised`: the latents and the guided denoised prediction, in k-diffusion's scaling); changing `x` or
      `denoised` (in place or by replacing the entry) changes the step, as it does in A1111.
    """

    job: Any
    sampler: Any
    steps: int
    total_steps: int
    combine_denoised: Callable[..., Any] | None = None
    step_callback: Callable[[dict[str, Any]], None] | None = None


@dataclass
class ExtrasImageParams:
    """One Extras image after the upscalers ran: a listener (A1111's postprocessing scripts) may replace `image` and
    add infotext items to `info`."""

    image: Any
    info: dict[str, Any]
    name: str | None = None
    request: Any = None


@dataclass
class SamplerNameParams:
    """A sampler name about to be built: a listener that knows it under another name (an extension's entry in
    A1111's sampler table, such as "Euler a_dynthres1") replaces `name` with the core sampler it runs as."""

    name: str


@dataclass
class ExtraNetworksParams:
    """The extra-network tags of a batch's first prompt (`<name:args>`), by tag name as typed, for `job`, and the
    batch's `prompts` without them. A listener may remove the names it handles from `networks`."""

    job: Any
    networks: dict[str, list[Any]]
    prompts: list[str] = dataclasses.field(default_factory=list)


# --- what the scripts' own hooks receive (A1111's classes of these names) ---------------------------------------

class PostprocessImageArgs:
    """What a script's postprocess_image hook receives: it may replace `image` (A1111's class of that name)."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image


class PostprocessBatchListArgs:
    """What a script's postprocess_batch_list hook receives: `images`, the decoded batch as a list of PIL images
    (A1111: a list of tensors); a script may replace or reorder the list, and what it leaves is saved and returned.
    An image added beyond the batch gets the seed and prompt of the batch's last image."""

    def __init__(self, images: list[Image.Image]) -> None:
        self.images = images


class PostSampleArgs:
    """What a script's post_sample hook receives: `samples`, the batch's final latents before VAE decoding
    (replace it to change what is decoded)."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples = samples
