"""`Processed`: what a job produced (A1111's class of the same name), with A1111's positional constructor.

The core builds it with keywords (`images=..., job=..., ...`); scripts and extensions build it as A1111's
`Processed(p, images_list, seed, info, subseed, all_prompts, all_negative_prompts, all_seeds, all_subseeds,
index_of_first_image, infotexts, comments, extra_images_list)`, the missing lists taken from `p`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules.job_infotext import VERSION
from modules.job_spec import Job


def _listed(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


@dataclass(init=False)
class Processed:
    """What a job produced: images (grid first when one was made), their seeds and infotexts."""

    images: list[Image.Image]
    job: Job
    seed: int
    subseed: int
    all_seeds: list[int]
    all_subseeds: list[int]
    all_prompts: list[str]
    all_negative_prompts: list[str]
    infotexts: list[str]
    index_of_first_image: int = 0
    saved_files: list[str] = field(default_factory=list)
    interrupted: bool = False
    comments: list[str] = field(default_factory=list)
    job_timestamp: str = ""
    sd_model_name: str | None = None
    sd_model_hash: str | None = None
    sd_vae_name: str | None = None
    sd_vae_hash: str | None = None
    extra_images: list[Image.Image] = field(default_factory=list)

    def __init__(self, p: Job | None = None, images_list: list[Image.Image] | None = None, seed: int = -1,
                 info: str = "", subseed: int | None = None, all_prompts: list[str] | None = None,
                 all_negative_prompts: list[str] | None = None, all_seeds: list[int] | None = None,
                 all_subseeds: list[int] | None = None, index_of_first_image: int = 0,
                 infotexts: list[str] | None = None, comments: str | list[str] = "",
                 extra_images_list: list[Image.Image] | None = None, *, images: list[Image.Image] | None = None,
                 job: Job | None = None, saved_files: list[str] | None = None, interrupted: bool = False,
                 job_timestamp: str = "", sd_model_name: str | None = None, sd_model_hash: str | None = None,
                 sd_vae_name: str | None = None, sd_vae_hash: str | None = None,
                 extra_images: list[Image.Image] | None = None) -> None:
        job = job if job is not None else p
        self.job = job
        self.images = list(images if images is not None else images_list or [])
        self.seed = seed
        self.subseed = subseed if subseed is not None else getattr(job, "subseed", -1)
        self.all_seeds = _listed(all_seeds) or list(getattr(job, "all_seeds", None) or [seed])
        self.all_subseeds = _listed(all_subseeds) or list(getattr(job, "all_subseeds", None) or [self.subseed])
        self.all_prompts = _listed(all_prompts) or list(getattr(job, "all_prompts", None) or
                                                        [getattr(job, "prompt", "")])
        self.all_negative_prompts = _listed(all_negative_prompts) or list(
            getattr(job, "all_negative_prompts", None) or [getattr(job, "negative_prompt", "")])
        self.infotexts = _listed(infotexts) or ([info] if info else [])
        self.index_of_first_image = index_of_first_image
        self.saved_files = list(saved_files or [])
        self.interrupted = interrupted
        self.comments = [comments] if isinstance(comments, str) and comments else \
            list(comments) if not isinstance(comments, str) else []
        self.job_timestamp = job_timestamp
        self.sd_model_name, self.sd_model_hash = sd_model_name, sd_model_hash
        self.sd_vae_name, self.sd_vae_hash = sd_vae_name, sd_vae_hash
        # `extra_images` by keyword: what dataclasses.replace(processed, ...) passes back
        self.extra_images = list(extra_images if extra_images is not None else extra_images_list or [])

    # A1111's Processed copies these from p; here they are read from the job when asked for
    _FROM_JOB = ("width", "height", "sampler_name", "scheduler", "cfg_scale", "steps", "batch_size",
                 "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
                 "extra_generation_params", "clip_skip", "styles", "n_iter", "image_cfg_scale")

    def __getattr__(self, name: str) -> Any:
        if name in ("prompt", "negative_prompt"):
            values = self.__dict__.get("all_prompts" if name == "prompt" else "all_negative_prompts") or [""]
            return values[0]
        if name in Processed._FROM_JOB and self.__dict__.get("job") is not None:
            return getattr(self.__dict__["job"], name, None)
        if name in ("restore_faces", "face_restoration_model", "is_using_inpainting_conditioning"):
            return None if name == "face_restoration_model" else False
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def infotext(self, p: Job | None, index: int) -> str:
        """The infotext of image `index` of the batch (the grid not counted), as A1111's `Processed.infotext`."""
        position = index + self.index_of_first_image
        if 0 <= position < len(self.infotexts):
            return self.infotexts[position]
        return self.infotexts[index] if 0 <= index < len(self.infotexts) else ""

    @property
    def info(self) -> str:
        return self.infotexts[0] if self.infotexts else ""

    def js(self) -> dict[str, Any]:
        """A1111's `Processed.js()` record (the API's `info`)."""
        j = self.job
        return {
            "prompt": self.all_prompts[0] if self.all_prompts else "",
            "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0] if self.all_negative_prompts else "",
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed, "all_seeds": self.all_seeds,
            "subseed": self.subseed, "all_subseeds": self.all_subseeds,
            "subseed_strength": j.subseed_strength,
            "width": j.width, "height": j.height,
            "sampler_name": j.sampler_name, "cfg_scale": j.cfg_scale, "steps": j.steps,
            "batch_size": j.batch_size, "restore_faces": False, "face_restoration_model": None,
            "sd_model_name": self.sd_model_name, "sd_model_hash": self.sd_model_hash,
            "sd_vae_name": self.sd_vae_name, "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": j.seed_resize_from_w, "seed_resize_from_h": j.seed_resize_from_h,
            "denoising_strength": j.denoising_strength,
            "extra_generation_params": j.extra_generation_params,
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts, "styles": j.styles, "job_timestamp": self.job_timestamp,
            "clip_skip": j.clip_skip, "is_using_inpainting_conditioning": False, "version": VERSION,
        }
