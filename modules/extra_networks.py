"""A1111's `modules.extra_networks` for extensions: prompt tags `<name:args>` and the registry of extra networks.

LoRA/LyCORIS (`<lora:…>`, `<lyco:…>`) and hypernetworks (`<hypernet:…>`) are the core's (modules/networks/) and are
not in this registry. An extension registers its own kind with `register_extra_network(MyNetwork())` (an
`ExtraNetwork` named after its tag); in every batch of a real generation, the core parses the first prompt's tags
and fires `extra_networks_activate`: every registered network's `activate(p, params_list)` is called with the
params of its tags (an empty list when the prompt has none, as in A1111), and the tags are gone from the prompts.
When the job is done, `deactivate(p)` is called for each.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from modules import hooks
from modules.prompts import parser as core_parser
from modules.prompts.parser import ExtraNetworkParams, parse_prompt, parse_prompts  # noqa: F401 (A1111's names)

log = logging.getLogger("webui")

re_extra_net = core_parser._RE_EXTRA_NET
CORE_NETWORKS = ("lora", "lyco", "hypernet")  # tags the core applies itself

extra_network_registry: dict[str, ExtraNetwork] = {}
extra_network_aliases: dict[str, ExtraNetwork] = {}


class ExtraNetwork:
    """A kind of extra network, addressed in prompts as `<name:args>`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        """Apply the networks the batch's prompt names (`params_list` may be empty: then apply none)."""
        raise NotImplementedError

    def deactivate(self, p: Any) -> None:
        """Undo what activate did, once the job is done."""
        raise NotImplementedError


def initialize() -> None:
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network: ExtraNetwork) -> None:
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network: ExtraNetwork, alias: str) -> None:
    extra_network_aliases[alias] = extra_network


def register_default_extra_networks() -> None:
    """Nothing to register: the built-in kinds (LoRA, hypernetworks) are applied by the core."""


def lookup_extra_networks(extra_network_data: dict[str, list[ExtraNetworkParams]]
                          ) -> dict[ExtraNetwork, list[ExtraNetworkParams]]:
    """The registered network (by name, else alias) of each tag name, with its params; unknown names are logged."""
    res: dict[ExtraNetwork, list[ExtraNetworkParams]] = {}
    for name, params in (extra_network_data or {}).items():
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            if name not in CORE_NETWORKS:
                log.info("Skipping unknown extra network: %s", name)
            continue
        res.setdefault(network, []).extend(params)
    return res


def _each(networks: list[ExtraNetwork], action: str, call) -> None:
    for network in networks:
        try:
            call(network)
        except Exception:
            log.exception("Error %s extra network %s", action, network.name)


def activate(p: Any, extra_network_data: dict[str, list[ExtraNetworkParams]]) -> None:
    """Call every registered network's activate: with the params of its tags, or [] when it has none."""
    found = lookup_extra_networks(extra_network_data)
    _each(list(found), "activating", lambda network: network.activate(p, found[network]))
    rest = [network for network in extra_network_registry.values() if network not in found]
    _each(rest, "activating", lambda network: network.activate(p, []))


def deactivate(p: Any, extra_network_data: dict[str, list[ExtraNetworkParams]]) -> None:
    found = lookup_extra_networks(extra_network_data)
    rest = [network for network in extra_network_registry.values() if network not in found]
    _each([*found, *rest], "deactivating", lambda network: network.deactivate(p))


def _on_activate(params: hooks.ExtraNetworksParams) -> None:
    """The core parsed a batch's tags: record them on `p` (A1111's `p.extra_network_data`), hand them to the
    registered networks (the core keeps only its own), then the scripts' `after_extra_networks_activate`."""
    job = params.job
    data = defaultdict(list, {name: list(items) for name, items in params.networks.items()})
    job.extra_network_data = data
    job.prompts = list(params.prompts)  # as in A1111, activate sees the batch's prompts without the tags
    if extra_network_registry or extra_network_aliases:
        for name in list(params.networks):  # tags of registered kinds are not the core's to warn about
            if name not in CORE_NETWORKS and (name in extra_network_registry or name in extra_network_aliases):
                del params.networks[name]
        activate(job, data)
    after = getattr(job.scripts, "after_extra_networks_activate", None) if job.scripts is not None else None
    if after is not None:
        after(job, batch_number=job.iteration, prompts=job.prompts, seeds=job.seeds, subseeds=job.subseeds,
              extra_network_data=data)


def _on_deactivate(params: hooks.ExtraNetworksParams) -> None:
    if extra_network_registry or extra_network_aliases:
        deactivate(params.job, getattr(params.job, "extra_network_data", None) or {})


hooks.connect("extra_networks_activate", _on_activate)
hooks.connect("extra_networks_deactivate", _on_deactivate)
