"""A1111's `network` module (its built-in Lora extension): what a LoRA file on disk is, by A1111's names.

Extensions read `NetworkOnDisk` (name, alias, metadata, hashes) to list and describe LoRAs; that works here. A1111's
`Network` objects also hold per-layer modules that extensions such as LoRA Block Weight rescale in place before
A1111 applies them; this program merges a LoRA into the diffusers layers itself (modules/networks/lora.py), so such
an in-place change could only be silently ignored. Reaching those internals raises `IncompatibleExtensionError`
instead, and the extension is shown as incompatible.
"""

from __future__ import annotations

import enum
import os
from typing import Any

from modules import hashes, shared
from modules.incompatible import IncompatibleExtensionError

LORA_INTERNALS = ("A1111's per-layer LoRA modules (its built-in Lora extension); here LoRA weights are merged "
                  "into the diffusers layers by the core, so changing those modules would change nothing")


class SdVersion(enum.Enum):
    Unknown = 1
    SD1 = 2
    SD2 = 3
    SDXL = 4


class NetworkOnDisk:
    """A LoRA/LyCORIS file as A1111 lists it (`networks.available_networks[name]`)."""

    def __init__(self, name: str, filename: str) -> None:
        self.name = name
        self.filename = filename
        entry = shared.loras.find(name) if shared.loras is not None else None
        self.metadata: dict[str, Any] = dict(entry.metadata) if entry is not None else {}
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.alias = self.metadata.get("ss_output_name", name)
        self.hash: str | None = None
        self.shorthash: str | None = None
        self.sd_version = self.detect_version()

    def detect_version(self) -> SdVersion:
        version = str(self.metadata.get("ss_base_model_version", ""))
        if version.startswith("sdxl_"):
            return SdVersion.SDXL
        if str(self.metadata.get("ss_v2", "")) == "True":
            return SdVersion.SD2
        return SdVersion.SD1 if self.metadata else SdVersion.Unknown

    def set_hash(self, value: str | None) -> None:
        self.hash = value
        self.shorthash = (value or "")[:12] or None

    def read_hash(self) -> None:
        if not self.hash:
            self.set_hash(hashes.file_sha256(self.filename, shared.cache_path, title=f"lora/{self.name}"))

    def get_alias(self) -> str:
        """The name prompts use: A1111's setting "lora_preferred_name" may ask for the file name."""
        return self.name if shared.opts.data.get("lora_preferred_name") == "Filename" else self.alias


class Network:
    """A1111's loaded network. Its name and multipliers read as in A1111; its per-layer `modules` do not exist."""

    def __init__(self, name: str, network_on_disk: NetworkOnDisk | None) -> None:
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.mtime = None
        self.mentioned_name = None

    @property
    def modules(self) -> dict[str, Any]:
        raise IncompatibleExtensionError(f"Network.modules: {LORA_INTERNALS}")


class ModuleType:
    def create_module(self, net: Network, weights: Any) -> Any:
        raise IncompatibleExtensionError(f"network.ModuleType.create_module: {LORA_INTERNALS}")


class NetworkModule:
    def __init__(self, net: Network, weights: Any) -> None:
        raise IncompatibleExtensionError(f"network.NetworkModule: {LORA_INTERNALS}")
