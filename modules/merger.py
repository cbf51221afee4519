"""A1111's Checkpoint Merger: combine two or three checkpoints into a new `.safetensors` file.

Methods (A1111 `extras.run_modelmerger`): "No interpolation" (A alone: format conversion, fp16, VAE baking, key
dropping), "Weighted sum" (A*(1-M) + B*M) and "Add difference" (A + (B-C)*M). As in A1111:
- only keys whose name contains "model" and that B has are merged; keys only in A (and A's non-"model" keys such
  as `alphas_cumprod`) are copied from A; keys only in B or C are dropped. `first_stage_model.*` (the VAE) is
  merged like any other key; "Bake in VAE" then replaces it with a VAE file's weights.
- in add difference a key that C lacks contributes no difference (the result is A's tensor).
- an inpainting (9 input channels) or instruct-pix2pix (8) A merged with a normal (4) B merges the first 4 channels
  of `model.diffusion_model.input_blocks.0.0.weight`, keeps the others, and names the file `*.inpainting`.
- the header holds A1111's `sd_merge_recipe` / `sd_merge_models` JSON.

Memory: `.safetensors` inputs are opened with `safe_open` and read one key at a time, so only the output (one model)
is held in full; `.ckpt` inputs can only be read whole, through the restricted unpickler. The output is written to a
hidden temporary file in the target folder and published under its final name only when complete.

The core knows nothing of the app: the caller passes the registry, VAE folders and hash cache, and refreshes the
checkpoint list afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from modules import hashes
from modules.models.registry import CheckpointInfo, CheckpointRegistry, scan_files
from modules.models.safe_load import (
    SAFETENSORS_SUFFIX,
    CheckpointLoadError,
    load_state_dict,
    read_safetensors_metadata,
)

log = logging.getLogger("webui")

NO_INTERPOLATION = "No interpolation"
WEIGHTED_SUM = "Weighted sum"
ADD_DIFFERENCE = "Add difference"
INTERP_METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)
CHECKPOINT_FORMATS = ("safetensors",)  # A1111 also offers "ckpt"; we never write pickles

VAE_PREFIX = "first_stage_model."
UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"
# A1111's checkpoint_dict_skip_on_merge: an integer index buffer, always taken from A.
SKIP_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})
# A1111's load_vae_dict drops these from VAE files (EMA bookkeeping, and `loss.*` discriminator weights).
VAE_IGNORE_KEYS = frozenset({"model_ema.decay", "model_ema.num_updates"})
# A1111's "Copy config from" index for "Don't": the loader derives the architecture from the weights instead.
CONFIG_SOURCE_NONE = 3

ProgressCallback = Callable[[str, int, int], None]  # (what is happening, done, total)


class MergeError(ValueError):
    """The merge cannot run as asked (or failed); the message says why. Nothing was written."""


@dataclass
class MergeRequest:
    """The Checkpoint Merger form. Models are registry titles/names/hashes or file paths."""

    primary: str                           # A
    secondary: str = ""                    # B (weighted sum, add difference)
    tertiary: str = ""                     # C (add difference)
    interp_method: str = WEIGHTED_SUM
    multiplier: float = 0.3                # M
    custom_name: str = ""                  # "" -> A1111's name from the models, method and M
    checkpoint_format: str = "safetensors"
    save_as_half: bool = False             # every floating-point tensor becomes float16
    bake_in_vae: str = "None"              # "None"/"" or a VAE file name (VAE folders) or path
    discard_weights: str = ""              # regex; keys it matches (re.search) are left out
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True      # start from A's, B's and C's safetensors metadata
    metadata_json: str = "{}"              # extra metadata fields (a JSON object)
    output_dir: str | None = None          # None: the folder of A


def default_output_name(interp_method: str, multiplier: float, primary: str, secondary: str = "",
                        tertiary: str = "") -> str:
    """A1111's file name (without extension) from the models' names, the method and M."""
    if interp_method == WEIGHTED_SUM:
        return f"{round(1 - multiplier, 2)}({primary}) + {round(multiplier, 2)}({secondary})"
    if interp_method == ADD_DIFFERENCE:
        return f"{primary} + {round(multiplier, 2)}({secondary} - {tertiary})"
    return primary


# --- inputs ----------------------------------------------------------------------------------------------------

class _Source:
    """One input checkpoint, read one tensor at a time (safetensors) or from a restricted-unpickled dict (ckpt)."""

    def __init__(self, info: CheckpointInfo, stack: ExitStack) -> None:
        self.info = info
        self.metadata: dict[str, str] = {}
        self._file = None
        self._dict: dict[str, torch.Tensor] | None = None
        path = info.filename
        if path.lower().endswith(SAFETENSORS_SUFFIX):
            self.metadata = read_safetensors_metadata(path)  # also validates the header: a clear error early
            try:
                self._file = stack.enter_context(safe_open(path, framework="pt", device="cpu"))
            except Exception as e:  # safetensors raises its own error types
                raise CheckpointLoadError(f"{info.name}: cannot read safetensors data ({e})") from e
            self._keys = list(self._file.keys())
        else:
            # Pickles cannot be read partially; the restricted unpickler runs nothing from the file.
            self._dict = load_state_dict(path)
            self._keys = list(self._dict)
        self._key_set = set(self._keys)

    def keys(self) -> list[str]:
        return self._keys

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def shape(self, key: str) -> tuple[int, ...]:
        if self._file is not None:
            return tuple(self._file.get_slice(key).get_shape())
        return tuple(self._dict[key].shape)

    def is_floating(self, key: str) -> bool:
        if self._file is not None:
            return self._file.get_slice(key).get_dtype().startswith(("F", "BF"))
        return self._dict[key].is_floating_point()

    def get(self, key: str) -> torch.Tensor:
        if self._file is not None:
            try:
                return self._file.get_tensor(key)
            except Exception as e:
                raise CheckpointLoadError(f"{self.info.name}: cannot read tensor {key!r} ({e})") from e
        # Each key is read once: hand the tensor over so the dict does not keep a second reference.
        return self._dict.pop(key)


def _resolve_checkpoint(query: str, role: str, registry: CheckpointRegistry | None) -> CheckpointInfo:
    query = (query or "").strip()
    info = registry.find(query) if registry is not None and query else None
    if info is None and query:
        path = Path(query).expanduser()
        if path.is_file():
            info = CheckpointInfo(str(path.resolve()), path.name)
    if info is None or not os.path.isfile(info.filename):
        raise MergeError(f"{role} {query!r} not found (refresh the checkpoint list?)")
    return info


def _resolve_vae(name: str, vae_folders: Iterable[str]) -> str | None:
    if not name or name == "None":
        return None
    for full, relative in scan_files(list(vae_folders), (".safetensors", ".ckpt", ".pt")):
        if name in (relative, os.path.basename(full), Path(relative).stem):
            return full
    if os.path.isfile(name):
        return os.path.abspath(name)
    raise MergeError(f"VAE {name!r} not found in {', '.join(vae_folders) or 'the VAE folder'}")


def _vae_weights(path: str) -> dict[str, torch.Tensor]:
    """A VAE file's weights as `first_stage_model.*` keys (LDM layout, as A1111's VAE files and checkpoints)."""
    weights = load_state_dict(path)
    weights = {k.removeprefix(VAE_PREFIX): v for k, v in weights.items()
               if not k.startswith("loss") and k not in VAE_IGNORE_KEYS}
    if "decoder.up_blocks.0.resnets.0.conv1.weight" in weights:  # diffusers layout: convert to the original keys
        from modules.models.ldm_layout import vae_to_ldm  # imports diffusers (seconds); only this case needs it

        levels = {int(k.split(".")[2]) for k in weights if k.startswith("encoder.down_blocks.")}
        ups = {int(k.split(".")[2]) for k in weights if k.startswith("decoder.up_blocks.")}
        config = {"down_block_types": [None] * len(levels), "up_block_types": [None] * len(ups)}
        weights = vae_to_ldm(weights, config)
    return {VAE_PREFIX + k: v for k, v in weights.items()}


# --- arithmetic ------------------------------------------------------------------------------------------------

def _channel_case(key: str, a: tuple[int, ...], b: tuple[int, ...]) -> str | None:
    """None when A and B have the same shape; "inpainting"/"instruct-pix2pix" for A1111's extra-input-channel
    case; raises for anything else (different architectures)."""
    if a == b:
        return None
    if len(a) == len(b) >= 2 and a[:1] + a[2:] == b[:1] + b[2:]:
        if a[1] == 4 and b[1] == 9:
            raise MergeError("When merging an inpainting model with a normal one, A must be the inpainting model.")
        if a[1] == 4 and b[1] == 8:
            raise MergeError("When merging an instruct-pix2pix model with a normal one, A must be the "
                             "instruct-pix2pix model.")
        if a[1] == 8 and b[1] == 4:
            return "instruct-pix2pix"
        if a[1] == 9 and b[1] == 4:
            return "inpainting"
    raise MergeError(f"Cannot merge {key}: shape {list(a)} in A but {list(b)} in the other model "
                     f"(the models have different architectures)")


def _math_dtype(*tensors: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(result dtype, dtype to compute in): torch's promotion, with half precision computed in float32."""
    result = tensors[0].dtype
    for tensor in tensors[1:]:
        result = torch.promote_types(result, tensor.dtype)
    return result, torch.float32 if result in (torch.float16, torch.bfloat16) else result


