"""The job runner: one queue and one worker thread per device, through which every kind of GPU work passes.

txt2img, img2img, extras, checkpoint merges, model switches (and later ControlNet preprocessing, training, remote
workers) are items of one first-come-first-served queue. Each item has a task id in `TaskRegistry` (status, queue
position, cancel), and while it runs the shared `State` carries its progress and the interrupt/skip flags. Callers
wait on a `concurrent.futures.Future`; the async API does not wait.

A *turn* (`with runner.turn("model-switch"):`) is an item whose body runs in the caller's thread while the worker
waits for it: A1111's `with shared.queue_lock:` for extensions, and short sections (a checkpoint change from the
settings) that must not overlap a job. Work submitted from inside the worker thread, or by the holder of a turn,
runs at once (a script's nested process_images, a model switch inside an X/Y/Z plot) instead of deadlocking.

This module is core: it imports no UI, API or A1111-compatibility module.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modules.state import State
from modules.tasks import QueueClosed, Task, TaskRegistry

log = logging.getLogger("webui")
T = TypeVar("T")


class JobFuture(concurrent.futures.Future):
    """A queued item's result, with its task record (id, status) for cancelling it."""

    task: Task


class JobCancelled(RuntimeError):
    """The job was cancelled or interrupted before it started (it never ran)."""


@dataclass(eq=False)
class _Item:
    task: Task
    kind: str
    work: Callable[[], Any] | None      # None: a turn, whose body runs in the caller's thread
    owner: str | None
    job_count: int
    progress: bool                      # set up the shared progress state (jobs), or not (short turns)
    timeout: float | None = None        # seconds it may run before it is interrupted (None: no limit)
    future: JobFuture = field(default_factory=JobFuture)
    granted: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    refusal: BaseException | None = None  # why a turn was not granted (cancelled, queue closed)


