"""/sdapi/v1/extra-single-image and extra-batch-images: A1111's request fields onto modules.postprocessing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modules import postprocessing, shared
from modules.api import models
from modules.api.common import ApiError, decode_base64_image, encode_png


def _request(body: models.ExtrasBase, **images: Any) -> postprocessing.ExtrasRequest:
    return postprocessing.ExtrasRequest(
        resize_mode=body.resize_mode, show_extras_results=body.show_extras_results,
        upscaling_resize=body.upscaling_resize, upscaling_resize_w=body.upscaling_resize_w,
        upscaling_resize_h=body.upscaling_resize_h, upscaling_crop=body.upscaling_crop,
        extras_upscaler_1=body.upscaler_1, extras_upscaler_2=body.upscaler_2,
        extras_upscaler_2_visibility=body.extras_upscaler_2_visibility, upscale_first=body.upscale_first,
        gfpgan_visibility=body.gfpgan_visibility, codeformer_visibility=body.codeformer_visibility,
        codeformer_weight=body.codeformer_weight, **images)


def _run(request: postprocessing.ExtrasRequest) -> postprocessing.ExtrasResult:
    try:
        return shared.run_extras_job(request, save_output=False)
    except ValueError as e:
        raise ApiError(400, str(e)) from e


def add_routes(router: APIRouter) -> None:
    @router.post("/extra-single-image")
    def extra_single_image(body: models.ExtrasSingleImageRequest) -> dict[str, Any]:
        image = decode_base64_image(body.image, "image")
        result = _run(_request(body, extras_mode=0, image=image))
        return {"html_info": result.html_info, "image": encode_png(result.images[0], result.infotext)
                if result.images else ""}

    @router.post("/extra-batch-images")
    def extra_batch_images(body: models.ExtrasBatchImagesRequest) -> dict[str, Any]:
        images = [(item.name or f"image{i}", decode_base64_image(item.data, f"imageList[{i}]"))
                  for i, item in enumerate(body.imageList)]
        result = _run(_request(body, extras_mode=1, image_folder=images))
        return {"html_info": result.html_info, "images": [encode_png(image, result.infotext)
                                                           for image in result.images]}
