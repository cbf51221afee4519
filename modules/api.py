"""A first slice of A1111's /sdapi/v1 REST API (the full surface is a later piece of work).

Only translation between JSON and the core's Job/Processed; errors become 4xx with a message.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, PngImagePlugin

from modules import shared
from modules.models.safe_load import CheckpointLoadError
from modules.processing import Job, JobError
from modules.sampling import samplers

TXT2IMG_FIELDS = {f for f in Job.__dataclass_fields__ if not f.startswith("all_") and f not in (
    "init_images", "image_mask", "clip_skip")}


def encode_png(image: Image.Image, info: str | None) -> str:
    buffer = io.BytesIO()
    meta = PngImagePlugin.PngInfo()
    if info:
        meta.add_text("parameters", info)
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode()


def txt2img(body: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in body.items() if k in TXT2IMG_FIELDS and v is not None}
    fields.setdefault("sampler_name", body.get("sampler_index") or "Euler")  # A1111's API default sampler
    fields.setdefault("scheduler", None)  # unset: no "Schedule type" in the infotext, as A1111
    fields.setdefault("steps", 50)
    job = Job(**fields)
    job.do_not_save_samples = job.do_not_save_grid = not body.get("save_images", False)
    try:
        processed = shared.run_job(job, "txt2img")
    except (JobError, ValueError, CheckpointLoadError) as e:
        raise HTTPException(status_code=400, detail=str(e)) from e
    images = []
    if body.get("send_images", True):
        images = [encode_png(im, processed.infotexts[i] if i < len(processed.infotexts) else None)
                  for i, im in enumerate(processed.images)]
    return {"images": images, "parameters": body, "info": json.dumps(processed.js())}


def add_routes(app: FastAPI) -> None:
    app.add_api_route("/sdapi/v1/txt2img", txt2img, methods=["POST"])
    app.add_api_route("/sdapi/v1/samplers", lambda: [
        {"name": s.name, "aliases": list(s.aliases), "options": s.options} for s in samplers.SAMPLERS],
        methods=["GET"])
    app.add_api_route("/sdapi/v1/sd-models", lambda: [
        {"title": c.title, "model_name": c.model_name, "hash": c.shorthash, "sha256": c.sha256,
         "filename": c.filename, "config": None} for c in shared.models.registry.checkpoints], methods=["GET"])
    app.add_api_route("/sdapi/v1/progress", lambda: {
        "progress": shared.state.progress(), "eta_relative": 0.0,
        "state": {"job": shared.state.job, "job_count": shared.state.job_count, "job_no": shared.state.job_no,
                  "sampling_step": shared.state.sampling_step, "sampling_steps": shared.state.sampling_steps,
                  "interrupted": shared.state.interrupted, "skipped": shared.state.skipped},
        "current_image": None, "textinfo": shared.state.textinfo}, methods=["GET"])


def mount(app: FastAPI) -> None:
    add_routes(app)
    # Gradio registers a catch-all route; ours must be matched first.
    app.router.routes[:] = sorted(app.router.routes, key=lambda r: not getattr(r, "path", "").startswith("/sdapi"))


def serve_api_only(host: str, port: int) -> None:
    import uvicorn

    app = FastAPI(title="Stable Diffusion API")
    add_routes(app)

    @app.exception_handler(HTTPException)
    async def _error(_request, exc: HTTPException) -> JSONResponse:  # A1111's error shape
        return JSONResponse({"error": type(exc).__name__, "detail": exc.detail, "body": "", "errors": ""},
                            status_code=exc.status_code)

    uvicorn.run(app, host=host, port=port)
