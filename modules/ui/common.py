"""Pieces shared by the tabs: the quick-settings bar and turning results/errors into what Gradio shows."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gradio as gr
import torch
from PIL import Image

from modules import devices, shared
from modules.models.demo import DEMO_FILENAME
from modules.models.safe_load import CheckpointLoadError
from modules.processing import JobError, Processed
from modules.state import ProgressEvent
from modules.ui.components import create

log = logging.getLogger("webui")


def checkpoint_label(title: str, is_pickle: bool = False) -> str:
    if title.startswith(DEMO_FILENAME):
        return f"{title} (demo model)"
    return f"{title} ⚠ pickle" if is_pickle else title


def checkpoint_choices() -> list[tuple[str, str]]:
    return [(checkpoint_label(c.title, c.is_pickle), c.title) for c in shared.models.registry.checkpoints]


def current_checkpoint_title() -> str | None:
    if shared.models.current is not None:
        return shared.models.current.checkpoint.title
    info = shared.models.registry.find(shared.opts.sd_model_checkpoint)
    return info.title if info else (shared.models.registry.titles() or [None])[0]


def model_default_size() -> tuple[int, int]:
    """The loaded model's native size from its `modelspec.resolution` metadata (e.g. the 64x64 demo model),
    else A1111's 512x512."""
    model = shared.models.current
    resolution = model.metadata.get("modelspec.resolution", "") if model else ""
    try:
        width, height = (int(v) for v in resolution.lower().split("x"))
        return width, height
    except ValueError:
        return 512, 512


def change_checkpoint(title: str, progress: gr.Progress = gr.Progress()) -> None:
    if not title:
        return
    progress(0, desc=f"Loading {title}")
    try:
        with shared.queue_lock:
            shared.models.select(title)
    except CheckpointLoadError as e:
        raise gr.Error(str(e)) from e
    progress(1)


def refresh_checkpoints() -> gr.Dropdown:
    shared.models.refresh()
    return gr.Dropdown(choices=checkpoint_choices(), value=current_checkpoint_title())


def change_setting(key: str, value) -> bool:
    """Set one option from the top bar and save config.json; errors become a message in the page.

    Returns whether it changed. An unchanged value (e.g. the page load filling the component) does nothing.
    """
    try:
        if shared.opts.cast_value(key, value) == getattr(shared.opts, key):
            return False
    except (ValueError, KeyError) as e:
        raise gr.Error(str(e)) from e
    if shared.opts.frozen:
        raise gr.Error("Settings are frozen (--freeze-settings); nothing was changed.")
    try:
        with shared.queue_lock:  # a VAE change reloads the model: not while a job runs
            changed = shared.opts.set(key, value)
    except (ValueError, KeyError) as e:
        raise gr.Error(str(e)) from e
    if not changed:
        raise gr.Error(f"Could not change {key!r} to {value!r}; the previous value was kept (see the console).")
    shared.save_settings()
    return True


def change_vae(name: str, progress: gr.Progress = gr.Progress()) -> None:
    if not name:
        return
    progress(0, desc=f"Loading VAE {name}")
    change_setting("sd_vae", name)
    progress(1)


def refresh_vae() -> gr.Dropdown:
    return gr.Dropdown(choices=shared.models.vae_choices(), value=shared.opts.sd_vae)


def _quicksetting_handler(key: str):
    def handler(value) -> None:
        change_setting(key, value)
    handler.__name__ = f"change_setting_{key}"
    return handler


