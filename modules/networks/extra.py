"""Activate the extra networks a prompt names (`<lora:...>`, `<lyco:...>`, `<hypernet:...>`) for one job.

Called by processing before the prompts are encoded (a LoRA's text-encoder part changes the encoding). Every job
applies exactly the networks its prompt names, so a job without tags runs on the untouched weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from modules.models.safe_load import CheckpointLoadError
from modules.networks import hypernetwork, lora
from modules.networks.registry import NetworkRegistry
from modules.prompts.parser import ExtraNetworkParams, canonical_network_name

log = logging.getLogger("webui")


@dataclass
class Activation:
    infotext: dict[str, str] = field(default_factory=dict)   # "Lora hashes" for the infotext
    warnings: list[str] = field(default_factory=list)        # shown to the user (A1111: "Failed to find networks")


def activate(model, networks: dict[str, list[ExtraNetworkParams]], loras: NetworkRegistry | None,
             hypernetworks: NetworkRegistry | None, hash_cache: str | None = None) -> Activation:
    result = Activation()
    lora_specs, lora_used, missing = [], [], []
    hyper_specs = []
    for tag, entries in networks.items():
        kind = canonical_network_name(tag)
        for params in entries:
            try:
                if kind == "lora":
                    name, te, unet = lora.parse_lora_args(params.items)
                    entry = loras.find(name) if loras else None
                    if entry is None:
                        missing.append(name)
                        continue
                    file = lora.load_lora_file(entry.path, hash_cache)
                    lora_specs.append((file, te, unet))
                    lora_used.append((name, file))
                elif kind == "hypernet":
                    name, multiplier = hypernetwork.parse_hypernet_args(params.items)
                    entry = hypernetworks.find(name) if hypernetworks else None
                    if entry is None:
                        missing.append(name)
                        continue
                    hyper_specs.append((hypernetwork.load_hypernetwork(entry.path, hash_cache), multiplier))
                else:
                    result.warnings.append(f"Unknown extra network type <{tag}:...>: ignored")
            except (ValueError, CheckpointLoadError) as e:
                result.warnings.append(f"<{tag}:{':'.join(params.items)}>: {e}")
    if missing:
        result.warnings.append(f"Networks not found: {', '.join(missing)}")
    lora.patcher_for(model).apply(lora_specs)
    hypernetwork.patcher_for(model).apply(hyper_specs)
    hashes = lora.lora_hashes_infotext(lora_used)
    if hashes:
        result.infotext["Lora hashes"] = hashes
    for warning in result.warnings:
        log.warning(warning)
    return result

