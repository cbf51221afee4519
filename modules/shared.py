"""The application's global state, in one place: flags, settings, progress state, the model manager, the lock.

Extensions import `modules.shared` as in A1111 (`shared.opts`, `shared.state`, `shared.cmd_opts`); the core
receives what it needs explicitly through `processing.Context`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import sys
from typing import Any

from modules import cmd_args, devices, hashes, options, upscaling
from modules.model_manager import ModelManager
from modules.models.safe_load import CheckpointLoadError
from modules.networks.registry import NetworkRegistry, hypernetwork_registry, lora_registry
from modules.options import OptionInfo, Options  # noqa: F401 (A1111's shared.OptionInfo & co.)
from modules.processing import MODEL_SETTINGS, Context, Job, JobError, Processed, process_images
from modules.prompts.textual_inversion import EmbeddingDatabase
from modules.runner import JobCancelled, JobFuture, JobRunner, QueueLock
from modules.shared_total_tqdm import TotalTQDM
from modules.state import State
from modules.styles import StyleDatabase
from modules.tasks import Task, TaskRegistry
from modules.util import html, html_path, ldm_print, listfiles, natural_sort_key, walk_files  # noqa: F401 (A1111's)

log = logging.getLogger("webui")

cmd_opts: argparse.Namespace | None = None
opts: Options = Options()
state: State = State()
models: ModelManager | None = None
prompt_styles: StyleDatabase | None = None
embeddings: EmbeddingDatabase | None = None
loras: NetworkRegistry | None = None
hypernetworks: NetworkRegistry | None = None
tasks = TaskRegistry()          # every queued item's task id and status (API progress and job routes)
runner = JobRunner(state, tasks)  # the one queue and worker every kind of GPU work goes through
queue_lock = QueueLock(runner)  # A1111's queue_lock: a turn in that queue
config_path: str = ""
_counting_encoder: tuple | None = None  # the token counter's encoder, reused while the model and settings stay
cache_path: str = ""

# A1111's other module-level names that extensions read; those that follow the application are in __getattr__
face_restorers: list[Any] = []  # extensions add their FaceRestoration objects (modules.face_restoration)
total_tqdm = TotalTQDM()
progress_print_out = sys.stdout
demo = None                     # A1111 keeps the Gradio Blocks here; extensions get it from on_app_started
batch_cond_uncond = True
parallel_processing_allowed = True
xformers_available = False      # diffusers uses PyTorch's scaled-dot-product attention
weight_load_location = None
loaded_hypernetworks: list[Any] = []
clip_model = None
settings_components = None
tab_names: list[str] = []
latent_upscale_default_mode = "Latent"


class JobInterrupted(JobError, JobCancelled):
    """A queued job its owner interrupted before it started."""


def initialize(args: argparse.Namespace | None = None) -> None:
    """Set up settings, device policy and the model manager from parsed flags (does not load a model yet)."""
    global cmd_opts, models, config_path, cache_path, opts, state, prompt_styles, embeddings, loras, hypernetworks
    cmd_opts = args or cmd_args.parse_args([])
    os.makedirs(cmd_opts.data_dir, exist_ok=True)
    config_path = os.path.join(cmd_opts.data_dir, "config.json")
    cache_path = os.path.join(cmd_opts.data_dir, "cache.json")
    hashes.configure(cache_path)  # A1111's hashes.sha256(filename, title) forms use it
    _ensure_ui_config_file(getattr(cmd_opts, "ui_config_file", None))
    opts = Options(frozen=cmd_opts.freeze_settings)
    opts.load(config_path)
    from modules import output_writer  # A1111's save_image & co. called without settings use these

    output_writer.configure(opts)
    state = State()
    runner.state = state
    tasks.keep = int(opts.api_keep_finished_jobs)
    policy = devices.choose_policy(use_cpu=cmd_opts.use_cpu, device_id=cmd_opts.device_id,
                                   no_half=cmd_opts.no_half, no_half_vae=cmd_opts.no_half_vae,
                                   precision=cmd_opts.precision, bf16=cmd_opts.bf16,
                                   disable_nan_check=cmd_opts.disable_nan_check)
    devices.use_policy(policy, cmd_opts.use_cpu, cmd_opts.device_id)  # A1111's devices.device & co. read it
    for folder in (cmd_opts.ckpt_dir, cmd_opts.vae_dir, cmd_opts.lora_dir, cmd_opts.hypernetwork_dir,
                   cmd_opts.embeddings_dir):
        os.makedirs(folder, exist_ok=True)
    if policy.is_cuda:
        from modules.models.acceleration import set_compile_cache_dir

        set_compile_cache_dir(cmd_opts.data_dir)  # compiled kernels survive a restart
    models = ModelManager([cmd_opts.ckpt_dir], [cmd_opts.vae_dir], policy, opts, cache_path,
                          hashing=not cmd_opts.no_hashing, extra_checkpoint=cmd_opts.ckpt,
                          medvram=cmd_opts.medvram, lowvram=cmd_opts.lowvram, medvram_sdxl=cmd_opts.medvram_sdxl,
                          compile_models=getattr(cmd_opts, "compile", False))
    opts.onchange("sd_vae", lambda *_: models.reload_vae() if models.current else None, call=False)
    prompt_styles = StyleDatabase(cmd_opts.styles_file[0])
    embeddings = EmbeddingDatabase([cmd_opts.embeddings_dir], hash_cache=cache_path)
    loras = lora_registry(cmd_opts.lora_dir)
    hypernetworks = hypernetwork_registry(cmd_opts.hypernetwork_dir)
    models.listeners.append(lambda _model: save_settings())  # the chosen checkpoint persists
    models.before_switch.append(_forget_counting_encoder)
    state.listeners.append(_live_preview)
    upscaling.configure(cmd_opts)  # the upscaler folders and device follow these flags
    models.refresh()


_preview_worker: concurrent.futures.ThreadPoolExecutor | None = None
_preview_pending: concurrent.futures.Future | None = None


def _live_preview(event) -> None:
    """Every `show_progress_every_n_steps` steps, put a preview of the current latents into `state`.

    On CUDA the preview is made on a side thread: reading pixels back waits for the GPU, and the sampling loop must
    not (it keeps queueing steps). A preview still being made when the next one is due makes that one skipped."""
    global _preview_worker, _preview_pending
    every = int(opts.show_progress_every_n_steps)
    if not opts.live_previews_enable or every <= 0 or event.latent is None or event.step % every:
        return
    model = models.current
    taesd_dir = os.path.join(cmd_opts.models_dir, "VAE-taesd")
    step = event.job_no * event.total_steps + event.step
    if model is None or not event.latent.is_cuda:
        _make_preview(model, event.latent, opts.show_progress_type, taesd_dir, step)
        return
    if _preview_pending is not None and not _preview_pending.done():
        return
    if _preview_worker is None:
        _preview_worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview")
    _preview_pending = _preview_worker.submit(_make_preview, model, event.latent, opts.show_progress_type, taesd_dir,
                                              step)


def _make_preview(model, latent, method: str, taesd_dir: str, step: int) -> None:
    from modules.previews import decode_preview

    try:
        image = decode_preview(model, latent, method, taesd_dir)
    except Exception as e:  # a preview must never fail the job
        log.warning("Live preview failed: %s", e)
        return
    if image is not None and state.busy:
        state.current_image = image
        state.current_image_step = step


def save_settings() -> None:
    opts.save(config_path)


def context() -> Context:
    model = models.get()
    embeddings.refresh(model)  # cheap unless files or the model changed
    return Context(model=model, opts=opts, state=state, data_dir=cmd_opts.data_dir, styles=prompt_styles,
                   embeddings=embeddings, loras=loras, hypernetworks=hypernetworks, hash_cache=cache_path,
                   models=models)


def _forget_counting_encoder() -> None:
    global _counting_encoder
    _counting_encoder = None  # it holds the model that is being let go


def token_count(prompt: str, steps: int, styles: list[str] | None = None,
                is_positive: bool = True) -> tuple[int, int]:
    """(tokens used, limit) of a prompt for the loaded model, for the UI's counter.

    The `before_token_counter` hook may rewrite the prompt (and steps) first: a wildcard extension counts what the
    prompt will expand to."""
    from modules import hooks
    from modules.prompts.encoder import PromptEncoder
    from modules.prompts.guidance import prompt_token_count

    if hooks.active("before_token_counter"):
        params = hooks.BeforeTokenCounterParams(prompt, int(steps), list(styles or []), is_positive)
        hooks.fire("before_token_counter", params)
        prompt, steps = params.prompt, params.steps
    global _counting_encoder
    model = models.get()
    key = (id(model), int(opts.comma_padding_backtrack), opts.emphasis)
    if _counting_encoder is None or _counting_encoder[0] != key:  # building one reads the vocabulary (~15 ms)
        _counting_encoder = (key, PromptEncoder(model, comma_padding_backtrack=key[1], emphasis=key[2],
                                                embeddings=embeddings))
    return prompt_token_count(prompt, steps, _counting_encoder[1].count_tokens)


def _set_model_settings(values: dict[str, Any]) -> None:
    """Set sd_vae / sd_model_checkpoint and load what they name, once (setting sd_vae alone would reload)."""
    models.switch(values.get("sd_model_checkpoint"), values.get("sd_vae"))


def _use_model_overrides(job: Job) -> dict[str, Any]:
    """A job's override_settings that choose the model (A1111 reloads for them): applied in its turn of the queue,
    before its context is made, so the whole job runs on that model. Returns the values to go back to afterwards
    (empty when there is nothing to restore)."""
    wanted = {key: job.override_settings[key] for key in MODEL_SETTINGS if key in job.override_settings}
    if not wanted:
        return {}
    before = {key: getattr(opts, key) for key in wanted}
    try:
        _set_model_settings(wanted)
    except Exception as e:
        try:
            _set_model_settings(before)  # never leave the override's VAE setting behind (it would be saved)
        except Exception as back:
            log.error("Could not go back to %s: %s", before, back)
        if isinstance(e, (CheckpointLoadError, ValueError, KeyError)):
            raise JobError(f"override_settings: {e}") from e
        raise
    return before if job.override_settings_restore_afterwards else {}


def run_job(job: Job, label: str = "", owner: str | None = None, task_id: str | None = None,
            task: Task | None = None) -> Processed:
    """Run one job in its turn of the runner's queue and wait for it: what the UI, API and scripts call.

    `owner` (a browser session) lets Interrupt/Skip and progress reach only that session's job; `task_id` names
    the job for the API's progress and job routes (a fresh id when not given; the id of a queued or running task
    is refused); `task` is a record the caller registered itself (the async job API)."""
    try:
        return submit_job(job, label, owner=owner, task_id=task_id, task=task).result() if not runner.in_turn() \
            else _job_work(job)()
    except JobCancelled as e:
        if isinstance(e, JobInterrupted):
            raise
        raise JobInterrupted(str(e)) from e


def submit_job(job: Job, label: str = "", owner: str | None = None, task_id: str | None = None,
               task: Task | None = None) -> JobFuture:
    """Queue a generation job; returns a Future of its `Processed` (the async API does not wait for it)."""
    return runner.submit(label or job.mode, _job_work(job), owner=owner, task_id=task_id, task=task,
                         job_count=job.n_iter, timeout=float(opts.job_timeout or 0))


def _job_work(job: Job):
    """What the worker runs for a generation job: its model overrides, its context, its script or plain job."""
    def work() -> Processed:
        restore_models: dict[str, Any] = {}
        try:
            restore_models = _use_model_overrides(job)
            job.context = context()
            # a selected script (modules.scripts) runs instead of the plain job, inside the same turn of the queue
            processed = job.scripts.run(job, *job.script_args) if job.scripts is not None else None
            if processed is None:
                processed = process_images(job, job.context)
            return processed
        finally:
            job.context = None  # valid for this turn of the queue only; a kept result must not pin the model
            if restore_models:
                try:
                    _set_model_settings(restore_models)
                except Exception as e:  # the job's own outcome stands, and its task must still be finished
                    log.error("Could not go back to %s after the job: %s", restore_models, e)
    return work


def run_extras_job(request, save_output: bool = True, owner: str | None = None):
    """Extras (`postprocessing.run_extras`) as an item of the job runner's queue, never beside a generation.

    `owner` (a browser session) works as in `run_job`: Interrupt reaches only that session's job. The API passes
    save_output=False (A1111's API does not save extras results)."""
    from modules import postprocessing

    def work() -> postprocessing.ExtrasResult:
        return postprocessing.run_extras(request, opts, cmd_opts.data_dir, state, save_output, upscaling.registry())

    try:
        return runner.run("extras", work, owner=owner)
    except JobCancelled as e:
        raise postprocessing.ExtrasError(str(e)) from e


def __getattr__(name: str):
    """Module attributes computed on access, for A1111 extensions: `shared.sd_model` is the loaded model wrapper
    (`models.current`, None before a model is loaded or before `initialize`). Read-only; it never loads a model.
    The names of `_A1111_COMPUTED` follow the application's state the same way (`shared.device`,
    `shared.sd_upscalers`, `shared.options_templates`, ...)."""
    if name == "sd_model":
        return models.current if models is not None else None
    if name in _A1111_COMPUTED:
        return _A1111_COMPUTED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ensure_ui_config_file(path: str | None) -> None:
    """A1111 writes ui-config.json (its UI defaults) when it builds the UI, and extensions open it at import; this
    UI keeps no such file, so an empty one is made where A1111's would be (never overwritten)."""
    if not path or os.path.exists(path):
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "x", encoding="utf8") as file:
            file.write("{}\n")
    except OSError as e:  # a read-only data dir: the extensions that need it say so themselves
        log.warning("could not create %s: %s", path, e)