def create_quicksettings() -> gr.Dropdown:
    """The top bar: checkpoint (+ refresh), then the other `quicksettings_list` options (A1111: SD VAE, Clip skip).

    Each change is set with `opts.set` and saved to config.json at once.
    """
    from modules.ui import settings

    with create(gr.Row, elem_id="quicksettings"):
        checkpoint = create(gr.Dropdown, label="Stable Diffusion checkpoint", choices=checkpoint_choices(),
                                         value=current_checkpoint_title(), elem_id="setting_sd_model_checkpoint",
                                         scale=4)
        refresh = create(gr.Button, "🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
        others = []
        for key in settings.quicksettings_keys()[1:]:
            if key == "sd_vae":
                vae = create(gr.Dropdown, label=shared.opts.data_labels[key].label or "SD VAE",
                                          choices=shared.models.vae_choices(), value=lambda: shared.opts.sd_vae,
                                          elem_id="setting_sd_vae", scale=3)
                refresh_vae_button = create(gr.Button, "🔄", elem_id="refresh_sd_vae", scale=0, min_width=40)
                others.append((key, vae))
            else:
                component = settings.create_setting_component(key, value=lambda k=key: getattr(shared.opts, k),
                                                              scale=2)
                others.append((key, component))
    checkpoint.change(change_checkpoint, inputs=[checkpoint], outputs=[], show_progress="full")
    refresh.click(refresh_checkpoints, inputs=[], outputs=[checkpoint])
    for key, component in others:
        if key == "sd_vae":
            component.change(change_vae, inputs=[component], outputs=[], show_progress="full", api_name="change_vae")
            refresh_vae_button.click(refresh_vae, inputs=[], outputs=[component], api_name="refresh_vae")
        else:
            component.change(_quicksetting_handler(key), inputs=[component], outputs=[],
                             api_name=f"change_setting_{key}")
    return checkpoint


def info_html(processed: Processed) -> str:
    text = html.escape(processed.info).replace("\n", "<br>")
    comments = "".join(f'<p class="comment">{html.escape(c)}</p>' for c in processed.comments)
    return f'<div class="infotext">{text}</div>{comments}'


def progress_text(event: ProgressEvent, eta: float | None) -> str:
    """ "Batch 1/2 · step 3/20 · ETA 4s": what the page shows beside the bar."""
    text = f"Batch {event.job_no + 1}/{event.job_count} · step {event.step}/{event.total_steps}"
    return text if eta is None else f"{text} · ETA {eta:.0f}s"


@contextmanager
def progress_bar(progress: gr.Progress, owner: str | None = None) -> Iterator[None]:
    """Mirror the core's progress events into the page's progress bar while a job runs; with an owner, only the
    events of that session's job (another session's job may be running while this one waits)."""
    def listener(event: ProgressEvent) -> None:
        if owner is not None and shared.state.owner != owner:
            return
        done = event.job_no * event.total_steps + event.step
        progress((done, event.job_count * event.total_steps), desc=progress_text(event, shared.state.eta()),
                 unit="steps")

    shared.state.listeners.append(listener)
    try:
        yield
    finally:
        shared.state.listeners.remove(listener)


USER_ERRORS = (JobError, ValueError, CheckpointLoadError)
OUT_OF_MEMORY = ("Out of memory: try a smaller size or batch, or start with --medvram / --lowvram. "
                 "The server is still running.")


def _as_page_error(error: BaseException) -> gr.Error | None:
    """The message the page shows for an error the user can act on; None for anything else."""
    if isinstance(error, torch.OutOfMemoryError):
        devices.torch_gc()
        return gr.Error(f"{OUT_OF_MEMORY} ({str(error).splitlines()[0] if str(error) else 'allocation failed'})")
    if isinstance(error, USER_ERRORS):
        return gr.Error(str(error))
    return None


def run_safely(fn):
    """Show bad input and load failures as a message in the page, never a stack trace only in the console.

    functools.wraps keeps the signature visible, so Gradio still injects `gr.Progress` parameters."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (*USER_ERRORS, torch.OutOfMemoryError) as e:
                raise _as_page_error(e) from e
        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, torch.OutOfMemoryError) as e:
            raise _as_page_error(e) from e
    return wrapper


def run_with_previews(run: Callable[[], Processed], progress: gr.Progress,
                      owner: str | None = None) -> Iterator[Processed | Image.Image]:
    """Run a job in a worker thread; yield live preview images while it samples, then the finished result.

    The core makes previews every N steps (shared.state.current_image); this only polls and hands on those of
    the owner's job."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["processed"] = run()
        except BaseException as e:  # re-raised in the request's thread below
            outcome["error"] = e

    shown = -1
    with progress_bar(progress, owner):
        worker = threading.Thread(target=work, name="generation", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            if owner is not None and shared.state.owner != owner:
                continue
            image, step = shared.state.current_image, shared.state.current_image_step
            if image is not None and step != shown and worker.is_alive():
                shown = step
                yield image
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["processed"]


def session_of(request: gr.Request | None) -> str | None:
    """The browser session a request came from (Gradio's session hash); None outside a page (tests, API)."""
    return getattr(request, "session_hash", None) if request is not None else None


def cancel_session_jobs(request: gr.Request) -> None:
    """The page's unload event (its tab was closed or reloaded): cancel that session's queued and running jobs,
    which nobody will see any more. The owner is `session_of`, as the generate handlers pass it; the API's jobs have
    no owner and are never touched."""
    owner = session_of(request)
    if owner is None:
        return
    cancelled = shared.runner.cancel_owner(owner)
    if cancelled:
        log.info("A browser tab was closed: cancelled its %s", ", ".join(f"{t.label} {t.id}" for t in cancelled))


def stream_job(run: Callable[[], Processed], progress: gr.Progress,
               owner: str | None = None) -> Iterator[tuple]:
    """(gallery, infotext, html, infotexts) updates for a generating tab: live previews, then the results."""
    for item in run_with_previews(run, progress, owner):
        if isinstance(item, Processed):
            yield item.images, item.info, info_html(item), gallery_infotexts(item)
        else:
            yield [item], gr.skip(), gr.skip(), gr.skip()


def gallery_infotexts(processed: Processed) -> list[str]:
    """The infotext of each gallery image, in gallery order (Processed.infotexts already is: the grid's first)."""
    texts = list(processed.infotexts)
    return texts + [processed.info] * (len(processed.images) - len(texts))