class JobRunner:
    """One device's queue and worker. Thread-safe; the worker thread starts with the first item."""

    def __init__(self, state: State, tasks: TaskRegistry, device_name: str = "device 0") -> None:
        self.state = state
        self.tasks = tasks
        self.device_name = device_name
        self._condition = threading.Condition()
        self._items: deque[_Item] = deque()
        self._current: _Item | None = None
        self._worker: threading.Thread | None = None
        self._turn_holder: int | None = None   # thread id that runs a turn's body right now
        self._closed_reason: str | None = None

    # --- submitting -------------------------------------------------------------------------------------------

    def submit(self, kind: str, work: Callable[[], T], *, label: str | None = None, owner: str | None = None,
               task_id: str | None = None, task: Task | None = None, job_count: int = 1,
               progress: bool = True, timeout: float | None = None) -> JobFuture:
        """Queue `work()`; returns a Future for its result. `task` is a record the caller registered itself (the
        async API, which answers with its id first); otherwise one is made (`task_id`: a client's own id).
        `timeout`: once it has run that many seconds it is interrupted at its next step, as an Interrupt would,
        and its task records why."""
        item = self._enqueue(kind, work, label, owner, task_id, task, job_count, progress)
        item.timeout = timeout if timeout and timeout > 0 else None
        return item.future

    def run(self, kind: str, work: Callable[[], T], *, label: str | None = None, owner: str | None = None,
            task_id: str | None = None, task: Task | None = None, job_count: int = 1, progress: bool = True) -> T:
        """Queue `work()` and wait for its result (its exception is raised here). Inside the worker or a turn the
        work runs at once: it is part of the job that is running."""
        if self.in_turn():
            return work()
        return self.submit(kind, work, label=label, owner=owner, task_id=task_id, task=task, job_count=job_count,
                           progress=progress).result()

    @contextmanager
    def turn(self, kind: str = "exclusive", owner: str | None = None, wait: float | None = None
             ) -> Iterator[bool]:
        """Wait for a turn in the queue, run the `with` body in this thread while the worker waits, then go on.
        Yields True; with `wait` (seconds) it gives up after that long, leaves the queue and yields False."""
        if self.in_turn():
            yield True
            return
        item = self._enqueue(kind, None, None, owner, None, None, 1, False)
        if not item.granted.wait(wait):
            self.cancel(item.task.id)
            if not item.granted.is_set() or item.refusal is not None:
                yield False
                return
        if item.refusal is not None:  # cancelled before its turn, or the queue closed
            raise item.refusal
        self._turn_holder = threading.get_ident()
        try:
            yield True
        finally:
            self._turn_holder = None
            item.released.set()
            item.future.exception()  # the worker has let go of the turn: the device is free when this returns

    def in_turn(self) -> bool:
        """Whether the calling thread is the one the device is working for now (the worker or a turn's holder)."""
        ident = threading.get_ident()
        return ident == self._turn_holder or (self._worker is not None and ident == self._worker.ident)

    def _enqueue(self, kind: str, work: Callable[[], Any] | None, label: str | None, owner: str | None,
                 task_id: str | None, task: Task | None, job_count: int, progress: bool) -> _Item:
        with self._condition:
            if self._closed_reason is not None:
                raise QueueClosed(self._closed_reason)
            task = task if task is not None else self.tasks.add(task_id, label or kind)
            item = _Item(task, kind, work, owner, max(1, int(job_count)), progress)
            item.future.task = task
            if owner is not None:
                self.state.enqueue(owner)
            self._items.append(item)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work_loop, name=f"job-runner ({self.device_name})",
                                                daemon=True)
                self._worker.start()
            self._condition.notify_all()
            return item

    # --- the worker ---------------------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            with self._condition:
                while not self._items:
                    self._condition.wait()
                item = self._current = self._items.popleft()
            if not item.future.set_running_or_notify_cancel():  # the caller cancelled its Future while queued
                self.tasks.request_cancel(item.task.id)
            outcome: tuple[bool, Any] = (False, RuntimeError("the job runner failed"))
            try:
                outcome = self._run_item(item)
            except BaseException as e:  # the worker must survive anything an item does
                log.exception("job runner: item %s failed outside its job", item.task.id)
                outcome = (False, e)
            finally:
                with self._condition:
                    self._current = None
                    self._condition.notify_all()
            # resolved only now: whoever waits sees the device free and the progress state ended
            ok, value = outcome
            if not item.future.done():
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)
            # the result (a job, its model objects) belongs to the caller: the idle worker must not keep it alive
            del item, outcome, value

    def _run_item(self, item: _Item) -> tuple[bool, Any]:
        """Run one item; (True, result) or (False, exception)."""
        task = item.task
        cancelled_by_owner = item.owner is not None and self.state.dequeue(item.owner)
        if cancelled_by_owner or not self.tasks.start(task):
            self.tasks.finish(task, cancelled=True)  # one that close() failed at shutdown keeps its reason
            reason = task.error if task.status != "cancelled" and task.error else "Interrupted before it started."
            item.refusal = QueueClosed(reason) if self._closed_reason else JobCancelled(reason)
            item.granted.set()
            return False, item.refusal
        if item.progress:
            self.state.begin(task.label, item.job_count, owner=item.owner, task_id=task.id)
            if task.cancel_requested:  # a cancel that came between start() and begin() is not lost
                self.state.interrupt_task(task.id)
        try:
            if item.work is None:  # a turn: hand the device to the waiting caller until it is done
                item.granted.set()
                item.released.wait()
                self.tasks.finish(task)
                return True, None
            timer = None
            if item.timeout is not None:
                timer = threading.Timer(item.timeout, self._time_out, args=(task, item.timeout))
                timer.daemon = True
                timer.start()
            try:
                result = item.work()
            except BaseException as e:
                self.tasks.finish(task, error=str(e) or type(e).__name__)
                return False, e
            finally:
                if timer is not None:
                    timer.cancel()
            if task.error and task.error.startswith("Timed out"):
                self.tasks.finish(task, error=task.error)  # what it made so far is still its result
            self.tasks.finish(task, cancelled=task.cancel_requested and self.state.interrupted)
            return True, result
        finally:
            if item.progress:
                self.state.end()

    def _time_out(self, task: Task, seconds: float) -> None:
        if self.state.interrupt_task(task.id):
            task.error = f"Timed out after {seconds:g} s (setting job_timeout); stopped at its next step"
            log.warning("%s: %s", task.id, task.error)

    # --- what is queued -------------------------------------------------------------------------------------------

    def queued(self) -> list[Task]:
        """The tasks waiting, in the order they will run (the running one not included)."""
        with self._condition:
            return [item.task for item in self._items if item.task.status == "queued"]

    def current(self) -> Task | None:
        with self._condition:
            return self._current.task if self._current is not None else None

    def position(self, task_id: str) -> int | None:
        """0-based place in the queue of a waiting task ("N ahead"), None when it is not waiting."""
        ids = [task.id for task in self.queued()]
        return ids.index(task_id) if task_id in ids else None

    def cancel(self, task_id: str) -> Task | None:
        """Cancel a task: a queued one will not run, a running one is interrupted at its next step."""
        task = self.tasks.request_cancel(task_id)
        if task is None or not task.cancel_requested:
            return task
        with self._condition:  # a waiting item leaves the queue now: its caller hears at once, others move up
            item = next((i for i in self._items if i.task is task), None)
            if item is not None:
                self._items.remove(item)
        if item is None:
            self.state.interrupt_task(task.id)
            return task
        if item.owner is not None:
            self.state.dequeue(item.owner)
        self.tasks.start(task)  # a cancelled queued task is marked cancelled by start()
        item.refusal = JobCancelled("Cancelled before it started.")
        item.future.set_exception(item.refusal)
        item.granted.set()
        with self._condition:
            self._condition.notify_all()
        return task

    def cancel_owner(self, owner: str) -> list[Task]:
        """Cancel everything a browser session queued or runs (its tab was closed); returns those tasks. Work
        submitted without an owner (the API, its async jobs) is never touched."""
        with self._condition:
            mine = [item.task for item in self._items if item.owner == owner]
            if self._current is not None and self._current.owner == owner:
                mine.append(self._current.task)
        for task in mine:
            self.cancel(task.id)
        return mine

    # --- shutdown ---------------------------------------------------------------------------------------------------

    def close(self, reason: str) -> list[Task]:
        """Refuse new work; queued items fail with `reason` (they never run); the running one is left to finish or be
        interrupted. Returns the tasks that failed."""
        with self._condition:
            self._closed_reason = reason
            failed = self.tasks.close(reason)
            waiting, self._items = list(self._items), deque()
            self._condition.notify_all()
        for item in waiting:  # every waiting caller hears it now, not after the running job
            if item.owner is not None:
                self.state.dequeue(item.owner)
            item.refusal = QueueClosed(reason)
            item.granted.set()
            if not item.future.done():
                item.future.set_exception(item.refusal)
        return failed

    def reopen(self) -> None:
        with self._condition:
            self._closed_reason = None
        self.tasks.reopen()

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits; False if `timeout` seconds passed first."""
        with self._condition:
            return self._condition.wait_for(lambda: self._current is None and not self._items, timeout)

    def busy(self) -> bool:
        with self._condition:
            return self._current is not None or bool(self._items)


class QueueLock:
    """A1111's `shared.queue_lock` over the runner: `with shared.queue_lock:` (or acquire/release) takes a turn in
    the one queue, so an extension's locked section never overlaps a job and waits its turn in order. Like a
    threading.Lock, `acquire(blocking=False)` / `acquire(timeout=...)` give up (False) and any thread may release."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner
        self._held: list[Any] = []  # open turns, most recent last

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        wait = None if blocking and timeout < 0 else (0.0 if not blocking else timeout)
        turn = self._runner.turn("queue_lock", wait=wait)
        if not turn.__enter__():
            return False
        self._held.append(turn)
        return True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of an unlocked queue_lock")
        self._held.pop().__exit__(None, None, None)

    def locked(self) -> bool:
        return self._runner.busy()

    def __enter__(self) -> QueueLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
