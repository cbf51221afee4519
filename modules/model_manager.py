"""Which checkpoint is loaded: choosing, switching (freeing the old one first) and recovering from bad files."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import torch

from modules import memory
from modules.devices import DevicePolicy, torch_gc
from modules.models import acceleration, demo
from modules.models.loader import SDModel, VaeInfo, find_vae_files, load_model, resolve_vae
from modules.models.registry import CheckpointInfo, CheckpointRegistry
from modules.models.safe_load import CheckpointLoadError

log = logging.getLogger("webui")


class ModelManager:
    def __init__(self, checkpoint_dirs: list[str], vae_dirs: list[str], policy: DevicePolicy, opts,
                 cache_path: str | None, hashing: bool = True, extra_checkpoint: str | None = None,
                 medvram: bool = False, lowvram: bool = False, medvram_sdxl: bool = False,
                 compile_models: bool = False) -> None:
        self.registry = CheckpointRegistry(checkpoint_dirs, cache_path, hashing=hashing,
                                           extra_files=[extra_checkpoint] if extra_checkpoint else [])
        self.vae_dirs = vae_dirs
        self.policy = policy
        self.opts = opts
        self.cache_path = cache_path
        self.extra_checkpoint = extra_checkpoint
        self.current: SDModel | None = None
        # The refiner of the jobs that ask for one, loaded beside the current model (`refiner`)
        self.second: SDModel | None = None
        # Models switched away from, kept in RAM (setting sd_checkpoint_cache), most recent last.
        self.cached: OrderedDict[tuple[str, str | None], SDModel] = OrderedDict()
        self.memory_flags = {"medvram": medvram, "lowvram": lowvram, "medvram_sdxl": medvram_sdxl}
        self.compile_flag = compile_models
        self.lock = threading.RLock()
        self.listeners: list = []  # called with the new SDModel after each load (script_callbacks.model_loaded)
        # called with no arguments before the current model is let go: holders of a model drop it here, so that it
        # is freed before the next one is read
        self.before_switch: list = []

    # --- listing -------------------------------------------------------------------------------------------
    def refresh(self) -> list[CheckpointInfo]:
        """Rescan the checkpoint folders; with none at all, create the embedded demo model."""
        found = self.registry.refresh()
        if not found:
            log.info("No checkpoint found in %s: creating the built-in demo model", self.registry.folders[0])
            demo.ensure_demo_checkpoint(self.registry.folders[0])
            found = self.registry.refresh()
        return found

    def vae_files(self) -> list[VaeInfo]:
        return find_vae_files(self.vae_dirs)

    def vae_choices(self) -> list[str]:
        return ["Automatic", "None", *[v.name for v in self.vae_files()]]

    # --- loading -------------------------------------------------------------------------------------------
    def _default_checkpoint(self) -> CheckpointInfo:
        if not self.registry.checkpoints:
            self.refresh()
        for query in (self.extra_checkpoint and os.path.basename(self.extra_checkpoint),
                      self.opts.sd_model_checkpoint):
            info = self.registry.find(query) if query else None
            if info:
                return info
        non_demo = [c for c in self.registry.checkpoints if os.path.basename(c.filename) != demo.DEMO_FILENAME]
        return (non_demo or self.registry.checkpoints)[0]

    def get(self) -> SDModel:
        """The loaded model, loading the configured (or first) checkpoint on first use."""
        with self.lock:
            if self.current is None:
                self._load(self._default_checkpoint())
            return self.current

    def select(self, query: str) -> SDModel:
        """Switch to the checkpoint named by title, name or hash. A bad file leaves the previous model loaded."""
        with self.lock:
            info = self._find(query)
            if self.current is not None and self.current.checkpoint.filename == info.filename:
                return self.current
            self._load(info)
            return self.current

    def _find(self, query: str) -> CheckpointInfo:
        """The checkpoint a title, name or hash names (the folders read again once if it is not known yet)."""
        info = self.registry.find(query)
        if info is None:
            self.registry.refresh()
            info = self.registry.find(query)
        if info is None:
            raise CheckpointLoadError(f"Checkpoint {query!r} not found. Available: {', '.join(self.registry.titles())}")
        return info

    def use(self, checkpoint: str | None = None) -> SDModel:
        """Have loaded what the settings name: `checkpoint` (title, name or hash; else the current one) with the VAE
        that `sd_vae` resolves to for it, reading only what differs."""
        with self.lock:
            if checkpoint:
                info = self._find(checkpoint)
            else:
                info = self.current.checkpoint if self.current else self._default_checkpoint()
            wanted = _cache_key(info.filename, resolve_vae(self.opts.sd_vae, info.filename, self.vae_dirs))
            loaded = _cache_key(self.current.checkpoint.filename, self.current.vae_info) if self.current else None
            if loaded != wanted:  # (no local reference to the current model: _load frees it before reading)
                self._load(info, force=loaded is not None and loaded[0] == info.filename)
            return self.current

    def switch(self, checkpoint: str | None = None, vae: str | None = None) -> SDModel:
        """The one model switch every kind of job uses (a job's override_settings, an X/Y/Z cell, the settings):
        choose the VAE (`sd_vae`, without its change callback, which would load the old checkpoint with it first)
        and the checkpoint, then load only what differs."""
        with self.lock:
            if vae is not None:
                self.opts.set("sd_vae", vae, run_callbacks=False)
            return self.use(checkpoint)

    def reload_vae(self) -> SDModel:
        """Apply a changed `sd_vae` setting by reloading the current checkpoint with the chosen VAE."""
        with self.lock:
            info = self.current.checkpoint if self.current else self._default_checkpoint()
            self._load(info, force=True)
            return self.current

    def unload(self) -> None:
        with self.lock:
            for hook in self.before_switch:
                hook()
            self.current = None
            self.second = None
            self.cached.clear()
            torch_gc()

    # --- the refiner: a second model beside the current one -----------------------------------------------------
    def refiner(self, query: str) -> SDModel:
        """The model a job's `refiner_checkpoint` names (title, name or hash), loaded beside the current model and
        kept there for the next job that asks for it: A1111 reads it again for every batch (from disk, or from the
        RAM cache) and the base model after it; here neither moves. The current model itself when it is the same
        file."""
        with self.lock:
            info = self._find(query)
            if self.current is not None and self.current.checkpoint.filename == info.filename:
                return self.current
            vae = resolve_vae(self.opts.sd_vae, info.filename, self.vae_dirs)
            key = _cache_key(info.filename, vae)
            if self.second is not None and _cache_key(self.second.checkpoint.filename,
                                                      self.second.vae_info) == key:
                return self.second
            self.release_refiner()
            cached = self.cached.pop(key, None)
            self.second = self._activate(cached) or self._build(info, vae)
            log.info("Refiner %s loaded beside %s", info.title,
                     self.current.checkpoint.title if self.current else "no model")
            return self.second

    def release_refiner(self) -> None:
        """Let the refiner go (into the RAM cache where the setting allows): a job without one gives its memory
        back."""
        with self.lock:
            if self.second is None:
                return
            model, self.second = self.second, None
            self._stash(model)
            del model
            torch_gc()

    # --- placement and the RAM cache -------------------------------------------------------------------------
    def _place(self, model: SDModel) -> None:
        """Put a freshly built (CPU) model where its memory mode says, then apply the CUDA fast path."""
        mode = memory.mode_for(is_sdxl=model.is_sdxl, **self.memory_flags)
        memory.place(model, mode, self.policy.device)
        if mode == "normal":
            compile_models = self.compile_flag or bool(self.opts.compile_models)
            acceleration.apply_fast_path(model, compile_models=compile_models)
        elif self.compile_flag or self.opts.compile_models:
            log.warning("torch.compile is not used with --%s (offloaded weights move between devices)",
                        mode)

    def _cache_limit(self) -> int:
        return max(0, int(self.opts.sd_checkpoint_cache or 0))

    def _stash(self, model: SDModel) -> None:
        """Keep a model that is switched away from in RAM (off the GPU) when the cache setting allows."""
        limit = self._cache_limit()
        if limit <= 0:
            return
        from modules.networks import hypernetwork, lora

        # Back to its own weights and attention processors: unfusing QKV below would drop a hypernetwork's
        # processors behind its patcher's back, and the next job sets its networks again anyway.
        lora.patcher_for(model).restore()
        hypernetwork.patcher_for(model).restore()
        model.cond_cache.clear()  # encodings on the GPU
        if memory.mode_of(model) == "normal" and model.policy.is_cuda:
            acceleration.unfuse_qkv(model.unet)  # a move copies the fused views apart
            for module in model.components():
                torch.nn.Module.to(module, "cpu")
        elif memory.mode_of(model) == "medvram":
            memory.offload_all(model)  # the part used last is still on the GPU
        self.cached[_cache_key(model.checkpoint.filename, model.vae_info)] = model
        while len(self.cached) > limit:
            self.cached.popitem(last=False)

    def _activate(self, model: SDModel | None) -> SDModel | None:
        """Bring a model taken from the RAM cache back to its device."""
        if model is None:
            return None
        info = model.checkpoint
        if memory.mode_of(model) == "normal" and model.policy.is_cuda:
            for module in model.components():
                torch.nn.Module.to(module, model.policy.device)
            acceleration.apply_fast_path(model, compile_models=model.compiled)
        log.info("Switched to %s from the RAM cache", info.title)
        return model

    def _build(self, info: CheckpointInfo, vae: VaeInfo | None) -> SDModel:
        return load_model(info, self.policy, vae=vae, cache_path=self.cache_path, place=self._place)

    def _load(self, info: CheckpointInfo, force: bool = False) -> None:
        previous = self.current
        if previous and previous.checkpoint.filename == info.filename and not force:
            return
        vae = resolve_vae(self.opts.sd_vae, info.filename, self.vae_dirs)
        # Free (or stash) the old model before reading the new one: two full models rarely fit in VRAM.
        self.current = None
        # Take the target out of the cache first, so that stashing the previous model cannot evict it.
        cached = self.cached.pop(_cache_key(info.filename, vae), None)
        if self.second is not None and _cache_key(self.second.checkpoint.filename, self.second.vae_info) \
                == _cache_key(info.filename, vae):
            cached, self.second = self.second, None  # the refiner becomes the main model: no second copy
        previous_info = previous.checkpoint if previous is not None else None
        if previous is not None and not force:
            self._stash(previous)
        previous = None  # the last reference, unless stashed: freed by the collection below
        for hook in self.before_switch:
            hook()
        torch_gc()
        try:
            self.current = self._activate(cached) or self._build(info, vae)
        except CheckpointLoadError:
            if previous_info is not None:
                log.warning("Loading %s failed; going back to %s", info.name, previous_info.title)
                back_vae = resolve_vae(self.opts.sd_vae, previous_info.filename, self.vae_dirs)
                back = self.cached.pop(_cache_key(previous_info.filename, back_vae), None)
                self.current = self._activate(back) or self._build(previous_info, back_vae)
            raise
        self.opts.set("sd_model_checkpoint", info.title)
        for listener in self.listeners:
            listener(self.current)


def _cache_key(filename: str, vae: VaeInfo | None) -> tuple[str, str | None]:
    return filename, vae.filename if vae else None
