"""ControlNet and T2I-Adapter, built in as an extension that uses only the public extension surface.

The always-on script "ControlNet" (the title clients address in `alwayson_scripts: {"controlnet": {"args": [...]}}`)
takes one argument per unit (the extension's layout: a ControlNetUnit, or a dict with its fields from the API). In
`process` it loads each enabled unit's model, makes its control map and adds a denoiser hook to the job
(`p.denoiser_hooks`: the core's named input point, where residuals enter the UNet); `postprocess` returns the detected
maps as extra images, as the extension does. Settings, API routes (lib_controlnet/api.py), the X/Y/Z plot axes and
the infotext paste rules are registered through script_callbacks.
"""

from __future__ import annotations

import logging
from typing import Any

from lib_controlnet import api, runtime, xyz_axes
from lib_controlnet.control import UnitHook
from lib_controlnet.units import ControlNetUnit, UnitError, units_from_args

from modules import script_callbacks, scripts, shared
from modules.processing import JobError

log = logging.getLogger("webui.controlnet")


class ControlNetScript(scripts.Script):
    sorting_priority = 10

    def title(self) -> str:
        return "ControlNet"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        from lib_controlnet import ui

        return ui.build_units(self, is_img2img, int(runtime.setting("control_net_unit_count")))

    def process(self, p: Any, *args: Any) -> None:
        try:
            units = units_from_args(args)
        except UnitError as e:
            raise JobError(f"ControlNet: {e}") from None
        if not any(unit.enabled for unit in units):
            return
        try:
            job_units = runtime.prepare(p, units)
        except runtime.ControlNetError as e:
            raise JobError(str(e)) from None
        p.comments.extend(f"ControlNet unit left out: {reason}" for reason in job_units.skipped)
        low_vram = bool(getattr(shared.cmd_opts, "lowvram", False) or getattr(shared.cmd_opts, "medvram", False))
        for prepared in job_units.prepared:
            p.denoiser_hooks.append(UnitHook(prepared, p, low_vram=low_vram))
            p.extra_generation_params[f"ControlNet {prepared.index}"] = prepared.unit.serialize()
        p.controlnet_units = job_units

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        job_units = getattr(p, "controlnet_units", None)
        if job_units is None:
            return
        for prepared in job_units.prepared:
            prepared.model.module.to("cpu")  # the cache keeps models on the CPU between jobs
        if runtime.setting("control_net_no_detectmap"):
            return
        maps = [runtime.visible_map(prepared.detected_map) for prepared in job_units.prepared
                if prepared.unit.save_detected_map and prepared.unit.module != "none"]
        processed.images.extend(maps)


def _on_ui_settings() -> None:
    section = ("control_net", "ControlNet")
    for key, (default, label) in runtime.SETTINGS.items():
        shared.opts.add_option(key, shared.OptionInfo(default, label, section=section))


def _on_infotext_pasted(infotext: str, params: dict[str, Any]) -> None:
    """"ControlNet 0: ..." -> the unit's fields as "ControlNet 0 module", ... (the UI's paste targets)."""
    for key, value in list(params.items()):
        if not (key.startswith("ControlNet ") and key[len("ControlNet "):].isdigit() and isinstance(value, str)):
            continue
        try:
            unit = ControlNetUnit.parse(value)
        except UnitError as e:
            log.warning("Could not read %s from the infotext: %s", key, e)
            continue
        params[f"{key} enabled"] = True
        for name in ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                     "guidance_start", "guidance_end", "pixel_perfect", "control_mode"):
            field = getattr(unit, name)
            params[f"{key} {name}"] = getattr(field, "value", field)


script_callbacks.on_ui_settings(_on_ui_settings, name="controlnet settings")
script_callbacks.on_infotext_pasted(_on_infotext_pasted, name="controlnet infotext")
script_callbacks.on_app_started(api.mount, name="controlnet api")
script_callbacks.on_before_ui(xyz_axes.register, name="controlnet xyz axes")
xyz_axes.register()  # API-only servers build no UI: the axes must exist for X/Y/Z plot requests too
runtime.ensure_demo_controlnet()