native = False  # Forge's flag: extensions branch on it (`getattr(shared, "native", False)`); this is not Forge


def get_version() -> dict[str, str]:
    """Forge/SD.Next-style version record some extensions print: app name and version."""
    from modules.job_infotext import VERSION

    return {"app": "stable-diffusion-webui (diffusers core)", "version": VERSION}


def restart_server(restart: bool = True) -> None:
    """A1111's way for an extension to ask for a restart: recorded on `state` (the Extensions tab's "Apply and
    restart" does the restart); nothing is stopped from here."""
    if state is not None:
        state.server_command = "restart" if restart else "stop"
        state.need_restart = True


def options_section(section_identifier: tuple[str, ...], options_dict: dict[str, OptionInfo],
                    category_id: str | None = None) -> dict[str, OptionInfo]:
    """A1111's `shared.options_section` (its parameter names): the options of one Settings section."""
    return options.options_section(section_identifier, options_dict, category_id)


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    """A1111's checkpoint titles ("name [hash]"), or with `use_short` their file names, in natural order."""

    if models is None:
        return []
    titles = [os.path.basename(c.name) if use_short else c.title for c in models.registry.checkpoints]
    return sorted(titles, key=natural_sort_key)


def refresh_checkpoints() -> list[str]:
    """Scan the checkpoint folders again; returns the titles."""
    if models is not None:
        models.refresh()
    return list_checkpoint_tiles()


