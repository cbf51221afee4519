"""A1111's `modules.memmon.MemUsageMonitor` (`shared.mem_mon`): the device memory figures A1111 shows under a
result ("Sys VRAM", "Torch active/reserved"). A1111 samples them on a thread; here `read()` asks the device when
called, and `monitor()` resets the peaks for the next job."""

from __future__ import annotations

import threading
from typing import Any

import torch


class MemUsageMonitor(threading.Thread):
    def __init__(self, name: str, device: torch.device | str, opts: Any = None) -> None:
        super().__init__(name=name, daemon=True)
        self.device = torch.device(device)
        self.opts = opts
        self.disabled = self.device.type != "cuda" or not torch.cuda.is_available()
        self.data: dict[str, int] = {}

    def run(self) -> None:
        """Nothing to sample in the background (see the module docstring)."""

    def cuda_mem_get_info(self) -> tuple[int, int]:
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return torch.cuda.mem_get_info(index)

    def dump_debug(self) -> None:
        for key, value in self.read().items():
            print(key, -(value // -(1024 ** 2)))

    def monitor(self) -> None:
        """Start a new measurement (the peaks count from now)."""
        if not self.disabled:
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, int]:
        """free / total / min_free (bytes), active / active_peak / reserved / reserved_peak / system_peak."""
        if self.disabled:
            return {}
        free, total = self.cuda_mem_get_info()
        stats = torch.cuda.memory_stats(self.device)
        self.data = {"free": free, "total": total, "min_free": free,
                     "active": stats.get("active_bytes.all.current", 0),
                     "active_peak": stats.get("active_bytes.all.peak", 0),
                     "reserved": stats.get("reserved_bytes.all.current", 0),
                     "reserved_peak": stats.get("reserved_bytes.all.peak", 0),
                     "system_peak": total - free}
        return self.data

    def stop(self) -> dict[str, int]:
        return self.read()