def _weighted_sum(a: torch.Tensor, b: torch.Tensor, m: float) -> torch.Tensor:
    result, work = _math_dtype(a, b)
    # A1111's ((1 - M) * A) + (M * B), rounded identically, with one temporary instead of two.
    out = (1 - m) * a.to(work)
    out += m * b.to(work)
    return out.to(result)


def _difference(b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    result, work = _math_dtype(b, c)
    return (b.to(work) - c.to(work)).to(result)


def _add_difference(a: torch.Tensor, diff: torch.Tensor, m: float) -> torch.Tensor:
    result, work = _math_dtype(a, diff)
    out = m * diff.to(work)
    out += a.to(work)  # A + M * (B - C): addition commutes, so the rounding is A1111's
    return out.to(result)


def _apply(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], a: torch.Tensor, b: torch.Tensor,
           m: float, case: str | None) -> torch.Tensor:
    if case is None:
        return fn(a, b, m)
    # Extra input channels of A (masked-image latents and mask) have nothing to merge with: keep A's.
    channels = b.shape[1]
    merged = fn(a[:, :channels], b, m)
    out = a.to(merged.dtype, copy=True)
    out[:, :channels] = merged
    return out


# --- metadata ----------------------------------------------------------------------------------------------------

def _parsed(value: str | None) -> object:
    """A1111 reads metadata values that look like JSON objects as JSON."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _sha256(info: CheckpointInfo, hash_cache: str | None) -> str:
    if not info.sha256:
        info.sha256 = hashes.file_sha256(info.filename, hash_cache, title=f"checkpoint/{info.name}")
    return info.sha256


def _build_metadata(request: MergeRequest, sources: list[_Source | None], hash_cache: str | None,
                    case: str | None) -> dict[str, str]:
    if not request.save_metadata:
        return {}
    metadata: dict[str, str] = {}
    if request.copy_metadata_fields:
        for source in sources:
            if source is not None:
                metadata.update(source.metadata)
    try:
        extra = json.loads(request.metadata_json or "{}")
    except ValueError as e:
        raise MergeError(f"Metadata is not valid JSON: {e}") from e
    if not isinstance(extra, dict):
        raise MergeError("Metadata must be a JSON object")
    # safetensors metadata holds strings only.
    metadata.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    metadata["format"] = "pt"
    if request.add_merge_recipe:
        primary, secondary, tertiary = (s.info if s is not None else None for s in sources)
        recipe = {
            "type": "webui",  # A1111: merged with the webui's built-in merger
            "primary_model_hash": _sha256(primary, hash_cache),
            "secondary_model_hash": _sha256(secondary, hash_cache) if secondary else None,
            "tertiary_model_hash": _sha256(tertiary, hash_cache) if tertiary else None,
            "interp_method": request.interp_method,
            "multiplier": request.multiplier,
            "save_as_half": request.save_as_half,
            "custom_name": request.custom_name,
            "config_source": CONFIG_SOURCE_NONE,
            "bake_in_vae": request.bake_in_vae or "None",
            "discard_weights": request.discard_weights,
            "is_inpainting": case == "inpainting",
            "is_instruct_pix2pix": case == "instruct-pix2pix",
        }
        models: dict[str, object] = {}
        for source in sources:
            if source is None:
                continue
            info = source.info
            models[_sha256(info, hash_cache)] = {
                "name": info.name,
                "legacy_hash": hashes.model_hash_legacy(info.filename),
                "sd_merge_recipe": _parsed(source.metadata.get("sd_merge_recipe")),
            }
            earlier = _parsed(source.metadata.get("sd_merge_models"))
            if isinstance(earlier, dict):  # the ancestry of merged inputs carries over
                models.update(earlier)
        metadata["sd_merge_recipe"] = json.dumps(recipe)
        metadata["sd_merge_models"] = json.dumps(models)
    return metadata


# --- output ------------------------------------------------------------------------------------------------------

def _output_filename(request: MergeRequest, infos: list[CheckpointInfo | None], case: str | None) -> str:
    name = (request.custom_name or "").strip()
    if name.lower().endswith(SAFETENSORS_SUFFIX):
        name = name[: -len(SAFETENSORS_SUFFIX)]
    if not name:
        a, b, c = (i.model_name if i else "" for i in infos)
        name = default_output_name(request.interp_method, request.multiplier, a, b, c)
    if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        # A leading dot would hide the file from the checkpoint list; separators would leave the folder.
        raise MergeError(f"Invalid checkpoint name {name!r}: no path separators, and it may not start with '.'")
    if case:
        name += f".{case}"
    return name + SAFETENSORS_SUFFIX


def _publish(temporary: Path, final: Path) -> None:
    """Give the finished file its name, never replacing a file that appeared meanwhile."""
    try:
        os.link(temporary, final)  # atomic, and fails if `final` exists
    except FileExistsError as e:
        raise MergeError(f"{final} already exists; nothing was overwritten") from e
    except OSError:  # file systems without hard links
        if final.exists():
            raise MergeError(f"{final} already exists; nothing was overwritten") from None
        os.replace(temporary, final)


def _save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], final: Path) -> None:
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")  # hidden: not listed as a model
    try:
        try:
            save_file(tensors, str(temporary), metadata=metadata or None)
            with open(temporary, "rb+") as handle:  # on disk before it gets its name
                os.fsync(handle.fileno())
        except (OSError, SafetensorError) as e:  # disk full, file too large, permissions...
            raise MergeError(f"Could not write {final.name} in {final.parent}: {e}") from e
        _publish(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def _unshare(tensors: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors that share memory (tied weights in pickles): give each its own."""
    seen: set[int] = set()
    for key, tensor in tensors.items():
        if tensor.numel() == 0:
            continue
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            tensors[key] = tensor.clone()
        seen.add(pointer)