def list_samplers() -> list[Any]:
    """The samplers (objects with `name`, `aliases`, `options`), as A1111's `sd_samplers.all_samplers`."""
    from modules.sampling import samplers

    return list(samplers.SAMPLERS)


def reload_hypernetworks() -> None:
    """Scan the hypernetwork folder again."""
    if hypernetworks is not None:
        hypernetworks.refresh()


def _a1111_names() -> dict[str, Any]:
    """{name: function giving its value now}; imported on use, as these adapters build on this module."""
    def hide_dirs() -> dict[str, bool]:
        return {"visible": not getattr(cmd_opts, "hide_ui_dir_config", False)}

    def upscalers() -> list[Any]:
        from modules import upscaler

        return upscaler.sd_upscalers()

    def interrogator() -> Any:
        from modules import interrogate

        return interrogate.interrogator

    def paths_name(name: str):
        def value():
            from modules import paths_internal

            return getattr(paths_internal, name)
        return value

    monitors: dict[str, Any] = {}

    def mem_mon() -> Any:
        from modules import memmon

        if "mem_mon" not in monitors:
            monitors["mem_mon"] = memmon.MemUsageMonitor("MemMon", devices.device, opts)
        return monitors["mem_mon"]

    def latent_upscale_modes() -> dict[str, Any]:
        from modules.processing import LATENT_UPSCALE_MODES

        return LATENT_UPSCALE_MODES

    return {
        "device": lambda: devices.device,
        "weight_load_location": lambda: None,
        "sd_upscalers": upscalers,
        "interrogator": interrogator,
        "mem_mon": mem_mon,
        "options_templates": lambda: opts.data_labels,  # the same dict: updating it adds settings, as in A1111
        "restricted_opts": lambda: set(),
        "hide_dirs": hide_dirs,
        "models_path": paths_name("models_path"),
        "data_path": paths_name("data_path"),
        "script_path": paths_name("script_path"),
        "extensions_dir": paths_name("extensions_dir"),
        "extensions_builtin_dir": paths_name("extensions_builtin_dir"),
        "sd_configs_path": paths_name("sd_configs_path"),
        "sd_default_config": paths_name("sd_default_config"),
        "default_sd_model_file": paths_name("default_sd_model_file"),
        "sd_model_file": paths_name("sd_model_file"),
        "config_filename": lambda: config_path,
        "styles_filename": lambda: list(cmd_opts.styles_file) if cmd_opts is not None else [],
        "latent_upscale_modes": latent_upscale_modes,
    }


_A1111_COMPUTED = _a1111_names()
