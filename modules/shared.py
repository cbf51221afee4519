"""The application's global state, in one place: flags, settings, progress state, the model manager, the lock.

Extensions import `modules.shared` as in A1111 (`shared.opts`, `shared.state`, `shared.cmd_opts`); the core
receives what it needs explicitly through `processing.Context`.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from modules import cmd_args, devices
from modules.models.manager import ModelManager
from modules.networks.registry import NetworkRegistry, hypernetwork_registry, lora_registry
from modules.options import Options
from modules.processing import Context, Job, Processed, process_images
from modules.prompts.textual_inversion import EmbeddingDatabase
from modules.state import State
from modules.styles import StyleDatabase

log = logging.getLogger("webui")

cmd_opts: argparse.Namespace | None = None
opts: Options = Options()
state: State = State()
models: ModelManager | None = None
prompt_styles: StyleDatabase | None = None
embeddings: EmbeddingDatabase | None = None
loras: NetworkRegistry | None = None
hypernetworks: NetworkRegistry | None = None
queue_lock = threading.Lock()   # one generation at a time (A1111's queue_lock)
config_path: str = ""
_counting_encoder: tuple | None = None  # the token counter's encoder, reused while the model and settings stay
cache_path: str = ""


def initialize(args: argparse.Namespace | None = None) -> None:
    """Set up settings, device policy and the model manager from parsed flags (does not load a model yet)."""
    global cmd_opts, models, config_path, cache_path, opts, state, prompt_styles, embeddings, loras, hypernetworks
    cmd_opts = args or cmd_args.parse_args([])
    os.makedirs(cmd_opts.data_dir, exist_ok=True)
    config_path = os.path.join(cmd_opts.data_dir, "config.json")
    cache_path = os.path.join(cmd_opts.data_dir, "cache.json")
    opts = Options(frozen=cmd_opts.freeze_settings)
    opts.load(config_path)
    state = State()
    policy = devices.choose_policy(use_cpu=cmd_opts.use_cpu, device_id=cmd_opts.device_id,
                                   no_half=cmd_opts.no_half, no_half_vae=cmd_opts.no_half_vae,
                                   precision=cmd_opts.precision, bf16=cmd_opts.bf16,
                                   disable_nan_check=cmd_opts.disable_nan_check)
    for folder in (cmd_opts.ckpt_dir, cmd_opts.vae_dir, cmd_opts.lora_dir, cmd_opts.hypernetwork_dir,
                   cmd_opts.embeddings_dir):
        os.makedirs(folder, exist_ok=True)
    models = ModelManager([cmd_opts.ckpt_dir], [cmd_opts.vae_dir], policy, opts, cache_path,
                          hashing=not cmd_opts.no_hashing, extra_checkpoint=cmd_opts.ckpt)
    opts.onchange("sd_vae", lambda *_: models.reload_vae() if models.current else None, call=False)
    prompt_styles = StyleDatabase(cmd_opts.styles_file[0])
    embeddings = EmbeddingDatabase([cmd_opts.embeddings_dir], hash_cache=cache_path)
    loras = lora_registry(cmd_opts.lora_dir)
    hypernetworks = hypernetwork_registry(cmd_opts.hypernetwork_dir)
    models.listeners.append(lambda _model: save_settings())  # the chosen checkpoint persists
    state.listeners.append(_live_preview)
    models.refresh()


def _live_preview(event) -> None:
    """Every `show_progress_every_n_steps` steps, put a preview of the current latents into `state`."""
    every = int(opts.show_progress_every_n_steps)
    if not opts.live_previews_enable or every <= 0 or event.latent is None or event.step % every:
        return
    from modules.previews import decode_preview

    state.current_image = decode_preview(models.current, event.latent, opts.show_progress_type)
    state.current_image_step = event.job_no * event.total_steps + event.step


def save_settings() -> None:
    opts.save(config_path)


def context() -> Context:
    model = models.get()
    embeddings.refresh(model)  # cheap unless files or the model changed
    return Context(model=model, opts=opts, state=state, data_dir=cmd_opts.data_dir, styles=prompt_styles,
                   embeddings=embeddings, loras=loras, hypernetworks=hypernetworks, hash_cache=cache_path)


def token_count(prompt: str, steps: int) -> tuple[int, int]:
    """(tokens used, limit) of a prompt for the loaded model, for the UI's counter."""
    from modules.prompts.encoder import PromptEncoder
    from modules.prompts.guidance import prompt_token_count

    global _counting_encoder
    model = models.get()
    key = (id(model), int(opts.comma_padding_backtrack), opts.emphasis)
    if _counting_encoder is None or _counting_encoder[0] != key:  # building one reads the vocabulary (~15 ms)
        _counting_encoder = (key, PromptEncoder(model, comma_padding_backtrack=key[1], emphasis=key[2],
                                                embeddings=embeddings))
    return prompt_token_count(prompt, steps, _counting_encoder[1].count_tokens)


def run_job(job: Job, label: str = "") -> Processed:
    """Run one job under the queue lock with progress state set up: what the UI, API and scripts call."""
    with queue_lock:
        state.begin(label or job.mode, job.n_iter)
        try:
            return process_images(job, context())
        finally:
            state.end()
