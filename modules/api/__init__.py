"""A1111's /sdapi/v1 REST API, plus task ids and an async job API.

Translation only: JSON in, the core's Job into the job runner's queue (the one queue the UI uses too), JSON out.
Every client mistake is a 4xx with A1111's error body `{error, detail, body, errors}`, never a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psutil
import torch
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image
from starlette.concurrency import run_in_threadpool

from modules import auth, devices, shared, tasks
from modules.api import models
from modules.api.common import ApiError, _error_body, decode_base64_image, encode_png  # noqa: F401 (re-exported)
from modules.infotext import parse_generation_parameters, read_info_from_image
from modules.models.safe_load import CheckpointLoadError
from modules.processing import LATENT_UPSCALE_MODES, Job, JobError, Processed, hires_target_size
from modules.runner import JobCancelled, JobFuture
from modules.sampling import samplers
from modules.ui import paste

log = logging.getLogger("webui.api")

# Fields copied one to one from a request into the Job (same names in A1111's request and our Job).
_JOB_FIELDS = {f.name for f in dataclasses.fields(Job)} - {"init_images", "image_mask", "all_prompts",
                                                              "all_negative_prompts", "all_seeds", "all_subseeds",
                                                              "comments", "clip_skip", "extra_generation_params"}
# Request field -> the key in `paste.txt2img_values` that an `infotext` fills (only when the request left it unset).
_INFOTEXT_FIELDS = ("prompt", "negative_prompt", "steps", "cfg_scale", "seed", "width", "height", "batch_size",
                    "denoising_strength", "enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
                    "hr_resize_x", "hr_resize_y", "subseed", "subseed_strength", "sampler_name", "scheduler")


# --- requests -> Job ---------------------------------------------------------------------------------------------

def _apply_infotext(request: models.Txt2ImgRequest) -> dict[str, Any]:
    """The request's fields, with an `infotext` filling those the client did not set (A1111's behaviour)."""
    values = request.model_dump()
    if request.infotext:
        parsed = paste.txt2img_values(parse_generation_parameters(request.infotext))
        for name in _INFOTEXT_FIELDS:
            if name in parsed and name not in request.model_fields_set:
                values[name] = parsed[name]
    return values


def _check_size(values: dict[str, Any], img2img: bool) -> None:
    limit = int(shared.opts.api_max_image_side)
    for name in ("width", "height"):
        value = values[name]
        if not isinstance(value, int) or value <= 0 or value % 8:
            raise ApiError(422, f"{name} must be a positive multiple of 8, got {value}")
        if value > limit:
            raise ApiError(422, f"{name} {value} is above the limit of {limit} (setting api_max_image_side)")
    if values.get("enable_hr") and not img2img:  # the second pass's size counts too (hr_scale 50 is no 64² job)
        sizes = {"width": values["width"], "height": values["height"], "hr_scale": values.get("hr_scale") or 2.0,
                 "hr_resize_x": values.get("hr_resize_x") or 0, "hr_resize_y": values.get("hr_resize_y") or 0}
        width, height = hires_target_size(SimpleNamespace(**sizes))
        if max(width, height) > limit:
            raise ApiError(422, f"hires fix size {width}x{height} is above the limit of {limit} "
                                "(setting api_max_image_side)")


def _refuse_restricted(values: dict[str, Any], prefix: str = "") -> None:
    """Settings marked api_path (output folders, file name patterns) may point only inside the data folder
    when set through the API: A1111's clients set them, but a folder elsewhere (an absolute path, `..`) would let any
    client write files anywhere. The UI's settings page may still set any folder."""
    opts = shared.opts

    def escapes(key: str) -> bool:
        try:
            text = str(opts.cast_value(key, values[key]))
        except (ValueError, TypeError, KeyError):
            return True
        if text == str(getattr(opts, key)):
            return False  # clients post back every setting GET /options gave them
        if os.path.isabs(text) or ".." in text.replace("\\", "/").split("/"):
            return True
        root = os.path.realpath(shared.cmd_opts.data_dir)
        return os.path.commonpath([root, os.path.realpath(os.path.join(root, text))]) != root

    restricted = sorted(key for key in values
                        if getattr(opts.data_labels.get(key), "api_path", False) and escapes(key))
    if restricted:
        raise ApiError(403, f"{prefix}setting(s) that may only name places inside the data folder through the API: "
                            f"{', '.join(restricted)}")


