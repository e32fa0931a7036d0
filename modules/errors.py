"""Reporting errors without stopping the program (A1111's `modules.errors`).

Extensions call `errors.report(...)` and `errors.display(e, task)` from their own `except` blocks;
Easel uses the same functions where a failing extension must not take a generation or the start-up
down. Every report goes to the log with its traceback and is kept in a short list (newest last) for
the UI and the API to show.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger("easel.errors")

MAX_RECORDED = 50


@dataclass
class RecordedError:
    """One reported error: what was being done, the exception text and its traceback."""

    message: str
    exception: str = ""
    traceback: str = ""
    time: datetime = field(default_factory=datetime.now)


_recorded: list[RecordedError] = []
_lock = threading.Lock()


def _record(message: str, exc_info: bool) -> RecordedError:
    exc_type, exc, tb = sys.exc_info() if exc_info else (None, None, None)
    entry = RecordedError(
        message=message,
        exception=f"{type(exc).__name__}: {exc}" if exc is not None else "",
        traceback="".join(traceback.format_exception(exc_type, exc, tb)) if exc is not None else "",
    )
    with _lock:
        _recorded.append(entry)
        del _recorded[:-MAX_RECORDED]
    return entry


def report(message: str, *, exc_info: bool = False) -> RecordedError:
    """Log `message` (with the exception being handled when exc_info) and keep it for the UI."""
    entry = _record(message, exc_info)
    if entry.traceback:
        log.error("%s\n%s", message, entry.traceback.rstrip())
    else:
        log.error("%s", message)
    return entry


def display(e: BaseException, task: str, *, full_traceback: bool = False) -> None:
    """Report exception `e` raised while doing `task` (call from the `except` block that caught it)."""
    report(f"{task or 'error'}: {type(e).__name__}: {e}", exc_info=True)


def display_once(e: BaseException, task: str) -> None:
    """As `display`, but only the first time a given task fails (for errors in per-step hooks)."""
    with _lock:
        if task in _seen_once:
            return
        _seen_once.add(task)
    display(e, task)


_seen_once: set[str] = set()


def record_exception() -> None:
    """Keep the exception being handled in the list, without logging it again."""
    _record("exception", True)


def get_exceptions() -> list[dict[str, Any]]:
    """The recorded errors, newest first, as plain dicts."""
    with _lock:
        items = list(reversed(_recorded))
    return [{"message": e.message, "exception": e.exception, "traceback": e.traceback,
             "time": e.time.isoformat(timespec="seconds")} for e in items]


def clear() -> None:
    with _lock:
        _recorded.clear()
        _seen_once.clear()


def run(code: Callable[[], Any], task: str) -> Any:
    """Call `code()`; on an exception report it under `task` and return None."""
    try:
        return code()
    except Exception as e:
        display(e, task)
        return None


def format_exception(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))
