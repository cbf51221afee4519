"""Progress of the running job, and the interrupt/skip flags the sampling loop honours between steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class ProgressEvent:
    job_no: int          # index of the batch being sampled (0-based)
    job_count: int
    step: int            # steps done in the current pass
    total_steps: int
    latent: torch.Tensor | None


class State:
    """What A1111 calls `shared.state`: one running job's progress and control flags."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listeners: list[Callable[[ProgressEvent], None]] = []  # e.g. the UI's progress bar
        self.waiting: dict[str, int] = {}     # owner -> jobs queued behind the running one
        self.cancelled: set[str] = set()      # owners whose queued job was interrupted before it started
        self.shutting_down = False            # set once at server shutdown; outlives reset()
        self.need_restart = False             # A1111: an extension asks for a restart (shown, never acted on alone)
        self.server_command: str | None = None
        self.server_start = time.time()
        self.reset()

    def reset(self) -> None:
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.current_latent: torch.Tensor | None = None
        self.current_image = None          # live preview (PIL image), made every N steps by a listener
        self.current_image_step = -1
        self.textinfo = ""
        self.time_start: float | None = None
        self.owner: str | None = None       # who started the job (a browser session); None: API or script
        self.task_id: str | None = None     # the queue's id of the running job
        self.oom = False                    # A1111: the last job ran out of memory
        self.id_live_preview = 0
        self.current_image_sampling_step = 0

    def begin(self, job: str = "", job_count: int = 1, owner: str | None = None, task_id: str | None = None) -> None:
        with self.lock:
            self.reset()
            # a job that got the queue just before shutdown must stop at its first step, not run to the end
            self.interrupted = self.shutting_down
            self.owner = owner
            self.task_id = task_id
            self.job = job
            self.job_count = job_count
            self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
            self.time_start = time.time()

    def end(self) -> None:
        with self.lock:
            self.job = ""
            self.job_count = 0
            self.current_latent = None
            self.current_image = None
            self.time_start = None

    def interrupt(self, owner: str | None = None) -> None:
        """Stop the running job. With an owner, only that owner's job: the running one if it is theirs, else
        their queued job before it starts; another session's job is never touched."""
        with self.lock:
            if owner is None or (self.busy and self.owner == owner):
                self.interrupted = True
            elif self.waiting.get(owner):
                self.cancelled.add(owner)

    def interrupt_task(self, task_id: str) -> bool:
        """Stop the running job only if it is this task (checked and set under the lock, so a job of another task
        that starts in between is never stopped). True when it was running."""
        with self.lock:
            if self.busy and self.task_id == task_id:
                self.interrupted = True
                return True
            return False

    def stop_all(self) -> None:
        """Server shutdown: interrupt the running job and any job that starts from now on."""
        with self.lock:
            self.shutting_down = True
            self.interrupted = True

    def skip(self, owner: str | None = None) -> None:
        if owner is None or (self.busy and self.owner == owner):
            self.skipped = True

    def enqueue(self, owner: str) -> None:
        with self.lock:
            self.waiting[owner] = self.waiting.get(owner, 0) + 1

    def dequeue(self, owner: str) -> bool:
        """Leave the queue; True when the owner interrupted this job while it waited."""
        with self.lock:
            self.waiting[owner] -= 1
            if not self.waiting[owner]:
                del self.waiting[owner]
            if owner in self.cancelled:
                self.cancelled.discard(owner)
                return True
            return False

    def eta(self) -> float | None:
        """Seconds left, from the time spent so far and the progress made (None before the first step)."""
        progress = self.progress()
        if not self.busy or progress <= 0.011:
            return None
        elapsed = time.time() - self.time_start
        return max(0.0, elapsed / progress - elapsed)

    def on_progress(self, event: ProgressEvent) -> None:
        self.job_no = event.job_no
        self.job_count = max(self.job_count, event.job_count)
        self.sampling_step = event.step
        self.sampling_steps = event.total_steps
        self.current_latent = event.latent
        for listener in list(self.listeners):
            listener(event)

    # --- A1111's names that extensions driving their own loops call -------------------------------------------

    def nextjob(self) -> None:
        """An extension's own loop moved on to its next item (A1111: job_no + 1, step back to 0)."""
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def assign_current_image(self, image) -> None:
        """An extension shows its own picture as the live preview."""
        self.current_image = image
        self.id_live_preview += 1

    def set_current_image(self) -> None:
        """A1111 decodes the latent here for the preview; previews are made by the preview listener instead."""

    def stop_generating(self) -> None:
        self.stopping_generation = True

    def dict(self) -> dict[str, object]:
        """A1111's `state.dict()` (what /sdapi/v1/progress reports as `state`)."""
        return {"skipped": self.skipped, "interrupted": self.interrupted, "stopping_generation":
                self.stopping_generation, "job": self.job, "job_count": self.job_count, "job_timestamp":
                self.job_timestamp, "job_no": self.job_no, "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps}

    @property
    def busy(self) -> bool:
        return self.time_start is not None

    def progress(self) -> float:
        """A1111's formula: 0.01 + job_no/job_count + (step/steps)/job_count, capped at 1; 0 when idle."""
        if not self.busy or self.job_count == 0:
            return 0.0
        value = 0.01 + self.job_no / self.job_count
        if self.sampling_steps:
            value += self.sampling_step / self.sampling_steps / self.job_count
        return min(value, 1.0)
