"""A1111's `modules.progress`: task ids and the progress record the page polls. Here the job runner keeps every
task (`shared.tasks`, `shared.runner`), so these names are views of it: `current_task`, `pending_tasks` and
`progressapi` read the runner's records; `add_task_to_queue` / `start_task` / `finish_task` / `record_results`
(called by extensions that run work outside the runner) keep their own small record, which the views include.
An adapter: nothing in the core uses it."""

from __future__ import annotations

import random
import string
import time
from collections import OrderedDict
from typing import Any

from modules import shared, tasks

_outside_pending: OrderedDict[str, float] = OrderedDict()  # ids an extension queued itself
_outside_current: str | None = None
finished_tasks: list[str] = []
recorded_results: list[tuple[str, Any]] = []
recorded_results_limit = 2
FINISHED_KEPT = 16


def create_task_id(task_type: str) -> str:
    """A1111's "task(<type>-<random>)" id."""
    suffix = "".join(random.choices(string.ascii_letters + string.digits, k=7))  # noqa: S311 (an id, not a secret)
    return f"task({task_type}-{suffix})"


def add_task_to_queue(id_job: str) -> None:
    _outside_pending[id_job] = time.time()


def start_task(id_task: str) -> None:
    global _outside_current
    _outside_current = id_task
    _outside_pending.pop(id_task, None)


def finish_task(id_task: str) -> None:
    global _outside_current
    if _outside_current == id_task:
        _outside_current = None
    finished_tasks.append(id_task)
    del finished_tasks[:-FINISHED_KEPT]


def record_results(id_task: str, res: Any) -> None:
    recorded_results.append((id_task, res))
    del recorded_results[:-recorded_results_limit]


def _pending() -> OrderedDict[str, float]:
    pending = OrderedDict((task.id, task.created) for task in shared.runner.queued())
    pending.update(_outside_pending)
    return pending


def _current() -> str | None:
    running = shared.runner.current()
    return running.id if running is not None else _outside_current


def progressapi(req: Any) -> dict[str, Any]:
    """A1111's /internal/progress answer for `req.id_task`: active, queued, completed, progress, eta, textinfo."""
    id_task = getattr(req, "id_task", None) or (req.get("id_task") if isinstance(req, dict) else None)
    task = shared.tasks.get(id_task) if id_task else None
    active = id_task is not None and id_task == _current()
    queued = id_task in _pending()
    completed = id_task in finished_tasks or (task is not None and task.status in (tasks.DONE, tasks.FAILED,
                                                                                    tasks.CANCELLED))
    answer: dict[str, Any] = {"active": active, "queued": queued, "completed": completed, "progress": None,
                              "eta": None, "live_preview": None, "id_live_preview": -1,
                              "textinfo": "In queue..." if queued else "Waiting..."}
    if active:
        state = shared.state
        answer.update(progress=state.progress(), eta=state.eta(), textinfo=state.textinfo or None)
    elif completed:
        answer.update(progress=1.0, textinfo=None)
    return answer


def restore_progress(id_task: str) -> Any:
    """The result recorded for `id_task` (by `record_results`, or the runner's stored result), else None."""
    for recorded_id, result in reversed(recorded_results):
        if recorded_id == id_task:
            return result
    task = shared.tasks.get(id_task)
    return task.result if task is not None else None


def __getattr__(name: str) -> Any:
    if name == "current_task":
        return _current()
    if name == "pending_tasks":
        return _pending()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
