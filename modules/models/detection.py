"""Tell a checkpoint's model family from its state-dict keys and tensor shapes (never its file name or size)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNET_PREFIX = "model.diffusion_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."
VAE_PREFIX = "first_stage_model."

FAMILIES = ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-refiner", "sdxl-inpaint")
FAMILY_LABELS = {
    "sd1": "SD 1.x", "sd1-inpaint": "SD 1.x inpainting", "sd2": "SD 2.x", "sd2-v": "SD 2.x (v-prediction)",
    "sd2-inpaint": "SD 2.x inpainting", "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner",
    "sdxl-inpaint": "SDXL inpainting",
}
# ComfyUI's observation: in v-prediction SD2 models this norm bias is far from zero (std > 0.09).
V_PREDICTION_BIAS_STD = 0.09


class UnknownModelError(ValueError):
    """The state dict is not a Stable Diffusion checkpoint we can load."""


@dataclass(frozen=True)
class Detection:
    family: str
    is_sdxl: bool
    is_inpaint: bool
    v_prediction: bool


def _has_prefix(keys: list[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _sd2_uses_v_prediction(state_dict: dict[str, torch.Tensor]) -> bool:
    if "v_pred" in state_dict:  # some trainers store an explicit marker
        return True
    suffix = ".1.transformer_blocks.0.norm1.bias"
    candidates = [k for k in state_dict if k.startswith(UNET_PREFIX + "output_blocks.") and k.endswith(suffix)]
    if not candidates:
        return False
    last = max(candidates, key=lambda k: int(k[len(UNET_PREFIX + "output_blocks."):].split(".")[0]))
    return float(state_dict[last].float().std()) > V_PREDICTION_BIAS_STD


def detect_family(state_dict: dict[str, torch.Tensor]) -> Detection:
    """Classify an original-layout (A1111/LDM single-file) state dict.

    Raises UnknownModelError with the reason when it is not a full SD1/SD2/SDXL checkpoint.
    """
    keys = list(state_dict.keys())
    conv_in = state_dict.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        # the transformer families (issue 17): named, so that the message says what the file is
        if any(k.startswith((UNET_PREFIX + "joint_blocks.", "joint_blocks.")) for k in keys):
            raise UnknownModelError("this is a Stable Diffusion 3 / 3.5 checkpoint (MMDiT transformer), which this "
                                    "version cannot load yet")
        if any(k.startswith((UNET_PREFIX + "double_blocks.", "double_blocks.")) for k in keys):
            raise UnknownModelError("this is a FLUX.1 transformer, which this version cannot load yet")
        if any(".lora_down." in k or k.startswith("lora_") for k in keys):
            raise UnknownModelError("this is a LoRA, not a checkpoint: put it in models/Lora")
        if _has_prefix(keys, "encoder.") and _has_prefix(keys, "decoder."):
            raise UnknownModelError("this is a VAE, not a checkpoint: put it in models/VAE")
        raise UnknownModelError("no UNet weights (model.diffusion_model.*) found")
    if not _has_prefix(keys, VAE_PREFIX):
        raise UnknownModelError("no VAE weights (first_stage_model.*) found")
    in_channels = conv_in.shape[1]
    if in_channels not in (4, 9):
        raise UnknownModelError(f"UNet has {in_channels} input channels; only 4 (normal) and 9 (inpainting) work")
    inpaint = in_channels == 9

    if _has_prefix(keys, SDXL_CLIP_G_PREFIX) and _has_prefix(keys, SDXL_CLIP_L_PREFIX):
        return Detection("sdxl-inpaint" if inpaint else "sdxl", True, inpaint, "v_pred" in state_dict)
    if _has_prefix(keys, SDXL_REFINER_CLIP_G_PREFIX):
        return Detection("sdxl-refiner", True, False, "v_pred" in state_dict)
    if _has_prefix(keys, SD2_CLIP_PREFIX):
        if inpaint:
            return Detection("sd2-inpaint", False, True, False)
        v = _sd2_uses_v_prediction(state_dict)
        return Detection("sd2-v" if v else "sd2", False, False, v)
    if _has_prefix(keys, SD1_CLIP_PREFIX):
        return Detection("sd1-inpaint" if inpaint else "sd1", False, inpaint, False)
    raise UnknownModelError("no text encoder weights (cond_stage_model.* or conditioner.*) found")
