"""The X/Y/Z plot axes the extension adds ("[ControlNet] Weight", ...), applied to every enabled unit of a cell.

Registered into the built-in X/Y/Z plot script's `axis_options` (found among the loaded script modules by file name,
as the extension finds it). A cell's job gets new unit objects, so one cell's value never leaks into the next.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from lib_controlnet import preprocessors, runtime
from lib_controlnet.units import units_from_args

LABEL_PREFIX = "[ControlNet] "


def _controlnet_script(p: Any) -> Any:
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", []):
        if script.title().lower() == "controlnet":
            return script
    return None


def _apply(field: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, _values: Any) -> None:
        script = _controlnet_script(p)
        if script is None:
            return
        args = list(p.script_args)
        start, end = script.args_from, script.args_to
        units = units_from_args(args[start:end])
        changed = [dataclasses.replace(u, **{field: value}) if u.enabled else u for u in units]
        args[start:start + len(changed)] = changed
        p.script_args = args
    return apply


def _to_bool(text: Any) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes", "on")


def _axes(xyz: Any) -> list[Any]:
    option = xyz.AxisOption

    def models() -> list[str]:
        return runtime.model_titles()[1:]
    return [
        option(LABEL_PREFIX + "Enabled", _to_bool, _apply("enabled"), choices=lambda: ["False", "True"]),
        option(LABEL_PREFIX + "Model", str, _apply("model"), choices=models, cost=0.9),
        option(LABEL_PREFIX + "Weight", float, _apply("weight")),
        option(LABEL_PREFIX + "Guidance Start", float, _apply("guidance_start")),
        option(LABEL_PREFIX + "Guidance End", float, _apply("guidance_end")),
        option(LABEL_PREFIX + "Preprocessor", str, _apply("module"),
               choices=lambda: preprocessors.module_list(False)),
        option(LABEL_PREFIX + "Pre Resolution", int, _apply("processor_res")),
        option(LABEL_PREFIX + "Pre Threshold A", float, _apply("threshold_a")),
        option(LABEL_PREFIX + "Pre Threshold B", float, _apply("threshold_b")),
        option(LABEL_PREFIX + "Resize Mode", str, _apply("resize_mode"),
               choices=lambda: ["Just Resize", "Crop and Resize", "Resize and Fill"]),
        option(LABEL_PREFIX + "Control Mode", str, _apply("control_mode"),
               choices=lambda: ["Balanced", "My prompt is more important", "ControlNet is more important"]),
    ]


def register(*_: Any) -> None:
    """Add the axes to the X/Y/Z plot script once (its module is found by file name, as the extension does)."""
    from modules import scripts

    for data in scripts.scripts_data:
        if os.path.basename(data.path) != "xyz_grid.py":
            continue
        xyz = data.module
        present = {axis.label for axis in xyz.axis_options}
        xyz.axis_options.extend(axis for axis in _axes(xyz) if axis.label not in present)

