"""The Checkpoint Merger tab (A1111's ui_checkpoint_merger): pick A/B/C, a method and M, write a new checkpoint."""

from __future__ import annotations

import html
import json
import logging

import gradio as gr

from modules import shared
from modules.merger import (
    ADD_DIFFERENCE,
    CHECKPOINT_FORMATS,
    INTERP_METHODS,
    NO_INTERPOLATION,
    WEIGHTED_SUM,
    MergeError,
    MergeRequest,
    merge_checkpoints,
)
from modules.models.safe_load import CheckpointLoadError, read_safetensors_metadata
from modules.runner import JobCancelled
from modules.tasks import QueueClosed
from modules.ui.common import checkpoint_choices, session_of
from modules.ui.components import create

log = logging.getLogger("webui")

INTERP_DESCRIPTIONS = {
    NO_INTERPOLATION: "No interpolation will be used. Requires one model; A. Allows for format conversion and VAE "
                      "baking.",
    WEIGHTED_SUM: "A weighted sum will be used for interpolation. Requires two models; A and B. The result is "
                  "calculated as A * (1 - M) + B * M",
    ADD_DIFFERENCE: "The difference between the last two models will be added to the first. Requires three models; "
                    "A, B and C. The result is calculated as A + (B - C) * M",
}


def interp_description(method: str) -> str:
    return INTERP_DESCRIPTIONS.get(method, "")


def vae_choices() -> list[str]:
    return ["None", *[vae.name for vae in shared.models.vae_files()]]


def refresh_checkpoints() -> gr.Dropdown:
    shared.models.refresh()
    return gr.Dropdown(choices=checkpoint_choices())


def refresh_vae() -> gr.Dropdown:
    return gr.Dropdown(choices=vae_choices())


def read_metadata(primary: str | None, secondary: str | None, tertiary: str | None) -> str:
    """A1111's "Read metadata from selected checkpoints": their safetensors metadata, A's first, as JSON."""
    metadata: dict[str, str] = {}
    for title in (primary, secondary, tertiary):
        info = shared.models.registry.find(title) if title else None
        if info and info.filename.lower().endswith(".safetensors"):
            try:
                metadata.update(read_safetensors_metadata(info.filename))
            except CheckpointLoadError as e:
                log.warning("%s", e)
    return json.dumps(metadata, indent=4, ensure_ascii=False)


def merge(primary: str | None, secondary: str | None, tertiary: str | None, interp_method: str,
          multiplier: float, save_as_half: bool, custom_name: str, checkpoint_format: str, bake_in_vae: str | None,
          discard_weights: str, save_metadata: bool, add_merge_recipe: bool, copy_metadata_fields: bool,
          metadata_json: str, progress: gr.Progress = gr.Progress(), request: gr.Request | None = None
          ) -> tuple[str, str]:
    """Run the merge as an item of the job runner's queue (never beside a generation); refresh the lists after a save.

    Returns (status, result HTML): status is "Checkpoint saved to <path>" or "Failed: <why>"."""
    request = MergeRequest(
        primary=primary or "", secondary=secondary or "", tertiary=tertiary or "", interp_method=interp_method,
        multiplier=float(multiplier), custom_name=custom_name or "", checkpoint_format=checkpoint_format,
        save_as_half=bool(save_as_half), bake_in_vae=bake_in_vae or "None", discard_weights=discard_weights or "",
        save_metadata=bool(save_metadata), add_merge_recipe=bool(add_merge_recipe),
        copy_metadata_fields=bool(copy_metadata_fields), metadata_json=metadata_json or "{}",
        output_dir=shared.models.registry.folders[0])

    def report(stage: str, done: int, total: int) -> None:
        if shared.state.interrupted:  # the core deletes its temporary file when this raises
            raise MergeError("Interrupted")
        shared.state.textinfo = stage
        shared.state.sampling_step, shared.state.sampling_steps = done, total
        progress((done, max(total, 1)), desc=stage, unit="keys")

    def work() -> str:
        try:
            path = merge_checkpoints(request, registry=shared.models.registry, vae_folders=shared.models.vae_dirs,
                                     hash_cache=shared.cache_path, progress=report)
        except (MergeError, CheckpointLoadError) as e:
            log.error("Checkpoint merge failed: %s", e)
            return f"Failed: {e}"
        except Exception as e:  # disk full, out of memory...: still a message in the page, with the trace logged
            log.exception("Checkpoint merge failed")
            return f"Failed: {type(e).__name__}: {e}"
        shared.models.refresh()  # the new file appears in every checkpoint list (and is hashed)
        return f"Checkpoint saved to {path}"

    try:
        # owned by the page's session: Interrupt and closing the tab reach it, as they reach a generation
        message = shared.runner.run("model-merge", work, owner=session_of(request))
    except (JobCancelled, QueueClosed) as e:
        message = f"Failed: {e}"
    return message, html.escape(message)


