"""A1111's `networks` module (its built-in Lora extension), over this program's LoRA registry.

The lists extensions read (`available_networks`, `available_network_aliases`, `list_available_networks()`) are the
LoRA files this program finds. What A1111 uses to apply networks (`load_networks`, `loaded_networks`, `originals`)
belongs to its own way of patching layers; using it raises `IncompatibleExtensionError` (see `network.py`), so an
extension that rescales loaded networks is reported incompatible rather than silently doing nothing.
"""

from __future__ import annotations

from typing import Any

import network

from modules import shared
from modules.incompatible import IncompatibleExtensionError

available_networks: dict[str, network.NetworkOnDisk] = {}
available_network_aliases: dict[str, network.NetworkOnDisk] = {}
available_network_hash_lookup: dict[str, network.NetworkOnDisk] = {}
forbidden_network_aliases: dict[str, int] = {}
networks_in_memory: dict[str, Any] = {}


class _Internals(list):
    """A1111's list of the networks applied to the model now: its entries are A1111's layer patches."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise IncompatibleExtensionError(f"{self._name}: {network.LORA_INTERNALS}")

    __iter__ = __len__ = __getitem__ = __bool__ = append = clear = _refuse


class _Originals:
    def __getattr__(self, name: str) -> Any:
        raise IncompatibleExtensionError(f"networks.originals.{name}: {network.LORA_INTERNALS}")


loaded_networks = _Internals("networks.loaded_networks")
originals = _Originals()


def list_available_networks() -> None:
    """Rescan the LoRA folder (A1111's refresh) and rebuild the lists, in place so imported names stay valid."""
    available_networks.clear()
    available_network_aliases.clear()
    forbidden_network_aliases.clear()
    available_network_hash_lookup.clear()
    forbidden_network_aliases.update({"none": 1, "Addams": 1})
    if shared.loras is None:
        return
    for entry in shared.loras.refresh():
        on_disk = network.NetworkOnDisk(entry.name, entry.path)
        available_networks[entry.name] = on_disk
        if on_disk.alias in available_network_aliases:
            forbidden_network_aliases[on_disk.alias.lower()] = 1
        available_network_aliases[entry.name] = on_disk
        available_network_aliases[on_disk.alias] = on_disk


def load_networks(names: list[str], te_multipliers: list[float] | None = None,
                  unet_multipliers: list[float] | None = None, dyn_dims: list[int | None] | None = None) -> None:
    raise IncompatibleExtensionError(f"networks.load_networks: {network.LORA_INTERNALS}")


def load_network(name: str, network_on_disk: network.NetworkOnDisk) -> network.Network:
    raise IncompatibleExtensionError(f"networks.load_network: {network.LORA_INTERNALS}")


def infotext_pasted(infotext: str, params: dict[str, Any]) -> None:
    """A1111 rewrites `Lora hashes` on paste; this program's paste handles LoRA tags itself."""
