"""From units to denoiser inputs: control maps sized for the generation, and one denoiser hook per unit.

The core asks every `p.denoiser_hooks` entry before each denoiser call (`before_denoiser(call)`, the engine's named
hook point); a ControlNet unit answers with its residuals (`down_block_additional_residuals` +
`mid_block_additional_residual`), a T2I-Adapter with its features (`down_intrablock_additional_residuals`). The
engine sums the answers of several units, as the extension's multi-ControlNet does. Nothing is patched.

The extension's rules, kept here: a unit acts while `guidance_start <= step / steps <= guidance_end`; "My prompt is
more important" scales the residuals of the deeper layers down (soft injection, 0.825 per layer), "ControlNet is more
important" also leaves the unconditional rows without control (so CFG pushes towards it); hires fix resizes the
control map to the second pass's size (each unit's `hr_option` says in which passes it acts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from lib_controlnet.units import ControlMode, ControlNetUnit, HiResFixOption, ResizeMode

SOFT_INJECTION_BASE = 0.825  # per-layer decay of "My prompt is more important" (the extension's value)


def high_quality_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a control map: area averaging when shrinking (thin edges stay visible as grey), cubic when growing;
    binary maps (edges, scribbles) are thresholded back to binary when enlarged so lines stay crisp."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    if image.dtype != np.uint8:  # float maps (inpaint: -1 marks masked pixels) keep their marker exact
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    binary = np.isin(np.unique(image), (0, 255)).all()
    if binary and not shrinking:
        resized = np.where(resized > 127, 255, 0).astype(np.uint8)
    return resized


def fit_to_size(image: np.ndarray, width: int, height: int, mode: ResizeMode) -> np.ndarray:
    """A control map at the generation size, by the unit's resize mode (the extension's three modes)."""
    h, w = image.shape[:2]
    if mode == ResizeMode.RESIZE:
        return high_quality_resize(image, width, height)
    scale = max(width / w, height / h) if mode == ResizeMode.INNER_FIT else min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = high_quality_resize(image, new_w, new_h)
    if mode == ResizeMode.INNER_FIT:  # crop the centre
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return np.ascontiguousarray(resized[top:top + height, left:left + width])
    fill = -1.0 if image.dtype != np.uint8 else 0  # pad: nothing to follow there
    canvas = np.full((height, width, *image.shape[2:]), fill, dtype=image.dtype)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def pixel_perfect_resolution(image: np.ndarray, width: int, height: int, mode: ResizeMode) -> int:
    """The preprocessor resolution that makes the detected map match the generation size pixel for pixel."""
    h, w = image.shape[:2]
    k = (min if mode == ResizeMode.OUTER_FIT else max)(height / h, width / w)
    return int(round(k * min(h, w)))


def map_to_tensor(detected: np.ndarray) -> torch.Tensor:
    """HxWx3 map -> [1, 3, H, W] float in [0, 1] (inpaint maps: float already, -1 where masked)."""
    array = detected.astype(np.float32) / 255.0 if detected.dtype == np.uint8 else detected.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]


@dataclass
class PreparedUnit:
    """One enabled unit ready to run: its model (a lib_controlnet.models.ControlModel) and its control map at
    the generation size (what the preview and the API's extra images show)."""

    index: int
    unit: ControlNetUnit
    model: Any
    detected_map: np.ndarray
    _hints: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    _features: dict[tuple[int, int], list[torch.Tensor]] = field(default_factory=dict)

    def hint(self, width: int, height: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The control image at this pixel size (the hires pass asks for its larger size), cached."""
        key = (width, height)
        if key not in self._hints:
            detected = self.detected_map
            if detected.shape[1] != width or detected.shape[0] != height:
                detected = fit_to_size(detected, width, height, self.unit.resize_mode)
            self._hints[key] = map_to_tensor(detected).to(device, dtype)
        return self._hints[key]


def _layer_scales(unit: ControlNetUnit, count: int) -> list[float]:
    if unit.control_mode == ControlMode.BALANCED:
        return [unit.weight] * count
    return [unit.weight * SOFT_INJECTION_BASE ** float(12 - i) for i in range(count)]


class UnitHook:
    """A `DenoiserHook` (the core's protocol: `before_denoiser(call) -> kwargs`) for one prepared unit."""

    def __init__(self, prepared: PreparedUnit, job: Any, low_vram: bool = False) -> None:
        self.prepared = prepared
        self.job = job  # A1111's p: the hook reads p.is_hr_pass
        self.low_vram = low_vram or prepared.unit.low_vram
        self._placed = False

    def acts_at(self, step: int, total_steps: int) -> bool:
        unit = self.prepared.unit
        if unit.weight == 0:
            return False
        hr_pass = bool(getattr(self.job, "is_hr_pass", False))
        if (unit.hr_option == HiResFixOption.LOW_RES_ONLY and hr_pass) or \
                (unit.hr_option == HiResFixOption.HIGH_RES_ONLY and not hr_pass
                 and getattr(self.job, "enable_hr", False)):
            return False
        fraction = step / max(1, total_steps)
        return unit.guidance_start <= fraction <= unit.guidance_end

    @torch.no_grad()
    def before_denoiser(self, call: Any) -> dict[str, Any] | None:
        if not self.acts_at(call.step, call.total_steps):
            return None
        engine, x = call.engine, call.x
        factor = engine.vae_scale_factor
        height, width = x.shape[2] * factor, x.shape[3] * factor
        module = self.prepared.model.module
        if self.low_vram or not self._placed:  # on the GPU only while a job uses it; low VRAM: only per call
            module.to(engine.device)
            self._placed = True
        try:
            hint = self.prepared.hint(width, height, engine.device, engine.dtype)
            if self.prepared.model.kind == "t2i_adapter":
                return self._adapter_features(module, hint, call, width, height)
            return self._controlnet_residuals(module, hint, call)
        finally:
            if self.low_vram:
                module.to("cpu")
                self._placed = False

    def _row_mask(self, call: Any, dtype: torch.dtype) -> torch.Tensor | None:
        """1 for conditional rows, 0 for the unconditional ones ("ControlNet is more important")."""
        if self.prepared.unit.control_mode != ControlMode.CONTROL:
            return None
        rows, conditional = call.x.shape[0], len(call.cond.owners)
        mask = torch.zeros(rows, 1, 1, 1, dtype=dtype, device=call.x.device)
        mask[:conditional] = 1
        return mask

    def _controlnet_residuals(self, module: torch.nn.Module, hint: torch.Tensor, call: Any) -> dict[str, Any]:
        x = call.x.to(call.engine.dtype)
        kwargs: dict[str, Any] = {}
        if call.added_cond_kwargs:  # SDXL ControlNets take the same micro-conditioning as the UNet
            kwargs["added_cond_kwargs"] = call.added_cond_kwargs
        down, mid = module(x, call.t, encoder_hidden_states=call.cond.embeds,
                           controlnet_cond=hint.expand(x.shape[0], -1, -1, -1), conditioning_scale=1.0,
                           return_dict=False, **kwargs)
        residuals = [*down, mid]
        scales = _layer_scales(self.prepared.unit, len(residuals))
        mask = self._row_mask(call, x.dtype)
        scaled = [r * s if mask is None else r * s * mask for r, s in zip(residuals, scales)]
        return {"down_block_additional_residuals": tuple(scaled[:-1]), "mid_block_additional_residual": scaled[-1]}

    def _adapter_features(self, module: torch.nn.Module, hint: torch.Tensor, call: Any, width: int,
                          height: int) -> dict[str, Any]:
        features = self.prepared._features.get((width, height))
        if features is None:  # an adapter looks at the image only: once per size, not per step
            features = list(module(hint))
            self.prepared._features[(width, height)] = features
        scales = _layer_scales(self.prepared.unit, len(features))
        mask = self._row_mask(call, features[0].dtype)
        rows = call.x.shape[0]
        out = []
        for feature, scale in zip(features, scales):
            feature = feature.expand(rows, -1, -1, -1) * scale
            out.append(feature if mask is None else feature * mask)
        return {"down_intrablock_additional_residuals": out}
