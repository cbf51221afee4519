"""A1111's old `lora` module name (kept by its built-in Lora extension for extensions written before `networks`)."""

from __future__ import annotations

import networks

available_loras = networks.available_networks
available_lora_aliases = networks.available_network_aliases
available_lora_hash_lookup = networks.available_network_hash_lookup
forbidden_lora_aliases = networks.forbidden_network_aliases
loaded_loras = networks._Internals("lora.loaded_loras")
list_available_loras = networks.list_available_networks
load_loras = networks.load_networks
