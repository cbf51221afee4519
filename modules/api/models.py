"""Request bodies of A1111's /sdapi/v1 routes (field names and defaults as A1111's api/models.py generates them)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'}: NaN and Infinity are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _finite(item, f"{where}[{index}]")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore",  # A1111 ignores unknown keys; clients send extra ones
                              allow_inf_nan=False)  # NaN/Infinity would be echoed back and break the JSON answer

    @model_validator(mode="before")
    @classmethod
    def _no_nan_anywhere(cls, data: Any) -> Any:
        """NaN/Infinity in free-form fields too (override_settings, script_args): a 422, not a 500 after the job."""
        _finite(data, "")
        return data


class Txt2ImgRequest(_Request):
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    denoising_strength: float | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False
    denoising_strength: float | None = 0.75


class JobRequest(Img2ImgRequest):
    """The async job API's body: a txt2img or img2img request plus its type."""
    type: str = "txt2img"


class ExtrasBase(_Request):
    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBase):
    image: str = ""


class FileData(_Request):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasBase):
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 (A1111's field name)


class PNGInfoRequest(_Request):
    image: str


class InterrogateRequest(_Request):
    image: str = ""
    model: str = "clip"


class ExtensionInstallRequest(_Request):
    url: str
    branch: str | None = None
    name: str | None = None       # folder name; default: the last URL part minus .git


class ExtensionNameRequest(_Request):
    name: str


# --- A1111's class names, for extensions that import them -----------------------------------------------------------

StableDiffusionTxt2ImgProcessingAPI = Txt2ImgRequest
StableDiffusionImg2ImgProcessingAPI = Img2ImgRequest
ExtrasBaseRequest = ExtrasBase
ExtrasSingleImageRequest.__doc__ = "A1111's ExtrasSingleImageRequest: one base64 image."


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")  # the routes may answer more keys than A1111's


class TextToImageResponse(_Response):
    images: list[str] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    info: str = ""


class ImageToImageResponse(TextToImageResponse):
    pass


class ExtrasSingleImageResponse(_Response):
    html_info: str = ""
    image: str | None = None


class ExtrasBatchImagesResponse(_Response):
    html_info: str = ""
    images: list[str] = Field(default_factory=list)


class PNGInfoResponse(_Response):
    info: str = ""
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class ProgressRequest(_Request):
    skip_current_image: bool = False


class ProgressResponse(_Response):
    progress: float = 0.0
    eta_relative: float = 0.0
    state: dict[str, Any] = Field(default_factory=dict)
    current_image: str | None = None
    textinfo: str | None = None


class InterrogateResponse(_Response):
    caption: str | None = None
