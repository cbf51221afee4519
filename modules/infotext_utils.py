"""A1111's `modules.infotext_utils`, for extensions: infotext parsing and the paste-button registry by A1111's names.

Parsing is ours (`modules.infotext`, A1111 v1.10.1 semantics): `parse_generation_parameters`, `quote`, `unquote`,
`restore_old_hires_fix_params`, `re_param`, `re_imagesize` are the same objects. One difference: A1111 runs the
extensions' `on_infotext_pasted` callbacks at the end of every `parse_generation_parameters`; here they run when an
infotext is pasted into a tab (`modules.ui.paste.parse_pasted`), so parsing stays a pure function.

Settings from infotext: `create_override_settings_dict` and `get_override_settings` map infotext keys to settings
through each setting's `OptionInfo(infotext=...)` and `infotext_to_setting_name_mapping` (empty, as in A1111; an
extension may append (infotext key, setting name) pairs).

Paste buttons: our tabs fill their fields from `modules.ui.paste`, not from this registry. `add_paste_fields`,
`register_paste_params_button` and `bind_buttons` record what an extension registers (in `paste_fields` and
`registered_param_bindings`) and connect nothing; `create_buttons` makes the "Send to" buttons hidden, so an
extension's UI builds but shows no button that would do nothing. Nothing in the core uses this module.
"""

from __future__ import annotations

import logging
from typing import Any

from modules.infotext import RE_IMAGE_SIZE as re_imagesize
from modules.infotext import RE_PARAM as re_param
from modules.infotext import _restore_old_hires_fix_params as restore_old_hires_fix_params
from modules.infotext import parse_generation_parameters, quote, unquote

__all__ = ["PasteField", "ParamBinding", "add_paste_fields", "bind_buttons", "connect_paste_params_buttons",
           "create_buttons", "create_override_settings_dict", "get_override_settings",
           "infotext_to_setting_name_mapping", "parse_generation_parameters", "paste_fields", "quote",
           "re_imagesize", "re_param", "re_param_code", "register_paste_params_button", "registered_param_bindings",
           "restore_old_hires_fix_params", "unquote"]

log = logging.getLogger("webui")

re_param_code = re_param.pattern

# (infotext key, setting name) pairs besides the settings' own OptionInfo(infotext=...); empty in A1111 v1.10 too
infotext_to_setting_name_mapping: list[tuple[str, str]] = []


class PasteField(tuple):
    """(component, target): `target` is an infotext key, or a function of the parsed params giving the value.
    `api` names the API field the component corresponds to."""

    def __new__(cls, component: Any, target: Any, *, api: str | None = None) -> PasteField:
        return super().__new__(cls, (component, target))

    def __init__(self, component: Any, target: Any, *, api: str | None = None) -> None:
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


class ParamBinding:
    """A paste button and where its infotext comes from (A1111's class; recorded only, see the module docstring)."""

    def __init__(self, paste_button: Any, tabname: str, source_text_component: Any = None,
                 source_image_component: Any = None, source_tabname: str | None = None,
                 override_settings_component: Any = None, paste_field_names: list[str] | None = None) -> None:
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


# tab name -> {"init_img": component, "fields": [PasteField], "override_settings_component": component}
paste_fields: dict[str, dict[str, Any]] = {}
registered_param_bindings: list[ParamBinding] = []


def add_paste_fields(tabname: str, init_img: Any, fields: list[Any] | None,
                     override_settings_component: Any = None) -> None:
    """Record a tab's paste fields (A1111 then connects paste buttons to them; here nothing is connected)."""
    if fields:
        fields = [field if isinstance(field, PasteField) else PasteField(*field) for field in fields]
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def register_paste_params_button(binding: ParamBinding) -> None:
    """Record a paste button (A1111 wires it to the target tab's paste fields; here it is recorded only)."""
    registered_param_bindings.append(binding)


def connect_paste_params_buttons() -> None:
    """Nothing to connect here (see the module docstring)."""


def create_buttons(tabs_list: list[str]) -> dict[str, Any]:
    """A1111's "Send to <tab>" buttons, one per tab name; hidden here because they are not connected."""
    import gradio as gr

    names = {"txt2img": "Send to txt2img", "img2img": "Send to img2img", "inpaint": "Send to inpaint",
             "extras": "Send to extras"}
    return {tab: gr.Button(names.get(tab, f"Send to {tab}"), elem_id=f"{tab}_tab", visible=False)
            for tab in tabs_list}


def bind_buttons(buttons: dict[str, Any], send_image: Any, send_generate_info: Any) -> None:
    """Record bindings for `create_buttons`' buttons (not connected; see the module docstring)."""
    for tabname, button in buttons.items():
        source_text = send_generate_info if not isinstance(send_generate_info, str) else None
        source_tab = send_generate_info if isinstance(send_generate_info, str) else None
        register_paste_params_button(ParamBinding(paste_button=button, tabname=tabname,
                                                  source_text_component=source_text,
                                                  source_image_component=send_image, source_tabname=source_tab))


def _setting_mapping() -> list[tuple[str, str]]:
    from modules import shared

    own = [(info.infotext, key) for key, info in shared.opts.data_labels.items() if info.infotext]
    return own + list(infotext_to_setting_name_mapping)


def create_override_settings_dict(text_pairs: list[str]) -> dict[str, Any]:
    """Settings overrides from "Key: value" texts, e.g. ["Clip skip: 2", "ENSD: 31337"] ->
    {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}; a value the setting refuses is left out."""
    from modules import shared

    params = {}
    for pair in text_pairs or []:
        key, sep, value = str(pair).partition(":")
        if sep:
            params[key] = value.strip()
    result: dict[str, Any] = {}
    for param_name, setting_name in _setting_mapping():
        value = params.get(param_name)
        if value is None:
            continue
        try:
            result[setting_name] = shared.opts.cast_value(setting_name, value)
        except (KeyError, ValueError) as e:
            log.warning("Infotext %r: not a value for setting %s: %s", param_name, setting_name, e)
    return result


def get_override_settings(params: dict[str, Any], *, skip_fields: Any = None) -> list[tuple[str, str, Any]]:
    """(infotext key, setting name, value) for every setting a parsed infotext names with a value other than the
    current one (A1111: what the paste button proposes as "Override settings")."""
    from modules import shared

    skip = set(skip_fields or ())
    result = []
    for param_name, setting_name in _setting_mapping():
        value = params.get(param_name)
        if param_name in skip or value is None:
            continue
        if setting_name == "sd_model_checkpoint" and getattr(shared.opts, "disable_weights_auto_swap", False):
            continue
        try:
            value = shared.opts.cast_value(setting_name, value)
        except (KeyError, ValueError):
            continue
        if value != getattr(shared.opts, setting_name, None):
            result.append((param_name, setting_name, value))
    return result
