"""A1111's `network_lora` (LoRA layer modules of its built-in Lora extension): not used here, see `network.py`."""

from __future__ import annotations

import network


class ModuleTypeLora(network.ModuleType):
    pass


class NetworkModuleLora(network.NetworkModule):
    pass
