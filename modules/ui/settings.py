"""The Settings tab (A1111): one sub-tab per option section, a component per option, "Apply settings".

Every registered option outside the quick-settings bar and the "hidden" section gets a component with elem_id
`setting_<key>`. "Apply settings" (api_name `apply_settings`) takes all of them, in the order of `SETTINGS_KEYS`,
checks every value first (a bad one is refused with a message naming the setting and nothing is changed, so the
form keeps all the user's edits), then sets the changed ones with `opts.set` and writes config.json atomically.
One load event refreshes every component from `shared.opts` on each page load, so a reload shows what was saved.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from modules import shared
from modules.options import OptionInfo
from modules.ui.components import create

log = logging.getLogger("webui")

HIDDEN_SECTION = "hidden"
OTHER_SECTION = ("other", "Other")
FROZEN_MESSAGE = "Settings are frozen (--freeze-settings); nothing was changed."

# The option keys shown in the Settings tab, in the order of the apply_settings endpoint's inputs. Filled by
# create_tab(); settings_keys() computes the same list without building a UI.
SETTINGS_KEYS: list[str] = []


def quicksettings_keys() -> list[str]:
    """The keys of the top bar (A1111's `quicksettings_list`), checkpoint first, unknown keys dropped."""
    keys = ["sd_model_checkpoint"]
    for key in shared.opts.quicksettings_list or []:
        if key in shared.opts.data_labels and key not in keys:
            keys.append(key)
    return keys


def settings_keys() -> list[str]:
    """Options shown in the Settings tab: all registered ones except the quick settings and the hidden section."""
    quick = set(quicksettings_keys())
    return [key for key, info in shared.opts.data_labels.items()
            if key not in quick and info.section != HIDDEN_SECTION]


def _component_args(info: OptionInfo) -> dict[str, Any]:
    args = info.component_args() if callable(info.component_args) else info.component_args
    return dict(args or {})


def option_value(key: str) -> Any:
    """The current value in the form a component shows (lists of a text box joined with commas)."""
    return getattr(shared.opts, key)


def create_setting_component(key: str, info: OptionInfo | None = None, **kwargs: Any) -> gr.components.Component:
    """A component for one option chosen from its type and metadata (A1111's `create_setting_component`).

    bool → Checkbox; choices → Dropdown (multiselect for list values); int/float with min/max → Slider, else
    Number; list → multiselect Dropdown with custom values; anything else → Textbox. An extension's own component
    class (`OptionInfo(default, label, gr.Slider, {...})`) is used as given.
    """
    info = info or shared.opts.data_labels[key]
    args = _component_args(info)
    label = info.label or key
    common = {"label": label, "elem_id": f"setting_{key}", "value": option_value(key), **kwargs}
    default = info.default
    component = info.component
    if isinstance(component, type) and issubclass(component, gr.components.Component):
        return create(component, **{**args, **common})
    choices = info.current_choices()
    if isinstance(default, bool):
        return create(gr.Checkbox, **{**args, **common})
    if choices is not None:
        return create(gr.Dropdown, **{"choices": list(choices), "multiselect": isinstance(default, list), **args,
                                      **common})
    if isinstance(default, (int, float)):
        if "minimum" in args and "maximum" in args:
            return create(gr.Slider, **args, **common)
        precision = 0 if isinstance(default, int) else None
        return create(gr.Number, **{"precision": precision, **args, **common})
    if isinstance(default, list):
        return create(gr.Dropdown, **{"choices": list(shared.opts.data_labels) if key == "quicksettings_list" else [],
                                      "multiselect": True, "allow_custom_value": True, **args, **common})
    return create(gr.Textbox, **{"lines": 1, "max_lines": 1, **args, **common})


def _setting_name(key: str) -> str:
    info = shared.opts.data_labels.get(key)
    return f"{info.label} ({key})" if info and info.label else key


def check_value(key: str, value: Any) -> Any:
    """`opts.cast_value` plus the slider range from component_args; ValueError naming the key when refused."""
    converted = shared.opts.cast_value(key, value)
    args = _component_args(shared.opts.data_labels[key])
    if isinstance(converted, (int, float)) and not isinstance(converted, bool):
        low, high = args.get("minimum"), args.get("maximum")
        if (low is not None and converted < low) or (high is not None and converted > high):
            raise ValueError(f"setting {key!r}: {converted!r} is outside {low}..{high}")
    return converted


def apply_settings(*values: Any) -> str:
    """Set every changed value, save config.json once, return A1111's "N settings changed: a, b." as HTML."""
    keys = SETTINGS_KEYS or settings_keys()
    if len(values) != len(keys):
        raise gr.Error(f"expected {len(keys)} setting values, got {len(values)}")
    if shared.opts.frozen:
        return f"<p>{html.escape(FROZEN_MESSAGE)}</p>"
    # Check everything first: one bad value refuses the whole apply, nothing half-applied.
    problems = []
    for key, value in zip(keys, values):
        try:
            check_value(key, value)
        except (ValueError, KeyError) as error:
            problems.append(f"{_setting_name(key)}: {error}")
    if problems:
        raise gr.Error("Settings not applied. " + "; ".join(problems))
    changed, failed = [], []
    for key, value in zip(keys, values):
        before = shared.opts.all_values().get(key)
        try:
            if shared.opts.set(key, value):
                changed.append(key)
            elif shared.opts.cast_value(key, value) != before:
                failed.append(key)  # a change callback refused it; the old value was kept
        except (ValueError, KeyError) as error:
            failed.append(key)
            log.warning("setting %s refused: %s", key, error)
    if changed:
        shared.save_settings()
    message = f"{len(changed)} settings changed{': ' if changed else '.'}{', '.join(changed)}{'.' if changed else ''}"
    if failed:
        message += f" Failed to change: {', '.join(failed)}."
    return f"<p>{html.escape(message)}</p>"


def current_values() -> list[Any]:
    return [option_value(key) for key in SETTINGS_KEYS]


EXPOSED_WARNING = ("Warning: this server is reachable from the network and has no login. Anyone who can reach it "
                   "can generate images and change these settings. Start it with --gradio-auth user:pass.")


def exposed_without_login(args) -> bool:
    exposed = bool(args.listen or args.share or args.server_name)
    return exposed and not (args.gradio_auth or getattr(args, "gradio_auth_path", None))


def create_tab() -> None:
    """The Settings tab; must be called inside the app's gr.Tabs."""
    keys = settings_keys()
    SETTINGS_KEYS[:] = keys
    sections: dict[str, tuple[str, list[str]]] = {}
    for key in keys:
        info = shared.opts.data_labels[key]
        section_id, title = (info.section, info.section_title or info.section) if info.section else OTHER_SECTION
        sections.setdefault(section_id, (title, []))[1].append(key)

    components: list[gr.components.Component] = []
    with create(gr.Tab, "Settings", id="settings", elem_id="tab_settings"):
        if exposed_without_login(shared.cmd_opts):
            create(gr.HTML, f'<p class="warning" id="settings_exposed_warning">{EXPOSED_WARNING}</p>')
        with create(gr.Row):
            submit = create(gr.Button, "Apply settings", variant="primary", elem_id="settings_submit")
        result = create(gr.HTML, FROZEN_MESSAGE if shared.opts.frozen else "", elem_id="settings_result")
        with create(gr.Tabs, elem_id="settings_tabs"):
            for section_id, (title, section_keys) in sections.items():
                with create(gr.Tab, title, id=f"settings_{section_id}", elem_id=f"settings_{section_id}"):
                    for key in section_keys:
                        info = shared.opts.data_labels[key]
                        if info.comment_before:
                            create(gr.HTML, info.comment_before)
                        components.append(create_setting_component(key, info))
                        if info.comment_after:
                            create(gr.HTML, info.comment_after)
    submit.click(apply_settings, inputs=components, outputs=[result], api_name="apply_settings",
                 preprocess=False)  # raw values: our own checks name the setting instead of Gradio's index
    root = gr.context.Context.root_block
    if root is not None and components:  # one request per page load brings every value up to date
        root.load(current_values, inputs=[], outputs=components, api_visibility="private", queue=False)