# Fields A1111 clients may send that this program cannot honour yet: a value that asks for the feature is a 422 naming
# the field (never silently dropped); the "off" values clients send by default pass. field -> (is off, why)
_UNSUPPORTED_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "restore_faces": (lambda v: not v, "face restoration is not available"),
    "tiling": (lambda v: not v, "tiling is not available"),
    "hr_checkpoint_name": (lambda v: v in (None, "", "Use same checkpoint"),
                           "a separate hires-fix checkpoint is not available"),
    "firstpass_image": (lambda v: not v, "a given first-pass image is not available"),
    "latent_mask": (lambda v: not v, "a separate latent mask is not available"),
    "disable_extra_networks": (lambda v: not v, "disabling extra networks is not available"),
}


def _refuse_unsupported(request: models.Txt2ImgRequest) -> None:
    for name, (is_off, why) in _UNSUPPORTED_FIELDS.items():
        if name in request.model_fields_set and not is_off(getattr(request, name, None)):
            raise ApiError(422, f"{name}: {why} in this WebUI (got {getattr(request, name)!r}); leave it unset")


def checked_build_job(request: models.Txt2ImgRequest, img2img: bool) -> Job:
    """`build_job`, with a value it cannot use (an infotext's "Batch size: inf", a wrong type) as a 400."""
    _refuse_unsupported(request)
    try:
        return build_job(request, img2img)
    except (ValueError, TypeError, OverflowError) as e:
        raise ApiError(400, str(e) or type(e).__name__) from e


def build_job(request: models.Txt2ImgRequest, img2img: bool) -> Job:
    values = _apply_infotext(request)
    _check_size(values, img2img)
    sampler = values.get("sampler_name") or values.get("sampler_index") or "Euler"
    try:
        info, schedule = samplers.resolve(sampler, values.get("scheduler"))
    except ValueError as e:
        raise ApiError(400, str(e)) from e
    fields = {k: v for k, v in values.items() if k in _JOB_FIELDS and v is not None}
    fields["sampler_name"] = info.name
    fields["scheduler"] = schedule.label if values.get("scheduler") or schedule.name != "automatic" else None
    fields["styles"] = list(values.get("styles") or [])
    fields["override_settings"] = dict(values.get("override_settings") or {})
    unknown = [key for key in fields["override_settings"] if key not in shared.opts.data_labels]
    if unknown:
        raise ApiError(400, f"override_settings: unknown setting(s): {', '.join(sorted(unknown))}")
    _refuse_restricted(fields["override_settings"], "override_settings: ")
    fields["do_not_save_samples"] = not values.get("save_images", False) or values.get("do_not_save_samples", False)
    fields["do_not_save_grid"] = not values.get("save_images", False) or values.get("do_not_save_grid", False)
    if not img2img:
        fields.setdefault("hr_upscaler", "Latent")
        fields.pop("resize_mode", None)
        return Job(**fields)
    init = values.get("init_images") or []
    if not init:
        raise ApiError(404, "Init image not found")
    fields["init_images"] = [decode_base64_image(data, f"init_images[{i}]") for i, data in enumerate(init)]
    if values.get("mask"):
        fields["image_mask"] = decode_base64_image(values["mask"], "mask")
        fields["mask_blur"] = values["mask_blur"] if values.get("mask_blur") is not None else values["mask_blur_x"]
    return Job(**fields)


def _response(request: models.Txt2ImgRequest, processed: Processed, include: list[Image.Image] | None = None
              ) -> dict[str, Any]:
    images = []
    if request.send_images:
        texts = processed.infotexts  # one per image, the grid's first (A1111)
        images = [encode_png(image, texts[i] if i < len(texts) else None) for i, image in enumerate(processed.images)]
        images += [encode_png(image, None) for image in include or []]
    parameters = request.model_dump()
    for key in ("init_images", "mask"):
        if parameters.get(key):
            parameters[key] = None  # A1111 does not echo the (large) input images
    return {"images": images, "parameters": parameters, "info": json.dumps(processed.js())}


