"""A1111's `modules.errors`: how extensions report an error without stopping (`display`, `display_once`, `report`,
`run`) and the last few exceptions kept for the sysinfo page (`get_exceptions`). Messages go to stderr in A1111's
form ("*** message" lines, then the traceback). An adapter: nothing in the core uses it."""

from __future__ import annotations

import sys
import textwrap
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

MAX_RECORDS = 5  # A1111 keeps the last five
exception_records: list[dict[str, Any]] = []
already_displayed: dict[str, int] = {}
_last_recorded: BaseException | None = None


def format_traceback(tb: TracebackType | None) -> list[list[str]]:
    """[[file:line, line of code], ...] innermost last, as A1111's sysinfo shows them."""
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line or ""]
            for frame in traceback.extract_tb(tb)]


def format_exception(e: BaseException, tb: TracebackType | None) -> dict[str, Any]:
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions() -> list[dict[str, Any]]:
    """The recorded exceptions, newest first."""
    return list(reversed(exception_records))


def record_exception() -> None:
    """Keep the exception being handled (if any) among the last MAX_RECORDS."""
    global _last_recorded
    _, e, tb = sys.exc_info()
    if e is None or e is _last_recorded:
        return
    _last_recorded = e
    exception_records.append(format_exception(e, tb))
    del exception_records[:-MAX_RECORDS]


def report(message: str, *, exc_info: bool = False) -> None:
    """Print `message` ("*** " before each line) and, with `exc_info`, the traceback being handled."""
    record_exception()
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(textwrap.indent(traceback.format_exc(), "    "), file=sys.stderr)
        print("---", file=sys.stderr)


def print_error_explanation(message: str) -> None:
    """A boxed explanation between two rules of '='."""
    record_exception()
    lines = message.strip().split("\n")
    width = max(len(line) for line in lines)
    print("=" * width, file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    print("=" * width, file=sys.stderr)


def display(e: BaseException, task: str | None, *, full_traceback: bool = False) -> None:
    """Print "<task>: <ExceptionType>" and the exception's traceback (with the caller's stack, `full_traceback`)."""
    record_exception()
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    formatted = traceback.TracebackException.from_exception(e)
    if full_traceback:
        formatted.stack = traceback.StackSummary(traceback.extract_stack()[:-2] + formatted.stack)
    print(*formatted.format(), sep="", file=sys.stderr)


def display_once(e: BaseException, task: str) -> None:
    """`display`, but only the first time for this `task`."""
    record_exception()
    if task in already_displayed:
        return
    display(e, task)
    already_displayed[task] = 1


def run(code: Callable[[], Any], task: str) -> None:
    """Call `code()`; an exception is displayed under `task` instead of raised."""
    try:
        code()
    except Exception as e:
        display(e, task)


def check_versions() -> None:
    """A1111 warns about torch/xformers/gradio versions it was not tested with; the versions here are pinned by
    the program itself, so there is nothing to warn about."""
