"""A1111's `extra_networks_lora.ExtraNetworkLora` (the `<lora:…>` handler of its built-in Lora extension).

Here `<lora:…>` tags are applied by the core (modules/networks); this class exists so extensions can name it, and its
activate/deactivate, which would drive A1111's layer patching, raise `IncompatibleExtensionError`.
"""

from __future__ import annotations

from typing import Any

import network

from modules import extra_networks
from modules.incompatible import IncompatibleExtensionError


class ExtraNetworkLora(extra_networks.ExtraNetwork):
    def __init__(self) -> None:
        super().__init__("lora")
        self.errors: dict[str, int] = {}

    def activate(self, p: Any, params_list: list[Any]) -> None:
        raise IncompatibleExtensionError(f"ExtraNetworkLora.activate: {network.LORA_INTERNALS}")

    def deactivate(self, p: Any) -> None:
        raise IncompatibleExtensionError(f"ExtraNetworkLora.deactivate: {network.LORA_INTERNALS}")