def attach_scripts(job: Job, request: models.Txt2ImgRequest, img2img: bool) -> None:
    """A1111's script_name/script_args and alwayson_scripts onto the tab's script runner and the job's args
    (slot 0 = the selected script's index, then every script's slice at its args_from:args_to)."""
    from modules import scripts

    scripts.ensure_loaded()
    runner = scripts.scripts_img2img if img2img else scripts.scripts_txt2img
    if not request.script_name and not request.alwayson_scripts:
        if runner.alwayson_scripts:
            runner.attach(job, runner.default_args())  # always-on scripts run with their defaults, as in A1111
        return
    args = runner.default_args()
    if request.script_name:
        script = runner.title_map.get(request.script_name.lower())
        if script is None or script not in runner.selectable_scripts:
            raise ApiError(422, f"Selectable script not found: {request.script_name}")
        args[0] = runner.selectable_scripts.index(script) + 1
        _fill_slice(args, script, list(request.script_args or []))
    for title, value in (request.alwayson_scripts or {}).items():
        script = runner.title_map.get(str(title).lower())
        if script is None or script not in runner.alwayson_scripts:
            raise ApiError(422, f"Always-on script not found: {title}")
        script_args = value.get("args", []) if isinstance(value, dict) else []
        if not isinstance(script_args, list):
            raise ApiError(422, f"alwayson_scripts[{title!r}].args must be a list")
        _fill_slice(args, script, script_args)
    runner.attach(job, args)


def _fill_slice(args: list[Any], script: Any, values: list[Any]) -> None:
    width = (script.args_to or 0) - (script.args_from or 0)
    for offset, value in enumerate(values[:width]):
        args[script.args_from + offset] = value


def _queue_generation(request: models.Txt2ImgRequest, img2img: bool, job: Job | None = None,
                      task: tasks.Task | None = None) -> tuple[Job, JobFuture]:
    """Build (unless given) and queue a generation request; returns the job and the Future of its `Processed`."""
    job = job if job is not None else checked_build_job(request, img2img)
    attach_scripts(job, request, img2img)
    try:
        return job, shared.submit_job(job, "img2img" if img2img else "txt2img", task_id=request.force_task_id,
                                      task=task)
    except tasks.QueueClosed as e:  # the server is shutting down: the job never runs, a retry later may work
        raise ApiError(503, str(e)) from e
    except ValueError as e:  # force_task_id of a job that is queued or running
        raise ApiError(400, str(e)) from e


def _answer(request: models.Txt2ImgRequest, img2img: bool, job: Job, future: JobFuture
            ) -> dict[str, Any]:
    """The finished job's response, or the 4xx/503 that says why it failed."""
    try:
        processed = future.result()
    except tasks.QueueClosed as e:
        raise ApiError(503, str(e)) from e
    except JobCancelled as e:  # DELETE /jobs/{id} or the client's own cancel before it ran
        raise ApiError(409, f"The job was cancelled: {e}") from e
    except (JobError, ValueError, KeyError, CheckpointLoadError) as e:
        raise ApiError(400, str(e)) from e
    except torch.OutOfMemoryError as e:
        devices.torch_gc()
        raise ApiError(503, f"Out of memory: try a smaller size or batch ({str(e).splitlines()[0]})") from e
    return _response(request, processed, job.init_images if img2img and request.include_init_images else None)


def generate(request: models.Txt2ImgRequest, img2img: bool) -> dict[str, Any]:
    """Run a generation request and wait for it (scripts and tests call this directly)."""
    job, future = _queue_generation(request, img2img)
    return _answer(request, img2img, job, future)


DISCONNECT_POLL_S = 0.5


