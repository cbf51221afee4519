"""Typed settings (config.json) with A1111's key names and defaults.

`Options` keeps the values that were set or loaded in `data`; every other registered key reads as its default, so a
changed default reaches users who never touched the setting. Unknown keys (owned by extensions that are not loaded)
are kept and written back. Extensions register settings with `opts.add_option(key, OptionInfo(...))`, exactly as in
A1111 (`OptionInfo(default, label, component, component_args, ..., section=(id, title))`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modules import a1111_settings

logger = logging.getLogger("webui")

# Section id -> title shown in the settings UI (A1111 ids).
SECTION_TITLES: dict[str, str] = {
    "saving-images": "Saving images/grids",
    "saving-paths": "Paths for saving",
    "saving-to-dirs": "Saving to a directory",
    "sd": "Stable Diffusion",
    "sdxl": "Stable Diffusion XL",
    "vae": "VAE",
    "img2img": "img2img",
    "compatibility": "Compatibility",
    "sampler-params": "Sampler parameters",
    "infotext": "Infotext",
    "ui": "User interface",
    "live-previews": "Live previews",
    "hidden": "Hidden options",
}

_TRUE_STRINGS = {"true", "1", "yes", "on"}
_FALSE_STRINGS = {"false", "0", "no", "off"}


@dataclass
class OptionInfo:
    """Description of one setting.

    The positional order follows A1111 so extensions' `OptionInfo(default, label, gr.Slider, {...})` keeps working;
    a plain string in the third position is taken as the section id (`OptionInfo(True, "Save", "saving-images")`).
    `choices` (a list, or a callable returning one for lists that change at runtime) restricts values; only a
    static list is enforced by `Options.set`, since a callable's list may be stale (e.g. before a model refresh).
    """

    default: Any = None
    label: str = ""
    component: Any = None
    component_args: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    onchange: Callable[[], Any] | None = None
    section: str | tuple[str, ...] | None = None
    refresh: Callable[[], Any] | None = None
    comment_before: str = ""
    comment_after: str = ""
    infotext: str | None = None
    restrict_api: bool = False
    category_id: str | None = None
    # names a folder or a file-name pattern: set through the API only to places inside the data folder
    api_path: bool = False
    choices: list[Any] | Callable[[], list[Any]] | None = None
    section_title: str | None = None
    do_not_save: bool = False
    help_text: str = ""
    needs_reload: bool = False
    needs_restart_flag: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.component, str) and self.section is None:
            self.section, self.component = self.component, None
        if isinstance(self.section, (tuple, list)):
            # A1111 sections are (id, title) or (id, title, category).
            section = tuple(self.section)
            self.section = section[0]
            self.section_title = self.section_title or (section[1] if len(section) > 1 else None)
            if len(section) > 2 and self.category_id is None:
                self.category_id = section[2]
        if self.section is not None and self.section_title is None:
            self.section_title = SECTION_TITLES.get(self.section, self.section)

    # Chainable helpers that A1111 extensions call.
    def info(self, text: str) -> OptionInfo:
        self.help_text = text
        self.comment_after += f"<span class='info'>({text})</span>"
        return self

    def html(self, text: str) -> OptionInfo:
        self.comment_after += text
        return self

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.needs_reload = True
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self

    def needs_restart(self) -> OptionInfo:
        self.needs_restart_flag = True
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def static_choices(self) -> list[Any] | None:
        return self.choices if isinstance(self.choices, list) else None

    def current_choices(self) -> list[Any] | None:
        """The choices to show now (calls a callable `choices`)."""
        return self.choices() if callable(self.choices) else self.choices


def options_section(section: tuple[str, ...], options: dict[str, OptionInfo],
                    category_id: str | None = None) -> dict[str, OptionInfo]:
    """Assign one section (and optionally a category) to a group of options (A1111's helper of the same name)."""
    section_id, title = section[0], section[1]
    if category_id is None and len(section) > 2:
        category_id = section[2]
    for info in options.values():
        info.section = section_id
        info.section_title = title
        if category_id is not None:
            info.category_id = category_id
    return options


@dataclass
class OptionsCategory:
    id: str
    label: str


class OptionsCategories:
    """A1111's settings categories (`options.categories.register_category("prompt_gen", "Prompt Gen")`); the
    Settings tab groups sections by their category's label where one is given."""

    def __init__(self) -> None:
        self.mapping: dict[str, OptionsCategory] = {}

    def register_category(self, category_id: str, label: str) -> str:
        if category_id not in self.mapping:
            self.mapping[category_id] = OptionsCategory(category_id, label)
        return category_id


categories = OptionsCategories()


def _slider(minimum: float, maximum: float, step: float) -> dict[str, float]:
    return {"minimum": minimum, "maximum": maximum, "step": step}


def default_option_table() -> dict[str, OptionInfo]:
    """All built-in settings. Fresh objects on each call so instances never share mutable state."""
    table: dict[str, OptionInfo] = {}
    table.update(options_section(("saving-images", "Saving images/grids"), {
        "samples_save": OptionInfo(True, "Always save all generated images"),
        "samples_format": OptionInfo("png", "File format for images"),
        "samples_filename_pattern": OptionInfo("", "Images filename pattern", api_path=True),
        "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),
        "save_images_replace_action": OptionInfo("Replace", "Saving the image to an existing file",
                                                 choices=["Replace", "Add number suffix"]),
        "grid_save": OptionInfo(True, "Always save all generated image grids"),
        "grid_format": OptionInfo("png", "File format for grids"),
        "grid_extended_filename": OptionInfo(False, "Add extended info (seed, prompt) to filename when saving grid"),
        "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
        "grid_prevent_empty_spots": OptionInfo(False, "Prevent empty spots in grid (when set to autodetect)"),
        "grid_zip_filename_pattern": OptionInfo("", "Archive filename pattern", api_path=True).link(
            "wiki", "https://github.com/AUTOMATIC1111/stable-diffusion-webui/wiki/Custom-Images-Filename-Name-and-"
                    "Subdirectory"),
        "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size",
                             component_args=_slider(-1, 16, 1)),
        "font": OptionInfo("", "Font for image grids that have text"),
        "grid_text_active_color": OptionInfo("#000000", "Text color for image grids"),
        "grid_text_inactive_color": OptionInfo("#999999", "Inactive text color for image grids"),
        "grid_background_color": OptionInfo("#ffffff", "Background color for image grids"),
        "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files"),
        "save_txt": OptionInfo(False, "Create a text file with generation parameters next to every image"),
        "save_images_before_face_restoration": OptionInfo(False, "Save a copy of image before doing face restoration."),
        "save_images_before_highres_fix": OptionInfo(False, "Save a copy of image before applying highres fix"),
        "save_images_before_color_correction": OptionInfo(
            False, "Save a copy of image before applying color correction to img2img results"),
        "save_mask": OptionInfo(False, "For inpainting, save a copy of the greyscale mask"),
        "save_mask_composite": OptionInfo(False, "For inpainting, save a masked composite"),
        "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and avif images", component_args=_slider(1, 100, 1)),
        "webp_lossless": OptionInfo(False, "Use lossless compression for webp images"),
        "export_for_4chan": OptionInfo(True, "Save copy of large images as JPG").info(
            "if the file size is above the limit, or either width or height are above the limit"),
        "img_downscale_threshold": OptionInfo(4.0, "File size limit for the above option, MB"),
        "target_side_length": OptionInfo(4000, "Width/height limit for the above option, in pixels"),
        "img_max_size_mp": OptionInfo(200, "Maximum image size").info("in megapixels"),
        "use_original_name_batch": OptionInfo(
            True, "Use original name for output filename during batch process in extras tab"),
        "use_upscaler_name_as_suffix": OptionInfo(False, "Use upscaler name as filename suffix in the extras tab"),
        "save_selected_only": OptionInfo(True, "When using 'Save' button, only save a single selected image"),
        "save_write_log_csv": OptionInfo(True, "Write log.csv when saving images using 'Save' button"),
        "save_init_img": OptionInfo(False, "Save init images when using img2img"),
        "temp_dir": OptionInfo("", "Directory for temporary images; leave empty for default", api_path=True),
        "clean_temp_dir_at_start": OptionInfo(False, "Cleanup non-default temporary directory when starting webui"),
        "save_incomplete_images": OptionInfo(False, "Save incomplete images").info(
            "save images that has been interrupted in mid-generation; even if not saved, they will still show up in "
            "webui output."),
        "notification_audio": OptionInfo(True, "Play notification sound after image generation").info(
            "notification.mp3 should be present in the root directory").needs_reload_ui(),
        "notification_volume": OptionInfo(100, "Notification sound volume",
                                          component_args=_slider(0, 100, 1)).info("in %"),
    }))
    table.update(options_section(("saving-paths", "Paths for saving"), {
        "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below",
                                     api_path=True),
        "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images",
                                             api_path=True),
        "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images",
                                             api_path=True),
        "outdir_extras_samples": OptionInfo("outputs/extras-images", "Output directory for images from extras tab",
                                            api_path=True),
        "outdir_grids": OptionInfo("", "Output directory for grids; if empty, defaults to two directories below",
                                   api_path=True),
        "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids",
                                           api_path=True),
        "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids",
                                           api_path=True),
        "outdir_save": OptionInfo("log/images", "Directory for saving images using the Save button", api_path=True),
        "outdir_init_images": OptionInfo("outputs/init-images", "Directory for saving init images when using img2img",
                                         api_path=True),
    }))
    table.update(options_section(("saving-to-dirs", "Saving to a directory"), {
        "save_to_dirs": OptionInfo(True, "Save images to a subdirectory"),
        "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory"),
        "use_save_to_dirs_for_ui": OptionInfo(False, 'When using "Save" button, save images to a subdirectory'),
        "directories_filename_pattern": OptionInfo("[date]", "Directory name pattern", api_path=True),
        "directories_max_prompt_words": OptionInfo(8, "Max prompt words for [prompt_words] pattern",
                                                   component_args=_slider(1, 20, 1)),
    }))
    table.update(options_section(("sd", "Stable Diffusion"), {
        "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", infotext="Model hash"),
        "sd_checkpoint_cache": OptionInfo(0, "Checkpoints to cache in RAM", component_args=_slider(0, 10, 1)),
        "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", component_args=_slider(1, 12, 1), infotext="Clip skip"),
        "emphasis": OptionInfo("Original", "Emphasis mode", choices=["None", "Ignore", "Original", "No norm"],
                               infotext="Emphasis"),
        "enable_emphasis": OptionInfo(True, "Enable emphasis: (text) and [text] change the attention to text"),
        "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit",
                                              component_args=_slider(0, 74, 1)),
        "randn_source": OptionInfo("GPU", "Random number generator source", choices=["GPU", "CPU", "NV"],
                                   infotext="RNG"),
        "hires_fix_refiner_pass": OptionInfo("second pass", "Hires fix: which pass to enable refiner for",
                                             choices=["first pass", "second pass", "both passes"],
                                             infotext="Hires refiner"),
    }))
    table.update(options_section(("sdxl", "Stable Diffusion XL"), {
        "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
        "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
        "sdxl_refiner_low_aesthetic_score": OptionInfo(2.5, "SDXL low aesthetic score"),
        "sdxl_refiner_high_aesthetic_score": OptionInfo(6.0, "SDXL high aesthetic score"),
        "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL",
                                       infotext="Clip skip SDXL"),  # A1111: CLIP skip applies to SDXL's CLIP-L
    }))
    table.update(options_section(("vae", "VAE"), {
        "sd_vae_checkpoint_cache": OptionInfo(0, "VAE Checkpoints to cache in RAM", component_args=_slider(0, 10, 1)),
        "sd_vae": OptionInfo("Automatic", "SD VAE", infotext="VAE"),
        "sd_vae_overrides_per_model_preferences": OptionInfo(True, "Selected VAE overrides per-model preferences"),
        "sd_vae_as_default": OptionInfo(
            True, "Ignore selected VAE for checkpoints that have their own .vae.pt next to them"),
        "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats when it produces NaNs"),
    }))
    table.update(options_section(("optimizations", "Optimizations"), {
        "compile_models": OptionInfo(False, "Compile the UNet and VAE decoder with torch.compile and CUDA graphs "
                                            "(CUDA only; the first image of each new size compiles; applies when "
                                            "a checkpoint is loaded, like --compile)"),
        "persistent_cond_cache": OptionInfo(True, "Persistent cond cache: reuse prompt encodings across jobs"),
        "vae_tiling": OptionInfo("Auto", "Tiled VAE encode/decode (Auto: only after running out of GPU memory)",
                                 choices=["Auto", "Always", "Never"]),
    }))
    table.update(options_section(("img2img", "img2img"), {
        "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength",
                                             component_args=_slider(0.0, 1.0, 0.01),
                                             infotext="Conditional mask weight"),
        "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img",
                                               component_args=_slider(0.0, 1.5, 0.001), infotext="Noise multiplier"),
        "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix",
                                          component_args=_slider(0.0, 1.0, 0.01), infotext="Extra noise"),
        "img2img_color_correction": OptionInfo(
            False, "Apply color correction to img2img results to match original colors"),
        "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies"),
        "img2img_background_color": OptionInfo(
            "#ffffff", "With img2img, fill transparent parts of the input image with this color"),
    }))
    table.update(options_section(("compatibility", "Compatibility"), {
        "use_old_emphasis_implementation": OptionInfo(False, "Use old emphasis implementation"),
    }))
    table.update(options_section(("api", "API"), {
        "api_max_image_side": OptionInfo(4096, "API: largest width or height a request may ask for",
                                         component_args=_slider(64, 16384, 64)),
        "api_keep_finished_jobs": OptionInfo(100, "API: how many finished async jobs keep their results",
                                             component_args=_slider(1, 10000, 1)),
        "job_timeout": OptionInfo(0, "Longest a generation may run before it is stopped (seconds; 0 = no limit)",
                                  component_args=_slider(0, 86400, 1)),
    }))
    table.update(options_section(("sampler-params", "Sampler parameters"), {
        "eta_ddim": OptionInfo(0.0, "Eta for DDIM", component_args=_slider(0.0, 1.0, 0.01), infotext="Eta DDIM"),
        "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", component_args=_slider(0.0, 1.0, 0.01),
                                    infotext="Eta"),
        "s_churn": OptionInfo(0.0, "sigma churn", component_args=_slider(0.0, 100.0, 0.01), infotext="Sigma churn"),
        "s_tmin": OptionInfo(0.0, "sigma tmin", component_args=_slider(0.0, 10.0, 0.01), infotext="Sigma tmin"),
        "s_tmax": OptionInfo(0.0, "sigma tmax", component_args=_slider(0.0, 999.0, 0.01), infotext="Sigma tmax"),
        "s_noise": OptionInfo(1.0, "sigma noise", component_args=_slider(0.0, 1.1, 0.001), infotext="Sigma noise"),
        "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", component_args=_slider(0.0, 15.0, 0.01),
                                   infotext="NGMS"),
        "s_min_uncond_all": OptionInfo(False, "Negative Guidance minimum sigma all steps", infotext="NGMS all steps"),
        "skip_early_cond": OptionInfo(0.0, "Ignore negative prompt during early sampling",
                                      component_args=_slider(0.0, 1.0, 0.01), infotext="Skip Early CFG"),
        "refiner_switch_by_sample_steps": OptionInfo(
            False, "Switch to refiner by sampling steps instead of model timesteps. Old behavior for refiner.",
            infotext="Refiner switch by sampling steps"),
        "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", infotext="ENSD"),
    }))
    table.update(options_section(("infotext", "Infotext"), {
        "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
        "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
        "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext"),
        "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext"),
        "add_user_name_to_info": OptionInfo(False, "Add user name to infotext when authenticated"),
        "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),
        "textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add Textual Inversion hashes to infotext"),
        "lora_add_hashes_to_infotext": OptionInfo(True, "Add Lora hashes to infotext"),
    }))
    table.update(options_section(("ui", "User interface"), {
        "quicksettings_list": OptionInfo(["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"],
                                         "Quicksettings list (settings shown at the top of the page)"),
        "return_grid": OptionInfo(True, "Show grid in gallery"),
        "do_not_show_images": OptionInfo(False, "Do not show any images in gallery"),
    }))
    table.update(options_section(("live-previews", "Live previews"), {
        "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
        "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (in sampling steps; -1 disables)",
                                                  component_args=_slider(-1, 32, 1)),
        "live_preview_content": OptionInfo("Prompt", "Live preview subject",
                                           choices=["Combined", "Prompt", "Negative prompt"]),
        "show_progress_type": OptionInfo("Auto", "Live preview method",
                                         choices=["Auto", "Full", "TAESD", "Approx cheap"]),
    }))
    table.update(options_section(("extensions", "Extensions"), {
        "auto_install_extension_packages": OptionInfo(
            True, "Install a package an extension imports without installing it (timm, scikit-learn …) on first use, "
                  "pinned so it can never replace this program's own packages"),
    }))
    table.update(options_section(("hidden", "Hidden options"), {
        "disabled_extensions": OptionInfo([], "Disable these extensions"),
        "disable_all_extensions": OptionInfo("none", "Disable all extensions (keeps the list of disabled extensions)",
                                             choices=["none", "extra", "all"]),
    }))
    # every other A1111 setting key, hidden, with A1111's default: extensions read them (`shared.opts.ESRGAN_tile`)
    table.update(a1111_settings.a1111_options(table, OptionInfo))
    return table


