"""Loads A1111's Lora-extension module names (`networks`, `lora`, `network`, …) so other extensions find them, as
in A1111, where this extension's folder is on sys.path while its script imports them; keeps the lists current."""

import extra_networks_lora  # noqa: F401
import lora  # noqa: F401
import network_lora  # noqa: F401
import networks

from modules import script_callbacks

networks.list_available_networks()
script_callbacks.on_model_loaded(lambda sd_model: networks.list_available_networks())
