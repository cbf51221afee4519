"""Load a single-file checkpoint (and optional external VAE) into diffusers components, offline."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTokenizer

from modules import hashes
from modules.devices import DevicePolicy, cast  # noqa: F401 (cast: also used by tests from here)
from modules.incompatible import IncompatibleExtensionError
from modules.models import architecture, detection
from modules.models.registry import VAE_SUFFIXES, CheckpointInfo, scan_files
from modules.models.safe_load import CheckpointLoadError, load_state_dict, read_safetensors_metadata

log = logging.getLogger("webui")
TOKENIZER_DIR = architecture.CONFIGS_DIR / "tokenizer"


@cache
def load_tokenizer(pad_token: str) -> CLIPTokenizer:
    """CLIP's BPE tokenizer from the shipped files. OpenCLIP towers (SD2, SDXL's bigG) pad with "!" (id 0)."""
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token=pad_token,
                                         model_max_length=77)


@dataclass
class VaeInfo:
    filename: str
    name: str
    sha256: str | None = None

    @property
    def shorthash(self) -> str | None:
        return hashes.short_hash(self.sha256) if self.sha256 else None


# A1111's ldm/sgm model attributes extensions walk to patch the model
_LDM_MODEL_ATTRIBUTES = frozenset({"model", "cond_stage_model", "first_stage_model", "conditioner",
                                   "get_learned_conditioning", "apply_model", "decode_first_stage",
                                   "encode_first_stage", "alphas_cumprod", "forge_objects"})


class LdmAttributeError(IncompatibleExtensionError, AttributeError):
    """An A1111 ldm model attribute: incompatible when used, False for `hasattr` (extensions probe with it)."""


@dataclass
class SDModel:
    """A loaded checkpoint: its diffusers components and what the processing loop needs to know about it."""

    checkpoint: CheckpointInfo
    detection: detection.Detection
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[torch.nn.Module]          # SD1/SD2: [clip]; SDXL: [clip_l, clip_g]; refiner: [clip_g]
    tokenizers: list[CLIPTokenizer]
    scheduler_config: dict
    policy: DevicePolicy
    vae_info: VaeInfo | None = None               # None: the checkpoint's own VAE
    metadata: dict[str, str] = field(default_factory=dict)
    compiled: bool = False                        # UNet and VAE decoder run through torch.compile
    # prompt encodings kept across jobs (setting persistent_cond_cache), keyed by text and encoder state
    cond_cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def family(self) -> str:
        return self.detection.family

    @property
    def is_sdxl(self) -> bool:
        return self.detection.is_sdxl

    # A1111's names on `shared.sd_model` that extensions read
    @property
    def is_sd1(self) -> bool:
        return self.family.startswith("sd1")

    @property
    def is_sd2(self) -> bool:
        return self.family.startswith("sd2")

    is_sd3 = False
    is_ssd = False

    def __getattr__(self, name: str) -> object:
        # only for names the dataclass lacks: A1111's ldm model attributes mean nothing on a diffusers model
        if name in _LDM_MODEL_ATTRIBUTES:
            raise LdmAttributeError(
                f"shared.sd_model.{name} is an attribute of A1111's ldm model; this program's model is a set of "
                "diffusers components (.unet, .vae, .text_encoders)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def sd_checkpoint_info(self) -> CheckpointInfo:
        return self.checkpoint

    @property
    def sd_model_checkpoint(self) -> str:
        return self.checkpoint.filename

    @property
    def sd_model_hash(self) -> str | None:
        return self.checkpoint.shorthash

    @property
    def is_inpaint(self) -> bool:
        return self.detection.is_inpaint

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    def components(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, *self.text_encoders]


def find_vae_files(folders: list[str]) -> list[VaeInfo]:
    return [VaeInfo(full, name) for full, name in scan_files(folders, VAE_SUFFIXES)]


def resolve_vae(sd_vae: str, checkpoint_path: str, vae_folders: list[str]) -> VaeInfo | None:
    """A1111's `sd_vae` setting: "Automatic" (a `<stem>.vae.*` file beside the checkpoint or in the VAE folder,
    else the built-in one), "None" (built-in), or a VAE file name."""
    if not sd_vae or sd_vae == "None":
        return None
    vae_files = find_vae_files(vae_folders)
    if sd_vae == "Automatic":
        stem = Path(checkpoint_path).name.rsplit(".", 1)[0]
        for suffix in VAE_SUFFIXES:
            beside = Path(checkpoint_path).with_name(stem + ".vae" + suffix)
            if beside.is_file():
                return VaeInfo(str(beside.resolve()), beside.name)
        for vae in vae_files:
            if Path(vae.filename).name.rsplit(".", 1)[0] == stem + ".vae":
                return vae
        return None
    for vae in vae_files:
        if sd_vae in (vae.name, Path(vae.filename).name, Path(vae.name).stem):
            return vae
    raise CheckpointLoadError(f"VAE {sd_vae!r} not found in {', '.join(vae_folders)}")


def _move(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return cast(module, dtype).to(device=device)


def load_vae_file(vae: VaeInfo, family: str, policy: DevicePolicy, cache_path: str | None) -> AutoencoderKL:
    weights = load_state_dict(vae.filename)
    try:
        model = architecture.build_vae(weights, family)
    except (KeyError, ValueError) as e:
        raise CheckpointLoadError(f"{vae.name}: not a usable VAE ({e})") from e
    if vae.sha256 is None:
        vae.sha256 = hashes.file_sha256(vae.filename, cache_path, title=f"vae/{vae.name}")
    return _move(model, policy.device, policy.vae_dtype)


def load_model(checkpoint: CheckpointInfo, policy: DevicePolicy, vae: VaeInfo | None = None,
               cache_path: str | None = None, place: Callable[[SDModel], None] | None = None) -> SDModel:
    """Read, classify and build a checkpoint. Raises CheckpointLoadError naming the file on any problem.

    Without `place` every component goes to the policy's device. With it, components are built on the CPU in their
    final dtypes and `place(model)` decides where they live (memory modes offload, the fast path applies)."""
    target = policy if place is None else dataclasses.replace(policy, device=torch.device("cpu"))
    name = os.path.basename(checkpoint.filename)
    state_dict = load_state_dict(checkpoint.filename)
    try:
        found = detection.detect_family(state_dict)
    except detection.UnknownModelError as e:
        raise CheckpointLoadError(f"{name}: not a Stable Diffusion checkpoint: {e}") from e
    family = found.family
    try:
        unet = architecture.build_unet(state_dict, family)
        text_encoders, tokenizers = _build_text_encoders(state_dict, family)
        builtin_vae = None if vae else architecture.build_vae(state_dict, family)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointLoadError(f"{name}: looks like {detection.FAMILY_LABELS[family]} but its weights do not "
                                  f"fit ({e})") from e
    del state_dict
    scheduler_config = architecture.family_config(family, "scheduler")
    if found.v_prediction:
        scheduler_config["prediction_type"] = "v_prediction"
    vae_model = load_vae_file(vae, family, target, cache_path) if vae else _move(builtin_vae, target.device,
                                                                                   target.vae_dtype)
    model = SDModel(
        checkpoint=checkpoint,
        detection=found,
        unet=_move(unet, target.device, target.dtype),
        vae=vae_model,
        text_encoders=[_move(te, target.device, target.dtype) for te in text_encoders],
        tokenizers=tokenizers,
        scheduler_config=scheduler_config,
        policy=policy,
        vae_info=vae,
        metadata=read_safetensors_metadata(checkpoint.filename) if checkpoint.filename.endswith(".safetensors")
        else {},
    )
    for module in model.components():
        module.requires_grad_(False)
    if place is not None:
        place(model)
    log.info("Loaded %s (%s) on %s, %s", checkpoint.title, detection.FAMILY_LABELS[family], policy.device,
             str(policy.dtype).removeprefix("torch."))
    return model


def _build_text_encoders(sd: dict[str, torch.Tensor], family: str) -> tuple[list, list]:
    if family.startswith("sd1"):
        return ([architecture.build_clip(sd, detection.SD1_CLIP_PREFIX, family, "text_encoder")],
                [load_tokenizer("<|endoftext|>")])
    if family.startswith("sd2"):
        return ([architecture.build_open_clip(sd, detection.SD2_CLIP_PREFIX, family, "text_encoder",
                                              with_projection=False, skip_last=True)],
                [load_tokenizer("!")])
    if family == "sdxl-refiner":
        return ([architecture.build_open_clip(sd, detection.SDXL_REFINER_CLIP_G_PREFIX, family, "text_encoder_2",
                                              with_projection=True, skip_last=False)],
                [load_tokenizer("!")])
    return ([architecture.build_clip(sd, detection.SDXL_CLIP_L_PREFIX, family, "text_encoder"),
             architecture.build_open_clip(sd, detection.SDXL_CLIP_G_PREFIX, family, "text_encoder_2",
                                          with_projection=True, skip_last=False)],
            [load_tokenizer("<|endoftext|>"), load_tokenizer("!")])