def create_tab(checkpoint_dropdown: gr.Dropdown | None = None) -> None:
    """The tab. `checkpoint_dropdown` (the quick-settings checkpoint list, optional) is refreshed after a merge too,
    as A1111 does. Its blocks are made through `create`, so extensions' component callbacks see them (A1111's
    elem_ids)."""
    with create(gr.Tab, "Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
        with create(gr.Row, equal_height=False):
            with create(gr.Column, variant="compact"):
                description = create(gr.HTML, value=interp_description(WEIGHTED_SUM),
                                     elem_id="modelmerger_interp_description")
                with create(gr.Row, elem_id="modelmerger_models"):
                    models = []
                    for letter, label, elem_id in (
                            ("A", "Primary model (A)", "modelmerger_primary_model_name"),
                            ("B", "Secondary model (B)", "modelmerger_secondary_model_name"),
                            ("C", "Tertiary model (C)", "modelmerger_tertiary_model_name")):
                        dropdown = create(gr.Dropdown, label=label, choices=checkpoint_choices(), value=None,
                                          elem_id=elem_id, scale=4)
                        refresh = create(gr.Button, "🔄", elem_id=f"refresh_checkpoint_{letter}", scale=0,
                                         min_width=40)
                        refresh.click(refresh_checkpoints, inputs=[], outputs=[dropdown], show_progress="hidden")
                        models.append(dropdown)
                custom_name = create(gr.Textbox, label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
                interp_amount = create(gr.Slider, minimum=0.0, maximum=1.0, step=0.05, value=0.3,
                                       label="Multiplier (M) - set to 0 to get model A",
                                       elem_id="modelmerger_interp_amount")
                interp_method = create(gr.Radio, choices=list(INTERP_METHODS), value=WEIGHTED_SUM,
                                       label="Interpolation Method", elem_id="modelmerger_interp_method")
                with create(gr.Row):
                    checkpoint_format = create(gr.Radio, choices=list(CHECKPOINT_FORMATS),
                                               value=CHECKPOINT_FORMATS[0], label="Checkpoint format",
                                               elem_id="modelmerger_checkpoint_format",
                                               info="Only safetensors: pickled .ckpt files can run code.")
                    save_as_half = create(gr.Checkbox, value=False, label="Save as float16",
                                          elem_id="modelmerger_save_as_half")
                with create(gr.Row):
                    bake_in_vae = create(gr.Dropdown, choices=vae_choices(), value="None", label="Bake in VAE",
                                         elem_id="modelmerger_bake_in_vae", scale=4)
                    refresh_vae_button = create(gr.Button, "🔄", elem_id="modelmerger_refresh_bake_in_vae", scale=0,
                                                min_width=40)
                discard_weights = create(gr.Textbox, value="", label="Discard weights with matching name",
                                         elem_id="modelmerger_discard_weights")
                with create(gr.Accordion, "Metadata", open=False):
                    with create(gr.Row):
                        save_metadata = create(gr.Checkbox, value=True, label="Save metadata",
                                               elem_id="modelmerger_save_metadata")
                        add_merge_recipe = create(gr.Checkbox, value=True, label="Add merge recipe metadata",
                                                  elem_id="modelmerger_add_recipe")
                        copy_metadata_fields = create(gr.Checkbox, value=True, label="Copy metadata from merged models",
                                                      elem_id="modelmerger_copy_metadata")
                    metadata_json = create(gr.TextArea, "{}", label="Metadata in JSON format",
                                           elem_id="modelmerger_metadata_json")
                    read_metadata_button = create(gr.Button, "Read metadata from selected checkpoints",
                                                  elem_id="modelmerger_read_metadata")
                merge_button = create(gr.Button, "Merge", variant="primary", elem_id="modelmerger_merge")
            with create(gr.Column, variant="compact", elem_id="modelmerger_results_container"):
                with create(gr.Group, elem_id="modelmerger_results_panel"):
                    result = create(gr.HTML, elem_id="modelmerger_result")
                status = create(gr.Textbox, visible=False, elem_id="modelmerger_status")  # plain text, for the API

        interp_method.change(interp_description, inputs=[interp_method], outputs=[description],
                             show_progress="hidden")
        refresh_vae_button.click(refresh_vae, inputs=[], outputs=[bake_in_vae], show_progress="hidden")
        read_metadata_button.click(read_metadata, inputs=models, outputs=[metadata_json])

        dropdowns = [*models, *([checkpoint_dropdown] if checkpoint_dropdown is not None else [])]

        def refreshed_lists() -> list[gr.Dropdown]:
            # Choices only: each list keeps its selection (the quick-settings one its loaded model).
            return [gr.Dropdown(choices=checkpoint_choices()) for _ in dropdowns]

        merge_button.click(
            merge,
            inputs=[*models, interp_method, interp_amount, save_as_half, custom_name, checkpoint_format,
                    bake_in_vae, discard_weights, save_metadata, add_merge_recipe, copy_metadata_fields,
                    metadata_json],
            outputs=[status, result], api_name="modelmerger",
        ).then(refreshed_lists, inputs=[], outputs=dropdowns, show_progress="hidden")
