"""Task records: every item of the job runner's queue (modules/runner.py) has one, with its id, kind and status.

Each task is recorded (queued / running / done / failed / cancelled) so the API can report a job by id, list pending
tasks, and keep finished results for a while (the async job API).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class QueueClosed(RuntimeError):
    """The queue takes no more jobs (the server is shutting down); raised to every caller still waiting in it."""


@dataclass
class Task:
    id: str
    label: str
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None          # what the API returns for it when done (set by the caller)
    error: str | None = None
    cancel_requested: bool = False
    awaits_result: bool = False  # the caller stores a result with `complete`; until then a finished job stays running


class TaskRegistry:
    """Every generation's task record, in arrival order; finished ones are kept up to `keep` (oldest dropped)."""

    def __init__(self, keep: int = 100) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._closed_reason: str | None = None

    @staticmethod
    def new_id() -> str:
        return f"task({uuid.uuid4().hex[:15]})"  # A1111's id_task shape

    def add(self, task_id: str | None, label: str, awaits_result: bool = False) -> Task:
        with self._lock:
            if self._closed_reason is not None:
                raise QueueClosed(self._closed_reason)
            task_id = task_id or self.new_id()
            if task_id in self._tasks and self._tasks[task_id].status in (QUEUED, RUNNING):
                raise ValueError(f"Task id {task_id!r} is already queued or running")
            task = self._tasks[task_id] = Task(task_id, label, awaits_result=awaits_result)
            self._tasks.move_to_end(task_id)
            self._forget_old()
            return task

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def pending(self) -> list[Task]:
        """Queued tasks in the order they will run."""
        with self._lock:
            return [t for t in self._tasks.values() if t.status == QUEUED]

    def running(self) -> Task | None:
        with self._lock:
            return next((t for t in self._tasks.values() if t.status == RUNNING), None)

    def start(self, task: Task) -> bool:
        """Mark running; False when it was cancelled while it waited, or is no longer queued (failed by `close`
        at shutdown, say): then it must not run."""
        with self._lock:
            if task.status != QUEUED:
                return False
            if task.cancel_requested:
                task.status, task.finished = CANCELLED, time.time()
                return False
            task.status, task.started = RUNNING, time.time()
            return True

    def finish(self, task: Task, error: str | None = None, cancelled: bool = False) -> None:
        """Record the end of a task; one that already ended (failed by `close`, say) keeps its outcome. A success
        of a task that `awaits_result` stays running until `complete` stores its result."""
        with self._lock:
            if task.status in (DONE, FAILED, CANCELLED):
                return
            task.finished = time.time()
            if task.awaits_result and not error and not cancelled:
                return
            task.status = CANCELLED if cancelled else FAILED if error else DONE
            task.error = error
            self._forget_old()

    def complete(self, task: Task, result: Any) -> None:
        """Store a task's result and mark it done in one step, so nobody sees it done without its result (a task
        already failed or cancelled keeps that status)."""
        with self._lock:
            task.result = result
            if task.status == RUNNING:
                task.status, task.error = DONE, None
                task.finished = task.finished or time.time()
            self._forget_old()

    def request_cancel(self, task_id: str) -> Task | None:
        """Flag a task; a queued one will not run, a running one must be interrupted by the caller."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None and task.status in (QUEUED, RUNNING):
                task.cancel_requested = True
            return task

    def close(self, reason: str) -> list[Task]:
        """Shutdown: every queued task fails with `reason` (it will never run) and new tasks are refused.
        Returns the tasks it failed; the running one is left to finish (or be interrupted) by its caller."""
        with self._lock:
            self._closed_reason = reason
            failed = [t for t in self._tasks.values() if t.status == QUEUED]
            for task in failed:
                task.status, task.error, task.finished = FAILED, reason, time.time()
            return failed

    def reopen(self) -> None:
        with self._lock:
            self._closed_reason = None

    def _forget_old(self) -> None:
        finished = [k for k, t in self._tasks.items() if t.status not in (QUEUED, RUNNING)]
        for key in finished[:max(0, len(finished) - self.keep)]:
            del self._tasks[key]
