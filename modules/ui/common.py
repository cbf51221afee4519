"""Pieces shared by the tabs: the quick-settings bar and turning results/errors into what Gradio shows."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from modules import shared
from modules.models.demo import DEMO_FILENAME
from modules.models.safe_load import CheckpointLoadError
from modules.processing import JobError, Processed
from modules.state import ProgressEvent

log = logging.getLogger("webui")


def checkpoint_label(title: str) -> str:
    return f"{title} (demo model)" if title.startswith(DEMO_FILENAME) else title


def checkpoint_choices() -> list[tuple[str, str]]:
    return [(checkpoint_label(t), t) for t in shared.models.registry.titles()]


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


def create_quicksettings() -> gr.Dropdown:
    with gr.Row(elem_id="quicksettings"):
        checkpoint = gr.Dropdown(label="Stable Diffusion checkpoint", choices=checkpoint_choices(),
                                 value=current_checkpoint_title(), elem_id="setting_sd_model_checkpoint",
                                 scale=4)
        refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
    checkpoint.change(change_checkpoint, inputs=[checkpoint], outputs=[], show_progress="full")
    refresh.click(refresh_checkpoints, inputs=[], outputs=[checkpoint])
    return checkpoint


def info_html(processed: Processed) -> str:
    text = html.escape(processed.info).replace("\n", "<br>")
    comments = "".join(f'<p class="comment">{html.escape(c)}</p>' for c in processed.comments)
    return f'<div class="infotext">{text}</div>{comments}'


@contextmanager
def progress_bar(progress: gr.Progress) -> Iterator[None]:
    """Mirror the core's progress events into the page's progress bar while a job runs."""
    def listener(event: ProgressEvent) -> None:
        done = event.job_no * event.total_steps + event.step
        progress((done, event.job_count * event.total_steps), desc=f"Batch {event.job_no + 1}/{event.job_count}",
                 unit="steps")

    shared.state.listeners.append(listener)
    try:
        yield
    finally:
        shared.state.listeners.remove(listener)


def run_safely(fn):
    """Show bad input and load failures as a message in the page, never a stack trace only in the console."""
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (JobError, ValueError, CheckpointLoadError) as e:
            raise gr.Error(str(e)) from e
    wrapper.__name__ = fn.__name__
    return wrapper