class Options:
    """The settings object (A1111's `shared.opts`): attribute access, typed `set`, atomic `save`."""

    def __init__(self, data_labels: Mapping[str, OptionInfo] | None = None, frozen: bool = False) -> None:
        # object.__setattr__ because our __setattr__ routes option names to set().
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", dict(default_option_table() if data_labels is None else data_labels))
        object.__setattr__(self, "frozen", frozen)
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "_callbacks", {})
        object.__setattr__(self, "_job_view", threading.local())  # this thread's running job's snapshot, if any

    data: dict[str, Any]
    data_labels: dict[str, OptionInfo]
    frozen: bool

    # ---- reading ----
    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for setting names.
        if name.startswith("__"):
            raise AttributeError(name)
        view = getattr(self.__dict__.get("_job_view"), "snapshot", None)
        if view is not None and name in view.data:  # read from the job's own thread: its settings
            return copy.deepcopy(view.data[name])
        data = self.__dict__.get("data", {})
        labels = self.__dict__.get("data_labels", {})
        if name in data:
            return data[name]
        if name in labels:
            return copy.deepcopy(labels[name].default)  # copy: callers must not mutate the default in place
        raise AttributeError(f"no setting named {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.data_labels:
            self.set(name, value)
        else:
            object.__setattr__(self, name, value)

    def get_default(self, key: str) -> Any:
        info = self.data_labels.get(key)
        return None if info is None else copy.deepcopy(info.default)

    def all_values(self) -> dict[str, Any]:
        """Every registered setting's current value plus the unknown keys kept from the file."""
        with self._lock:
            values = {key: self.data.get(key, info.default) for key, info in self.data_labels.items()}
            values.update({key: value for key, value in self.data.items() if key not in self.data_labels})
            return copy.deepcopy(values)

    def dumpjson(self) -> str:
        return json.dumps(self.all_values())

    # ---- validation ----
    def cast_value(self, key: str, value: Any) -> Any:
        """Convert `value` to the type of the setting's default; ValueError naming the key when impossible."""
        info = self.data_labels.get(key)
        if info is None:
            raise KeyError(f"unknown setting {key!r}")
        converted = _coerce(key, info.default, value)
        choices = info.static_choices()
        if choices is not None:
            items = converted if isinstance(converted, list) else [converted]
            invalid = [item for item in items if item not in choices]
            if invalid:
                raise ValueError(f"setting {key!r}: {invalid[0]!r} is not one of {choices!r}")
        return converted

    # ---- writing ----
    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Set a value; returns True when it changed. Raises KeyError (unknown key) or ValueError (bad value).

        Returns False without changing anything when settings are frozen, when an API call targets a restricted
        setting, or when a change callback fails (the old value is then restored, as A1111 does).
        """
        info = self.data_labels.get(key)
        if info is None:
            raise KeyError(f"unknown setting {key!r}")
        converted = self.cast_value(key, value)
        with self._lock:
            if self.frozen:
                logger.warning("settings are frozen (--freeze-settings); not changing %s", key)
                return False
            if is_api and info.restrict_api:
                return False
            had_value = key in self.data
            old_value = self.data.get(key, info.default)
            if old_value == converted and type(old_value) is type(converted):
                return False
            self.data[key] = converted
        if run_callbacks and not self._run_callbacks(key):
            with self._lock:
                if had_value:
                    self.data[key] = old_value
                else:
                    self.data.pop(key, None)
            return False
        return True

    def _run_callbacks(self, key: str) -> bool:
        info = self.data_labels[key]
        callbacks = ([info.onchange] if info.onchange else []) + list(self._callbacks.get(key, []))
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("callback for setting %s failed; keeping the previous value", key)
                return False
        return True

    def onchange(self, key: str, func: Callable[[], Any], call: bool = True) -> None:
        """Call `func()` whenever `key` changes through `set`; with call=True also once now (A1111 behaviour)."""
        if key not in self.data_labels:
            raise KeyError(f"unknown setting {key!r}")
        with self._lock:
            self._callbacks.setdefault(key, []).append(func)
        if call:
            func()

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Register a setting (extensions). A value already loaded from config.json is checked against it."""
        with self._lock:
            self.data_labels[key] = info
            if key in self.data:
                try:
                    self.data[key] = self.cast_value(key, self.data[key])
                except ValueError as error:
                    logger.warning("config value ignored, using the default: %s", error)
                    del self.data[key]

    # ---- a job's settings ----
    def snapshot(self, overrides: Mapping[str, Any] | None = None) -> SettingsSnapshot:
        """The current values plus a job's `override_settings`, frozen: what everything in that job reads. The
        global values never change for an override. ValueError/KeyError name a bad override."""
        values = self.all_values()
        values.update({key: self.cast_value(key, value) for key, value in (overrides or {}).items()})
        return SettingsSnapshot(values, self.data_labels)

    @contextlib.contextmanager
    def job_view(self, snapshot: SettingsSnapshot):
        """While a job runs: reads of these options *from the job's thread* give its snapshot (A1111 extensions read
        `shared.opts` in their hooks and expect the job's overrides); every other thread keeps seeing the global
        values, which nothing here changes."""
        local = self._job_view
        previous = getattr(local, "snapshot", None)
        local.snapshot = snapshot
        try:
            yield snapshot
        finally:
            local.snapshot = previous

    # ---- files ----
    def load(self, path: str) -> None:
        """Read config.json. Missing file: defaults. Corrupt file: renamed to .corrupt-<time>, defaults, warning."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            with self._lock:
                self.data.clear()
            return
        problem = None
        try:
            loaded = json.loads(text)
        except ValueError as error:
            problem = f"invalid JSON: {error}"
        else:
            if not isinstance(loaded, dict):
                problem = f"top level is {type(loaded).__name__}, expected an object"
        if problem is not None:
            backup = backup_corrupt_file(path)
            logger.warning("settings file %s is corrupt (%s); moved it to %s and using defaults", path, problem, backup)
            loaded = {}

        _migrate(loaded)
        clean: dict[str, Any] = {}
        for key, value in loaded.items():
            if key in self.data_labels:
                try:
                    value = self.cast_value(key, value)
                except ValueError as error:
                    logger.warning("config value ignored, using the default: %s", error)
                    continue
            clean[key] = value
        with self._lock:
            self.data.clear()
            self.data.update(clean)

    def save(self, path: str) -> None:
        """Write the set/loaded values atomically (temp file in the same folder, then os.replace)."""
        with self._lock:
            if self.frozen:
                return
            to_save = {
                key: value
                for key, value in self.data.items()
                if key not in self.data_labels or not self.data_labels[key].do_not_save
            }
            write_json_atomic(path, to_save)


class SettingsSnapshot:
    """One job's settings, frozen when it starts: the global values plus its overrides. Reads like `Options`
    (`snapshot.steps`, `data`, `data_labels`, `get_default`, `cast_value`); nothing can set a value."""

    frozen = True

    def __init__(self, values: Mapping[str, Any], data_labels: Mapping[str, OptionInfo]) -> None:
        object.__setattr__(self, "data", dict(values))
        object.__setattr__(self, "data_labels", data_labels)

    data: dict[str, Any]
    data_labels: Mapping[str, OptionInfo]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(f"no setting named {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a job's settings are read-only (tried to set {name!r}); use override_settings")

    def get_default(self, key: str) -> Any:
        info = self.data_labels.get(key)
        return None if info is None else copy.deepcopy(info.default)

    def all_values(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def cast_value(self, key: str, value: Any) -> Any:
        info = self.data_labels.get(key)
        if info is None:
            raise KeyError(f"unknown setting {key!r}")
        return _coerce(key, info.default, value)

    def snapshot(self, overrides: Mapping[str, Any] | None = None) -> SettingsSnapshot:
        """A nested job (a script's process_images inside a job): these values plus its own overrides."""
        values = dict(self.data)
        values.update({key: self.cast_value(key, value) for key, value in (overrides or {}).items()})
        return SettingsSnapshot(values, self.data_labels)


def write_json_atomic(path: str, content: Any) -> None:
    """Write JSON so that readers see either the old or the new file, never a half-written one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # A unique name opened with "x" (not mkstemp) so the file gets normal umask permissions instead of 0600.
    temp_path = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp_path, "x", encoding="utf-8") as handle:
            json.dump(content, handle, indent=4, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise


def backup_corrupt_file(path: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = f"{path}.corrupt-{stamp}"
    counter = 1
    while os.path.exists(backup):
        backup = f"{path}.corrupt-{stamp}-{counter}"
        counter += 1
    os.replace(path, backup)
    return backup


def _migrate(loaded: dict[str, Any]) -> None:
    """Old A1111 configs stored quicksettings as one comma-separated string."""
    old_quicksettings = loaded.get("quicksettings")
    if isinstance(old_quicksettings, str) and "quicksettings_list" not in loaded:
        loaded["quicksettings_list"] = [item.strip() for item in old_quicksettings.split(",") if item.strip()]


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Convert value to the type of `default`; the error message names the key and the expected type."""

    def fail(expected: str) -> ValueError:
        return ValueError(f"setting {key!r} expects {expected}, got {type(value).__name__} {value!r}")

    if default is None:
        return value  # untyped (e.g. sd_model_checkpoint): anything JSON can store
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS | _FALSE_STRINGS:
            return value.strip().lower() in _TRUE_STRINGS
        raise fail("a boolean")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise fail("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    number = float(value.strip())
                except ValueError:
                    raise fail("an integer") from None
                if number.is_integer():
                    return int(number)
        raise fail("an integer")
    if isinstance(default, float):
        if isinstance(value, bool):
            raise fail("a number")
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise fail("a number") from None
        else:
            raise fail("a number")
        if not math.isfinite(number):
            raise fail("a finite number")
        return number
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail("a string")
    if isinstance(default, list):
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        raise fail("a list")
    if isinstance(default, dict):
        if isinstance(value, dict):
            return dict(value)
        raise fail("an object")
    return value
