"""A1111's `modules.sd_models_config`: which ldm YAML config builds a checkpoint. This program detects a
checkpoint's family from its weights and builds diffusers models (modules/models/detection.py); there is no ldm config
to choose, so asking for one raises `IncompatibleExtensionError` rather than returning a file nothing reads."""

from __future__ import annotations

import os
from typing import Any

from modules.incompatible import IncompatibleExtensionError

sd_configs_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
config_default = os.path.join(sd_configs_path, "v1-inference.yaml")


def find_checkpoint_config(state_dict: Any, info: Any) -> str:
    raise IncompatibleExtensionError("sd_models_config.find_checkpoint_config: A1111 builds its ldm model from a YAML "
                                     "config; this program builds diffusers models from the checkpoint's weights")


def find_checkpoint_config_near_filename(info: Any) -> str | None:
    """A `<checkpoint>.yaml` beside the checkpoint file, if there is one (A1111 would use it to build the model)."""
    filename = getattr(info, "filename", None)
    if not filename:
        return None
    config = os.path.splitext(filename)[0] + ".yaml"
    return config if os.path.exists(config) else None
