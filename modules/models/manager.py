"""Which checkpoint is loaded: choosing, switching (freeing the old one first) and recovering from bad files."""

from __future__ import annotations

import logging
import os
import threading

from modules.devices import DevicePolicy, torch_gc
from modules.models import demo
from modules.models.loader import SDModel, VaeInfo, find_vae_files, load_model, resolve_vae
from modules.models.registry import CheckpointInfo, CheckpointRegistry
from modules.models.safe_load import CheckpointLoadError

log = logging.getLogger("webui")


class ModelManager:
    def __init__(self, checkpoint_dirs: list[str], vae_dirs: list[str], policy: DevicePolicy, opts,
                 cache_path: str | None, hashing: bool = True, extra_checkpoint: str | None = None) -> None:
        self.registry = CheckpointRegistry(checkpoint_dirs, cache_path, hashing=hashing,
                                           extra_files=[extra_checkpoint] if extra_checkpoint else [])
        self.vae_dirs = vae_dirs
        self.policy = policy
        self.opts = opts
        self.cache_path = cache_path
        self.extra_checkpoint = extra_checkpoint
        self.current: SDModel | None = None
        self.lock = threading.RLock()
        self.listeners: list = []  # called with the new SDModel after each load (script_callbacks.model_loaded)

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
            info = self.registry.find(query)
            if info is None:
                self.registry.refresh()
                info = self.registry.find(query)
            if info is None:
                valid = ", ".join(self.registry.titles())
                raise CheckpointLoadError(f"Checkpoint {query!r} not found. Available: {valid}")
            if self.current is not None and self.current.checkpoint.filename == info.filename:
                return self.current
            self._load(info)
            return self.current

    def reload_vae(self) -> SDModel:
        """Apply a changed `sd_vae` setting by reloading the current checkpoint with the chosen VAE."""
        with self.lock:
            info = self.current.checkpoint if self.current else self._default_checkpoint()
            self._load(info, force=True)
            return self.current

    def unload(self) -> None:
        with self.lock:
            self.current = None
            torch_gc()

    def _load(self, info: CheckpointInfo, force: bool = False) -> None:
        previous = self.current.checkpoint if self.current else None
        if previous and previous.filename == info.filename and not force:
            return
        vae = resolve_vae(self.opts.sd_vae, info.filename, self.vae_dirs)
        # Free the old model before reading the new one: two full models rarely fit in VRAM/RAM.
        self.current = None
        torch_gc()
        try:
            self.current = load_model(info, self.policy, vae=vae, cache_path=self.cache_path)
        except CheckpointLoadError:
            if previous is not None:
                log.warning("Loading %s failed; going back to %s", info.name, previous.title)
                self.current = load_model(previous, self.policy,
                                          vae=resolve_vae(self.opts.sd_vae, previous.filename, self.vae_dirs),
                                          cache_path=self.cache_path)
            raise
        self.opts.set("sd_model_checkpoint", info.title)
        for listener in self.listeners:
            listener(self.current)
