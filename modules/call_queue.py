"""A1111's `modules.call_queue`: the wrappers extensions put around their Gradio handlers.

A1111 serialises GPU work with a lock; here every such call is a job in the one runner queue (`shared.runner`):
`wrap_gradio_gpu_call` and `wrap_queued_call` run the function as a queue item (with its place, progress state,
Interrupt and, for "task(...)" ids, the id the page polls), so an extension's work never runs beside a generation.
`wrap_gradio_call` turns an exception into A1111's error outputs instead of a broken page. An adapter: nothing in
the core uses it."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from modules import errors, shared

queue_lock = shared.queue_lock  # the same turn-in-the-queue lock as `shared.queue_lock`


def _task_id(args: Sequence[Any]) -> str | None:
    """A1111's convention: a first argument "task(...)" is the job's id (the page made it to poll progress)."""
    first = args[0] if args else None
    return first if isinstance(first, str) and first.startswith("task(") and first.endswith(")") else None


def _label(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def wrap_queued_call(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` run in its turn of the job queue (A1111: under `queue_lock`)."""
    @wraps(func)
    def queued(*args: Any, **kwargs: Any) -> Any:
        return shared.runner.run("extension", lambda: func(*args, **kwargs), label=_label(func), progress=False)
    return queued


def wrap_gradio_gpu_call(func: Callable[..., Any], extra_outputs: list[Any] | None = None) -> Callable[..., Any]:
    """`func` as a job of the queue, with progress state (`shared.state.begin/end`) and a "task(...)" first
    argument as its task id; errors become A1111's error outputs (see `wrap_gradio_call`) plus timing stats."""
    @wraps(func)
    def as_job(*args: Any, **kwargs: Any) -> Any:
        return shared.runner.run("extension", lambda: func(*args, **kwargs), label=_label(func),
                                 task_id=_task_id(args))
    return wrap_gradio_call(as_job, extra_outputs=extra_outputs, add_stats=True)


def _error_outputs(e: BaseException, extra_outputs: list[Any] | None) -> list[Any]:
    outputs = list(extra_outputs) if extra_outputs is not None else [None, ""]
    return [*outputs, f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]


def _with_stats(result: Any, elapsed: float) -> tuple[Any, ...]:
    """A1111 appends "Time taken" to the last output when it is HTML text."""
    outputs = list(result) if isinstance(result, (list, tuple)) else [result]
    minutes, seconds = divmod(elapsed, 60)
    taken = f"{int(minutes)} min. {seconds:.1f} sec." if minutes else f"{seconds:.1f} sec."
    if outputs and isinstance(outputs[-1], str):
        outputs[-1] += f"<div class='performance'><p class='time'>Time taken: <wbr><span class='measurement'>" \
                       f"{taken}</span></p></div>"
    return tuple(outputs)


def wrap_gradio_call(func: Callable[..., Any], extra_outputs: list[Any] | None = None,
                     add_stats: bool = False) -> Callable[..., Any]:
    """`func` whose exception is reported (`errors.report`) and answered with `extra_outputs` (default
    [None, ""]) plus an HTML error message, A1111's way of showing an error in the page; lists become tuples."""
    @wraps(func)
    def reporting(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except Exception as e:
            arguments = ", ".join(f"{value!r}"[:128] for value in args)
            errors.report(f"Error completing request\nArguments: {arguments} {kwargs}"[:4096], exc_info=True)
            result = _error_outputs(e, extra_outputs)
        if not add_stats:
            return tuple(result) if isinstance(result, (list, tuple)) else result  # one output stays one value
        return _with_stats(result, time.perf_counter() - started)
    return reporting


def wrap_gradio_call_no_job(func: Callable[..., Any], extra_outputs: list[Any] | None = None,
                            add_stats: bool = False) -> Callable[..., Any]:
    """`wrap_gradio_call` for work that is not a job (A1111 1.9+ name)."""
    return wrap_gradio_call(func, extra_outputs=extra_outputs, add_stats=add_stats)