async def generate_for_client(request: models.Txt2ImgRequest, img2img: bool, http: Request) -> dict[str, Any]:
    """A synchronous generation request: queued, then awaited while watching the connection. A client that hangs
    up (a closed script, a timed-out bot) cancels its job: queued, it never runs; running, it stops at its next
    step. Building the job (decoding images) and encoding the answer run in the thread pool."""
    job, future = await run_in_threadpool(_queue_generation, request, img2img)
    waiting = asyncio.wrap_future(future)
    while not waiting.done():
        await asyncio.wait([waiting], timeout=DISCONNECT_POLL_S)
        if not waiting.done() and await http.is_disconnected():
            shared.runner.cancel(future.task.id)
            log.info("the client of %s disconnected: job cancelled", future.task.id)
            await asyncio.wait([waiting])  # the worker reports the cancel; nobody reads the answer
            raise ApiError(499, "Client closed the request; the job was cancelled.")
    return await run_in_threadpool(_answer, request, img2img, job, future)


# --- async jobs ---------------------------------------------------------------------------------------------------

def submit_job(request: models.JobRequest) -> dict[str, Any]:
    """Queue a job and answer at once with its id; it runs even if the client goes away (that is its purpose)."""
    if request.type not in ("txt2img", "img2img"):
        raise ApiError(422, f"type must be txt2img or img2img, got {request.type!r}")
    img2img = request.type == "img2img"
    job = checked_build_job(request, img2img)  # now: a bad request is a 4xx here, not a failed job later
    try:
        # awaits_result: the task becomes done only once its answer is stored (`complete`), never "done" with null
        task = shared.tasks.add(request.force_task_id, request.type, awaits_result=True)
    except tasks.QueueClosed as e:
        raise ApiError(503, str(e)) from e
    except ValueError as e:  # force_task_id of a job that is queued or running
        raise ApiError(409, str(e)) from e
    try:
        job, future = _queue_generation(request, img2img, job=job, task=task)
    except BaseException as e:  # an unknown script, say: the registered task must not stay "queued" forever
        shared.tasks.finish(task, error=str(getattr(e, "detail", "") or e) or type(e).__name__)
        raise

    def store_answer(done: JobFuture) -> None:
        """In the worker, right after the job: the stored answer, or why there is none."""
        try:
            shared.tasks.complete(task, _answer(request, img2img, job, done))
        except HTTPException as e:
            if task.status not in (tasks.DONE, tasks.FAILED, tasks.CANCELLED):
                shared.tasks.finish(task, error=str(e.detail))
            elif task.error is None and task.status != tasks.CANCELLED:
                task.error = str(e.detail)
        except Exception as e:  # the worker must survive anything an answer does
            log.exception("async job %s failed", task.id)
            if task.status not in (tasks.DONE, tasks.FAILED, tasks.CANCELLED):
                shared.tasks.finish(task, error=str(e))

    future.add_done_callback(store_answer)
    return {"id": task.id, "status": task.status}


def job_status(job_id: str) -> dict[str, Any]:
    task = shared.tasks.get(job_id)
    if task is None:
        raise ApiError(404, f"No job with id {job_id!r}")
    record: dict[str, Any] = {"id": task.id, "type": task.label, "status": task.status, "created": task.created,
                              "started": task.started, "finished": task.finished, "error": task.error,
                              "queue_position": shared.runner.position(task.id)}
    record["progress"] = _task_progress(task)
    if task.status == tasks.DONE:
        record["result"] = task.result
    return record


def cancel_job(job_id: str) -> dict[str, Any]:
    task = shared.runner.cancel(job_id)  # a queued task is skipped by its cancel_requested flag
    if task is None:
        raise ApiError(404, f"No job with id {job_id!r}")
    return {"id": task.id, "status": task.status, "cancel_requested": task.cancel_requested}


def _task_progress(task: tasks.Task) -> float:
    if task.status == tasks.RUNNING:
        return 1.0 if task.finished else shared.state.progress()  # finished: its answer is being stored
    return 1.0 if task.status in (tasks.DONE, tasks.FAILED, tasks.CANCELLED) else 0.0


# --- the other routes ---------------------------------------------------------------------------------------------

