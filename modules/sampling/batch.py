"""One job's use of the loaded model: its family's engine, the sampling loop, the job's networks and the
prompt-encoding caches (processing runs every batch through it)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from modules import engines, hooks
from modules.job_spec import Job
from modules.models.loader import SDModel
from modules.networks import extra as extra_networks
from modules.networks import lora
from modules.prompts import parser
from modules.prompts.encoder import Conditioning, EncodingNotes
from modules.prompts.guidance import PromptGuidance
from modules.sampling import rng as rng_mod
from modules.sampling import samplers
from modules.sampling.loop import Handover, NegativeSkip, SamplingLoop

PERSISTENT_COND_CACHE_SIZE = 32  # prompt encodings kept on the model across jobs


class Sampling:
    """One job's use of the model: the family's engine (text, denoiser, VAE), the sampling loop, the networks and the
    prompt-encoding caches. The engine decides everything family-specific; nothing here asks which family it is."""

    def __init__(self, model: SDModel, ctx: Any, denoiser_hooks: Sequence[engines.DenoiserHook] = ()) -> None:
        """`ctx`: the job's processing.Context (settings snapshot, state, registries, hooks); `denoiser_hooks`: the
        job's own (p.denoiser_hooks, added by scripts)."""
        self.model = model
        self.ctx = ctx
        self.engine = engines.engine_for(model, ctx.opts, ctx.embeddings)
        self.encoder = self.engine.encoder
        # hook objects that supply denoiser inputs (ControlNet-style residuals) join every denoiser call: the
        # context's (application-wide) and the job's
        self.loop = SamplingLoop(self.engine, ctx.state,
                                 [*(hook for hook in ctx.hooks if isinstance(hook, engines.DenoiserHook)),
                                  *denoiser_hooks])
        # (encoding, notes) by key; used when the model's cache (persistent_cond_cache) is off
        self._cond_cache: OrderedDict[tuple, tuple[Conditioning, EncodingNotes]] = OrderedDict()
        self._networks_key: str | None = None
        self._activated_for: Job | None = None  # the job whose networks were last activated

    def encode(self, prompts: list[str], min_chunks: int = 1) -> Conditioning:
        """Encodings by text, cached for this job, or on the model across jobs (setting persistent_cond_cache):
        the same prompt in the next job then costs no text-encoder run."""
        persistent = bool(self.ctx.opts.persistent_cond_cache)
        cache = self.model.cond_cache if persistent else self._cond_cache
        key = (tuple(prompts), min_chunks, self.engine.encoder_state, self._networks_key)
        if key in cache:
            cache.move_to_end(key)
            conditioning, notes = cache[key]
            self.encoder.note(notes)  # its embeddings and emphasis still reach this job's infotext
            return conditioning
        cache[key] = self.engine.encode(prompts, min_chunks)
        while persistent and len(cache) > PERSISTENT_COND_CACHE_SIZE:
            cache.popitem(last=False)
        return cache[key][0]

    def activate_networks(self, job: Job, prompts: list[str]) -> list[str]:
        """Apply the networks named by the batch's first prompt; returns the prompts without the tags."""
        prompts, networks = parser.parse_prompts(prompts)
        if hooks.active("extra_networks_activate"):  # networks other code registered (A1111's extra_networks)
            hooks.fire("extra_networks_activate", hooks.ExtraNetworksParams(job, networks, list(prompts)))
        self._activated_for = job
        ctx = self.ctx
        activation = extra_networks.activate(self.model, networks, ctx.loras, ctx.hypernetworks, ctx.hash_cache)
        if activation.infotext and not ctx.opts.lora_add_hashes_to_infotext:
            activation.infotext.pop("Lora hashes", None)
        job.extra_generation_params.update(activation.infotext)
        job.comments += [w for w in activation.warnings if w not in job.comments]
        # A LoRA's text-encoder part changes encodings: what was applied (files with their mtimes, multipliers) is
        # part of their key, so a retrained file under the same name is encoded again.
        self._networks_key = repr(lora.patcher_for(self.model).applied)
        return prompts

    def finish(self, job: Job) -> None:
        """The job is done with its networks: A1111's extra_networks.deactivate for networks other code registered
        (processing calls this once per job, after the last batch)."""
        if self._activated_for is job and hooks.active("extra_networks_deactivate"):
            hooks.fire("extra_networks_deactivate", hooks.ExtraNetworksParams(job, {}))
        self._activated_for = None

    def guidance(self, prompts: list[str], negatives: list[str], steps: int, hires_steps: int | None = None
                 ) -> PromptGuidance:
        """Scheduled/composable conditioning for one batch; encodings are cached across the job by text."""
        return PromptGuidance(prompts, negatives, steps, self.encode, self.encoder.count_chunks, hires_steps)

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.engine.vae_encode(pixels)

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.engine.vae_decode(latents)

    def denoise(self, job: Job, sampler: samplers.Sampler, latents: torch.Tensor, noise: torch.Tensor,
                guidance: PromptGuidance, steps: int,
                image_rng: rng_mod.ImageRNG, job_no: int, job_count: int,
                strength: float | None = None, image_conditioning: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, handover: Handover | None = None) -> torch.Tensor | None:
        """The job's sampling loop (modules/sampling/loop.py) for one batch; None when interrupted or skipped.
        `handover`: the last steps run on the refiner."""
        extra_noise = float(self.ctx.opts.img2img_extra_noise) if strength is not None else 0.0
        if extra_noise > 0:
            job.extra_generation_params["Extra noise"] = extra_noise  # A1111 records it for img2img and hires
        opts = self.ctx.opts
        skip = NegativeSkip(early=float(opts.skip_early_cond or 0),
                            min_sigma=float(job.s_min_uncond if job.s_min_uncond is not None else opts.s_min_uncond),
                            min_sigma_all=bool(opts.s_min_uncond_all))
        result = self.loop.run(sampler, latents, noise, guidance, steps, image_rng, cfg_scale=job.cfg_scale,
                               image_size=(job.width, job.height), strength=strength,
                               image_conditioning=image_conditioning, mask=mask, job_no=job_no, job_count=job_count,
                               desc=job.mode, extra_noise=extra_noise, job=job, handover=handover,
                               negative_skip=skip)
        if skip.used_early:  # A1111 writes these when they skipped a step
            job.extra_generation_params["Skip Early CFG"] = skip.early
        if skip.used_min_sigma:
            job.extra_generation_params["NGMS"] = skip.min_sigma
            if skip.min_sigma_all:
                job.extra_generation_params["NGMS all steps"] = True
        return result