# --- the merge ---------------------------------------------------------------------------------------------------

def _validate(request: MergeRequest) -> re.Pattern | None:
    if request.interp_method not in INTERP_METHODS:
        raise MergeError(f"Unknown interpolation method {request.interp_method!r}; "
                         f"expected one of {', '.join(INTERP_METHODS)}")
    if request.checkpoint_format not in CHECKPOINT_FORMATS:
        raise MergeError(f"Checkpoint format {request.checkpoint_format!r} is not offered: only safetensors "
                         "(pickled .ckpt files can run code when loaded)")
    if not math.isfinite(float(request.multiplier)):
        raise MergeError(f"Multiplier must be a finite number, not {request.multiplier!r}")
    if not (request.primary or "").strip():
        raise MergeError("Merging requires a primary model.")
    if request.interp_method != NO_INTERPOLATION and not (request.secondary or "").strip():
        raise MergeError("Merging requires a secondary model.")
    if request.interp_method == ADD_DIFFERENCE and not (request.tertiary or "").strip():
        raise MergeError(f"Interpolation method ({request.interp_method}) requires a tertiary model.")
    if not request.discard_weights:
        return None
    try:
        return re.compile(request.discard_weights)
    except re.error as e:
        raise MergeError(f"Discard weights: invalid regular expression {request.discard_weights!r} ({e})") from e