def progress(skip_current_image: bool = False, id_task: str | None = None) -> dict[str, Any]:
    state = shared.state
    result: dict[str, Any] = {
        "progress": state.progress(), "eta_relative": state.eta() or 0.0,
        "state": {"skipped": state.skipped, "interrupted": state.interrupted,
                  "stopping_generation": state.stopping_generation, "job": state.job, "job_count": state.job_count,
                  "job_timestamp": state.job_timestamp, "job_no": state.job_no, "sampling_step": state.sampling_step,
                  "sampling_steps": state.sampling_steps},
        "current_image": None, "textinfo": state.textinfo or None, "current_task": state.task_id,
    }
    if id_task:
        task = shared.tasks.get(id_task)
        if task is None:
            raise ApiError(404, f"No task with id {id_task!r}")
        result.update({"id_task": task.id, "status": task.status, "queued": task.status == tasks.QUEUED,
                       "queue_position": shared.runner.position(task.id), "completed": task.status == tasks.DONE,
                       "progress": _task_progress(task)})
        if task.status != tasks.RUNNING:
            result["eta_relative"] = 0.0
            return result
    if not skip_current_image and shared.opts.live_previews_enable and state.current_image is not None:
        result["current_image"] = encode_png(state.current_image, None)
    return result


def pending_tasks() -> dict[str, Any]:
    """A1111's pending-tasks answer (`tasks`, `running`), plus `queue`: every waiting item of the job runner, of
    any kind (txt2img, img2img, extras, model-merge, ...), with its place ("N ahead")."""
    running = shared.runner.current()
    queued = shared.runner.queued()
    return {"tasks": [t.id for t in queued], "running": running.id if running else None,
            "running_type": running.label if running else None,
            "queue": [{"id": t.id, "type": t.label, "position": n} for n, t in enumerate(queued)]}


def set_options(body: dict[str, Any]) -> dict[str, Any]:
    opts = shared.opts
    unknown = [key for key in body if key not in opts.data_labels]
    if unknown:
        raise ApiError(400, f"Unknown setting(s): {', '.join(sorted(unknown))}")
    _refuse_restricted(body)
    checkpoint = body.get("sd_model_checkpoint")
    if checkpoint is not None and shared.models.registry.find(checkpoint) is None:
        raise ApiError(400, f"model {checkpoint!r} not found")
    try:
        converted = {key: opts.cast_value(key, value) for key, value in body.items()}
    except (ValueError, KeyError) as e:
        raise ApiError(400, str(e)) from e
    for key, value in converted.items():
        if key == "sd_model_checkpoint":
            with shared.queue_lock:
                try:
                    shared.models.select(value)
                except CheckpointLoadError as e:
                    raise ApiError(400, str(e)) from e
        else:
            opts.set(key, value, is_api=True)
    shared.save_settings()
    return {}


def cmd_flags() -> dict[str, Any]:
    """The command line flags, with every login (--api-auth, --gradio-auth, ...) blanked out; the path of
    --gradio-auth-path is shown, not its contents."""
    return {k: None if "auth" in k.lower() and not k.lower().endswith("_path") else v
            for k, v in vars(shared.cmd_opts).items() if isinstance(v, (str, int, float, bool, list)) or v is None}


def png_info(request: models.PNGInfoRequest) -> dict[str, Any]:
    if not request.image.strip():
        return {"info": "", "items": {}, "parameters": {}}
    image = decode_base64_image(request.image)
    info, items = read_info_from_image(image)
    items = {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in items.items()}
    return {"info": info or "", "items": items, "parameters": parse_generation_parameters(info or "")}


def memory() -> dict[str, Any]:
    process = psutil.Process(os.getpid())
    ram = psutil.virtual_memory()
    result: dict[str, Any] = {"ram": {"free": ram.available, "used": process.memory_info().rss, "total": ram.total}}
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()
            result["cuda"] = {"system": {"free": free, "used": total - free, "total": total},
                              "active": {"current": stats.get("active_bytes.all.current", 0),
                                         "peak": stats.get("active_bytes.all.peak", 0)}}
        else:
            result["cuda"] = {"error": "unavailable"}
    except Exception as e:  # memory reporting must never fail the route
        result["cuda"] = {"error": str(e)}
    return result


def _upscalers() -> list[dict[str, Any]]:
    from modules import upscaling

    return [{"name": u.name, "model_name": u.model_name, "model_path": u.model_path, "model_url": u.model_url,
             "scale": u.scale} for u in upscaling.list_upscalers()]


