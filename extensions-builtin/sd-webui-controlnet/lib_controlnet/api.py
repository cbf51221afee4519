"""The extension's HTTP routes (`/controlnet/...`), mounted through `script_callbacks.on_app_started`.

Same paths, parameters and answers as sd-webui-controlnet, so webuiapi, sd-backend-client and scripts that call them
work unchanged. Preprocessing (`/controlnet/detect`) runs as a job of kind "controlnet-preprocess" in the one queue.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, HTTPException
from PIL import Image

from lib_controlnet import preprocessors, runtime
from lib_controlnet.units import ControlNetUnit, UnitError, to_array

MAX_DETECT_IMAGES = 16  # images per /controlnet/detect request (bounded work per request)


def _encode(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def run_detect(module: str, images: list[np.ndarray], masks: list[np.ndarray | None], processor_res: float,
               threshold_a: float, threshold_b: float) -> list[Image.Image]:
    """Each image's control map at its own size (the preview button and /controlnet/detect), in the job queue."""
    from modules import shared

    unit = ControlNetUnit(enabled=True, module=module, processor_res=processor_res, threshold_a=threshold_a,
                          threshold_b=threshold_b, resize_mode="Just Resize")

    def work() -> list[Image.Image]:
        maps = []
        for image, mask in zip(images, masks):
            resolved = runtime.resolve(unit, image, image.shape[1], image.shape[0])
            maps.append(runtime.visible_map(runtime.preprocess(resolved, image, mask)))
        return maps

    return shared.runner.run("controlnet-preprocess", work, label=f"ControlNet preprocessor {module}",
                             progress=False)


def mount(_blocks: Any, app: FastAPI) -> None:
    @app.get("/controlnet/version")
    def version() -> dict[str, int]:
        return {"version": runtime.API_VERSION}

    @app.get("/controlnet/model_list")
    def model_list(update: bool = True) -> dict[str, list[str]]:
        return {"model_list": runtime.model_titles()}

    @app.get("/controlnet/module_list")
    def module_list(alias_names: bool = False) -> dict[str, Any]:
        return {"module_list": preprocessors.module_list(alias_names),
                "module_detail": preprocessors.module_detail(alias_names)}

    @app.get("/controlnet/control_types")
    def control_types() -> dict[str, Any]:
        titles = runtime.model_titles()
        types = preprocessors.control_types()
        for name, entry in types.items():  # the models whose names name the type (the UI's Control Type rule)
            entry["model_list"] = runtime.models_for_type(name, titles)
        return {"control_types": types}

    @app.get("/controlnet/settings")
    def settings() -> dict[str, int]:
        return {"control_net_unit_count": int(runtime.setting("control_net_unit_count"))}

    @app.post("/controlnet/detect")
    def detect(controlnet_module: str = Body("none", title="Controlnet Module"),
               controlnet_input_images: list[str] = Body([], title="Controlnet Input Images"),
               controlnet_processor_res: float = Body(-1, title="Controlnet Processor Resolution"),
               controlnet_threshold_a: float = Body(-1, title="Controlnet Threshold a"),
               controlnet_threshold_b: float = Body(-1, title="Controlnet Threshold b"),
               controlnet_masks: list[str] = Body([], title="Controlnet Masks"),
               low_vram: bool = Body(False, title="Low vram"),
               controlnet_images: list[str] = Body([], title="Controlnet Images (webuiapi's name for the input "
                                                          "images)")) -> dict[str, Any]:
        controlnet_input_images = controlnet_input_images or controlnet_images
        try:
            preprocessor = preprocessors.get(controlnet_module)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=f"controlnet_module: {e}") from None
        if not controlnet_input_images:
            raise HTTPException(status_code=422, detail="controlnet_input_images: No image selected")
        if len(controlnet_input_images) > MAX_DETECT_IMAGES:
            raise HTTPException(status_code=422, detail=f"controlnet_input_images: at most {MAX_DETECT_IMAGES} "
                                                        "images per request")
        if preprocessor.is_inpaint and len(controlnet_masks) != len(controlnet_input_images):
            raise HTTPException(status_code=422, detail=f"controlnet_masks: preprocessor {controlnet_module} "
                                                        "requires one mask per image")
        try:
            images = [to_array(text, f"controlnet_input_images[{i}]")
                      for i, text in enumerate(controlnet_input_images)]
            masks = [to_array(controlnet_masks[i], f"controlnet_masks[{i}]")[:, :, 0]
                     if i < len(controlnet_masks) else None for i in range(len(images))]
            results = run_detect(controlnet_module, images, masks, controlnet_processor_res,
                                 controlnet_threshold_a, controlnet_threshold_b)
        except (UnitError, runtime.ControlNetError) as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"images": [_encode(image) for image in results], "info": "Success"}