def merge_checkpoints(request: MergeRequest, registry: CheckpointRegistry | None = None,
                      vae_folders: Iterable[str] = (), hash_cache: str | None = None,
                      progress: ProgressCallback | None = None) -> str:
    """Merge as `request` says and write a new `.safetensors` file; returns its path.

    Raises MergeError (bad request, existing output, incompatible models) or CheckpointLoadError (unreadable
    input); no file is left behind either way. `progress(stage, done, total)` is called once per key; an exception
    raised from it (e.g. an interrupt) aborts the merge cleanly.
    """
    discard = _validate(request)
    method, m = request.interp_method, float(request.multiplier)
    vae_folders = list(vae_folders)
    report = progress or (lambda stage, done, total: None)

    info_a = _resolve_checkpoint(request.primary, "Primary model (A)", registry)
    info_b = _resolve_checkpoint(request.secondary, "Secondary model (B)", registry) \
        if method != NO_INTERPOLATION else None
    info_c = _resolve_checkpoint(request.tertiary, "Tertiary model (C)", registry) \
        if method == ADD_DIFFERENCE else None
    vae_path = _resolve_vae(request.bake_in_vae, vae_folders)

    with ExitStack() as stack:
        report("Loading", 0, 1)
        a = _Source(info_a, stack)
        b = _Source(info_b, stack) if info_b else None
        c = _Source(info_c, stack) if info_c else None
        vae = _vae_weights(vae_path) if vae_path else {}
        if vae and not any(key in a for key in vae):
            raise MergeError(f"{os.path.basename(vae_path)}: none of its weights fit the checkpoint's VAE "
                             f"({VAE_PREFIX}*); is it a VAE for this kind of model?")

        # Plan every key from the headers first: incompatible models fail now, not after minutes of work.
        plan: list[tuple[str, str, str | None]] = []  # (key, "vae" | "merge" | "copy", channel case)
        result_case: str | None = None
        for key in a.keys():
            if discard is not None and discard.search(key):
                continue
            if key in vae:
                if vae[key].shape != a.shape(key) and vae[key].numel() != math.prod(a.shape(key)):
                    raise MergeError(f"VAE tensor {key} has shape {list(vae[key].shape)}, the checkpoint's "
                                     f"{list(a.shape(key))}")
                plan.append((key, "vae", None))
                continue
            mergeable = (b is not None and "model" in key and key not in SKIP_ON_MERGE and key in b
                         and a.is_floating(key) and b.is_floating(key))
            if mergeable and c is not None:
                if key not in c:  # A1111: no difference for this key, so the result is A's tensor
                    mergeable = False
                elif c.shape(key) != b.shape(key):
                    raise MergeError(f"Cannot merge {key}: shape {list(b.shape(key))} in B but "
                                     f"{list(c.shape(key))} in C (B and C must have the same architecture)")
            if not mergeable:
                plan.append((key, "copy", None))
                continue
            case = _channel_case(key, a.shape(key), b.shape(key))
            result_case = result_case or case
            plan.append((key, "merge", case))

        folder = Path(request.output_dir) if request.output_dir else Path(info_a.filename).parent
        final = folder / _output_filename(request, [info_a, info_b, info_c], result_case)
        if final.exists():
            raise MergeError(f"{final} already exists; choose another name (nothing was overwritten)")
        metadata = _build_metadata(request, [a, b, c], hash_cache, result_case)

        out: dict[str, torch.Tensor] = {}
        stage = {NO_INTERPOLATION: "Copying A", WEIGHTED_SUM: "Merging A and B",
                 ADD_DIFFERENCE: "Merging A, B and C"}[method]
        for done, (key, action, case) in enumerate(plan):
            report(stage, done, len(plan))
            tensor = a.get(key)
            if action == "vae":
                # The VAE's values in A's dtype and layout (a linear/1x1-conv attention weight is reshaped).
                tensor = vae[key].to(tensor.dtype).reshape(tensor.shape)
            elif action == "merge":
                other = b.get(key)
                if c is not None:
                    other = _difference(other, c.get(key))
                    tensor = _apply(_add_difference, tensor, other, m, case)
                else:
                    tensor = _apply(_weighted_sum, tensor, other, m, case)
                del other  # only one key's inputs alive at a time
            if request.save_as_half and tensor.is_floating_point():
                tensor = tensor.to(torch.float16)
            out[key] = tensor.contiguous()
            del tensor
        del vae

        report("Saving", len(plan), len(plan))
        _unshare(out)
        folder.mkdir(parents=True, exist_ok=True)
        _save(out, metadata, final)
    log.info("Checkpoint saved to %s", final)
    return str(final)