def _embeddings() -> dict[str, Any]:
    database = shared.embeddings
    if shared.models.current is not None:
        database.refresh(shared.models.current)

    def describe(embedding) -> dict[str, Any]:
        return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
                "sd_checkpoint_name": embedding.sd_checkpoint_name,
                "shape": int(next(iter(embedding.vectors.values())).shape[-1]), "vectors": embedding.vectors_count}

    return {"loaded": {name: describe(e) for name, e in database.loaded.items()},
            "skipped": {name: {"reason": reason} for name, reason in database.skipped.items()}}


def _refresh_checkpoints() -> dict[str, Any]:
    shared.models.refresh()
    return {}


def _refresh_vae() -> dict[str, Any]:
    shared.models.vae_files()  # rescans the VAE folders
    return {}


def _refresh_embeddings() -> dict[str, Any]:
    _embeddings()
    return {}


def _refresh_loras() -> dict[str, Any]:
    shared.loras.refresh()
    shared.hypernetworks.refresh()
    return {}


def _unload() -> dict[str, Any]:
    with shared.queue_lock:
        shared.models.unload()
    return {}


def _reload() -> dict[str, Any]:
    with shared.queue_lock:
        shared.models.get()
    return {}


def _interrogate(request: models.InterrogateRequest) -> JSONResponse:
    decode_base64_image(request.image)
    return JSONResponse(_error_body("NotImplemented", "No interrogation model is installed (CLIP/DeepBooru "
                                    "interrogation is not available in this WebUI)."), status_code=501)


def add_routes(app: FastAPI) -> None:
    credentials = auth.parse_credentials(getattr(shared.cmd_opts, "api_auth", None))
    basic = HTTPBasic(auto_error=False)

    limiter = auth.FailureLimiter()

    def require_login(request: Request, login: HTTPBasicCredentials | None = Depends(basic)) -> None:
        client = request.client.host if request.client else "?"
        wait = limiter.retry_after(client)
        if wait > 0:
            raise HTTPException(429, f"Too many failed logins; retry in {wait:.1f} s",
                                headers={"Retry-After": str(int(wait) + 1), "WWW-Authenticate": "Basic"})
        if login is None:
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        if not auth.check(credentials, login.username, login.password):
            limiter.failed(client)
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        limiter.succeeded(client)

    router = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(require_login)] if credentials else [])
    post, get = router.post, router.get

    @post("/txt2img")
    async def txt2img(request: models.Txt2ImgRequest, http: Request) -> dict[str, Any]:
        return await generate_for_client(request, False, http)

    @post("/img2img")
    async def img2img(request: models.Img2ImgRequest, http: Request) -> dict[str, Any]:
        return await generate_for_client(request, True, http)

    @post("/jobs")
    def jobs_submit(request: models.JobRequest) -> dict[str, Any]:
        return submit_job(request)

    get("/jobs/{job_id}")(job_status)
    router.delete("/jobs/{job_id}")(cancel_job)
    get("/progress")(progress)
    get("/pending-tasks")(pending_tasks)

    @post("/interrupt")
    def interrupt() -> dict[str, Any]:
        shared.state.interrupt()
        return {}

    @post("/skip")
    def skip() -> dict[str, Any]:
        shared.state.skip()
        return {}

    get("/options")(lambda: shared.opts.all_values())

    @post("/options")
    def options(body: dict[str, Any]) -> dict[str, Any]:
        return set_options(body)

    get("/cmd-flags")(cmd_flags)
    get("/samplers")(lambda: [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)}
                              for s in samplers.SAMPLERS])
    get("/schedulers")(lambda: [{"name": t.name, "label": t.label, "aliases": list(getattr(t, "aliases", []) or []),
                                 "default_rho": getattr(t, "default_rho", -1),
                                 "need_inner_model": getattr(t, "need_inner_model", False)}
                                for t in samplers.SCHEDULE_TYPES])
    get("/upscalers")(_upscalers)
    get("/latent-upscale-modes")(lambda: [{"name": name} for name in LATENT_UPSCALE_MODES])
    get("/sd-models")(lambda: [{"title": c.title, "model_name": c.model_name, "hash": c.shorthash,
                                "sha256": c.sha256, "filename": c.filename, "config": None}
                               for c in shared.models.registry.checkpoints])
    get("/sd-vae")(lambda: [{"model_name": v.name, "filename": v.filename} for v in shared.models.vae_files()])
    get("/hypernetworks")(lambda: [{"name": e.name, "path": e.path} for e in shared.hypernetworks.refresh()])
    get("/loras")(lambda: [{"name": e.name, "alias": e.alias, "path": e.path, "metadata": e.metadata}
                           for e in shared.loras.refresh()])
    get("/embeddings")(_embeddings)
    get("/prompt-styles")(lambda: [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                                   for s in shared.prompt_styles.styles.values()])
    get("/face-restorers")(lambda: [])
    get("/realesrgan-models")(lambda: [{"name": u["name"], "path": u["model_path"], "scale": u["scale"]}
                                       for u in _upscalers() if "realesrgan" in (u["model_path"] or "").lower()])
    get("/memory")(memory)

    @post("/png-info")
    def pnginfo(request: models.PNGInfoRequest) -> dict[str, Any]:
        return png_info(request)

    @post("/interrogate")
    def interrogate(request: models.InterrogateRequest) -> JSONResponse:
        return _interrogate(request)

    post("/refresh-checkpoints")(_refresh_checkpoints)
    post("/refresh-vae")(_refresh_vae)
    post("/refresh-embeddings")(_refresh_embeddings)
    post("/refresh-loras")(_refresh_loras)
    post("/unload-checkpoint")(_unload)
    post("/reload-checkpoint")(_reload)
    _add_extras_routes(router)
    _add_script_routes(router)
    app.include_router(router)


class RequestLog:
    """--api-log: one line per /sdapi request (method, path, status, seconds). Plain ASGI rather than Starlette's
    BaseHTTPMiddleware, so in UI mode Gradio's own routes and its streamed queue events pass through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/sdapi"):
            await self.app(scope, receive, send)
            return
        started, status = time.time(), [500]

        async def send_noting_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            log.info("API %s %s %s %.3fs", scope["method"], scope["path"], status[0], time.time() - started)


def app_kwargs(ui: bool = False) -> dict[str, Any]:
    """The API's exception handlers and (with --api-log) its request log, as FastAPI constructor arguments: both
    must be in place before the app serves its first request (Starlette ignores handlers added later and refuses
    middleware), so in UI mode they go to `demo.launch(app_kwargs=...)`. With `ui`, only /sdapi routes get A1111's
    error body; Gradio's own routes keep FastAPI's."""
    from starlette.middleware import Middleware

    middleware = [Middleware(RequestLog)] if getattr(shared.cmd_opts, "api_log", False) else []
    return {"exception_handlers": _error_handlers("/sdapi" if ui else ""), "middleware": middleware}


def _add_extras_routes(router: APIRouter) -> None:
    try:
        from modules import postprocessing  # noqa: F401
    except ImportError:
        return
    from modules.api import extras

    extras.add_routes(router)


def _add_script_routes(router: APIRouter) -> None:
    @router.get("/scripts")
    def scripts_list() -> dict[str, list[str]]:
        from modules import scripts

        scripts.ensure_loaded()
        # A1111 lists every script of the tab, always-on ones included (clients look for "controlnet" here)
        return {"txt2img": [scripts.ScriptRunner.title_of(s).lower() for s in scripts.scripts_txt2img.scripts],
                "img2img": [scripts.ScriptRunner.title_of(s).lower() for s in scripts.scripts_img2img.scripts]}

    @router.get("/script-info")
    def script_info() -> list[dict[str, Any]]:
        from modules import scripts

        scripts.ensure_loaded()
        result = []
        for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
            runner.ensure_ui()
            for script in runner.scripts:
                controls = runner.inputs[script.args_from:script.args_to] if script.args_from is not None else []
                result.append({"name": runner.title_of(script).lower(), "is_alwayson": script in
                               runner.alwayson_scripts, "is_img2img": runner.is_img2img,
                               "args": [{"label": getattr(c, "label", None), "value": _jsonable(getattr(
                                   c, "value", None)), "minimum": getattr(c, "minimum", None),
                                   "maximum": getattr(c, "maximum", None), "step": getattr(c, "step", None),
                                   "choices": _jsonable(getattr(c, "choices", None))} for c in controls]})
        return result

    from modules import extensions as ext

    @router.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        # A1111's fields, plus what happened to each extension in this run (loaded, failed scripts and why,
        # incompatible, packages installed for it): A1111 lists a broken extension as enabled and says nothing
        from modules import extension_status

        records = []
        for record in ext.api_list():
            state = extension_status.status(str(record["name"])).as_dict() if record.get("enabled") else \
                {"state": "disabled", "summary": "disabled"}
            records.append({**record, "load_state": state.get("state") or "", "load_status": state.get("summary") or "",
                            "failed_scripts": state.get("failed_scripts", {}),
                            "incompatible": state.get("incompatible", ""),
                            "install_error": state.get("install_error", ""),
                            "installed_packages": state.get("installed_packages", [])})
        return records

    def _extension_call(fn, *args, **kwargs) -> dict[str, Any]:
        try:
            with shared.queue_lock:
                result = fn(*args, **kwargs)
        except ext.ExtensionError as e:
            status = 403 if str(e) == ext.INSECURE_MESSAGE else 400
            raise ApiError(status, str(e)) from e
        return result.api_record() if result is not None else {}

    @router.post("/extensions/install")
    def extension_install(body: models.ExtensionInstallRequest) -> dict[str, Any]:
        return _extension_call(ext.install, body.url, shared.cmd_opts, branch=body.branch, folder_name=body.name)

    @router.post("/extensions/update")
    def extension_update(body: models.ExtensionNameRequest) -> dict[str, Any]:
        return _extension_call(ext.update, body.name, shared.cmd_opts)

    @router.post("/extensions/remove")
    def extension_remove(body: models.ExtensionNameRequest) -> dict[str, Any]:
        return _extension_call(ext.uninstall, body.name, shared.cmd_opts)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _error_handlers(prefix: str) -> dict[Any, Any]:
    """A1111's error body for routes under `prefix` (all routes when empty), FastAPI's default elsewhere."""
    from fastapi import exception_handlers as default
    from starlette.responses import PlainTextResponse

    def ours(request: Request) -> bool:
        return request.url.path.startswith(prefix)

    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if not ours(request):
            return await default.request_validation_exception_handler(request, exc)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse(_error_body("RequestValidationError", detail, errors=errors), status_code=422)

    async def _closed(request: Request, exc: tasks.QueueClosed) -> JSONResponse:
        # any route waiting for the queue (options, unload, extensions) while the server shuts down
        return JSONResponse(_error_body("QueueClosed", str(exc)), status_code=503)

    async def _unexpected(request: Request, exc: Exception) -> Any:
        if not ours(request):
            return PlainTextResponse("Internal Server Error", status_code=500)  # Starlette's default
        log.exception("API error on %s %s", request.method, request.url.path)
        return JSONResponse(_error_body(type(exc).__name__, str(exc) or type(exc).__name__), status_code=500)

    async def _http(request: Request, exc: HTTPException) -> Any:
        if not ours(request):
            return await default.http_exception_handler(request, exc)
        return JSONResponse(_error_body(type(exc).__name__, exc.detail), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    return {RequestValidationError: _invalid, tasks.QueueClosed: _closed, Exception: _unexpected,
            HTTPException: _http}


def mount(app: FastAPI) -> None:
    """The routes onto a running Gradio app (whose handlers and middleware came from `app_kwargs(ui=True)`)."""
    add_routes(app)
    # Gradio registers a catch-all route; ours must be matched first.
    app.router.routes[:] = sorted(app.router.routes, key=lambda r: not getattr(r, "path", "").startswith("/sdapi"))


def create_api_app() -> FastAPI:
    from starlette.middleware import Middleware

    from modules.security import SecurityMiddleware, middleware_kwargs

    extra = app_kwargs()
    app = FastAPI(title="Stable Diffusion API", version="v1", exception_handlers=extra["exception_handlers"],
                  middleware=[Middleware(SecurityMiddleware, **middleware_kwargs(shared.cmd_opts)),
                              *extra["middleware"]])
    add_routes(app)
    return app

