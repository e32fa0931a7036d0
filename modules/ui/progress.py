"""Following a generation job from the page: progress bar, live preview, interrupt and skip.

Every generation goes through the one job queue (`modules.jobs.generation.submit_processing`). The
Generate handler is a generator: it submits the job, then yields a progress update about twice a
second until the job ends, so each browser tab sees its own job's progress and preview while jobs
from other tabs and API clients wait their turn. Jobs are remembered per (browser session, tab) so
the Interrupt and Skip buttons act on the job of the tab that pressed them.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modules import shared

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5

_jobs: dict[tuple[str, str], Any] = {}
_jobs_lock = threading.Lock()


def remember(session: str, tab: str, job: Any) -> None:
    with _jobs_lock:
        _jobs[(session, tab)] = job


def job_of(session: str, tab: str) -> Any:
    with _jobs_lock:
        return _jobs.get((session, tab))


def forget(session: str, tab: str, job: Any) -> None:
    with _jobs_lock:
        if _jobs.get((session, tab)) is job:
            del _jobs[(session, tab)]


def interrupt(session: str, tab: str) -> str:
    """Stop this tab's job: a queued one is dropped, a running one stops within one step."""
    from modules.jobs.queue import JobNotFoundError, get_queue

    job = job_of(session, tab)
    if job is None or job.is_finished:
        return ""
    try:
        get_queue().cancel(job.id)
    except JobNotFoundError:
        return ""
    return "Interrupting..."


def skip(session: str, tab: str) -> str:
    """Abandon the image being made and go on with the next one of this tab's job."""
    from modules.jobs.queue import get_queue

    job = job_of(session, tab)
    queue = get_queue()
    if job is None or job.is_finished or queue.running is not job:
        return ""
    queue.skip_running()
    return "Skipping..."


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


@dataclass
class ProgressView:
    """What the bar shows for a job at one moment."""

    fraction: float
    text: str

    def html(self) -> str:
        pct = max(0.0, min(1.0, self.fraction)) * 100
        return (f"<div class='easel-progress' role='progressbar' aria-valuenow='{pct:.0f}' aria-valuemin='0' "
                f"aria-valuemax='100'><div class='easel-progress-bar' style='width:{pct:.1f}%'></div>"
                f"<span class='easel-progress-text'>{html.escape(self.text)}</span></div>")


def describe(job: Any, position: int | None) -> ProgressView:
    """The progress bar's fraction and text: queue position, model loading, or step x/y, % and ETA."""
    if job.status == "queued":
        ahead = f" (position {position})" if position else ""
        return ProgressView(0.0, f"Waiting in queue{ahead}...")
    prog = job.progress
    if prog.steps <= 0:
        mm = shared.model_manager
        status = getattr(mm, "status", "") if mm is not None else ""
        if status.startswith("loading"):
            return ProgressView(0.0, f"Loading model: {status[len('loading '):]}...")
        return ProgressView(0.0, "Preparing...")
    fraction = prog.fraction
    parts = []
    if prog.job_count > 1:
        parts.append(f"Batch {min(prog.job_no + 1, prog.job_count)}/{prog.job_count}")
    parts.append(f"Step {min(prog.step, prog.steps)}/{prog.steps}")
    parts.append(f"{fraction * 100:.0f}%")
    eta = format_eta(job.eta())
    if eta:
        parts.append(f"ETA {eta}")
    return ProgressView(fraction, " · ".join(parts))


@dataclass
class Tick:
    """One update while a job runs: the bar's HTML, and a new preview image (None: unchanged)."""

    html: str
    preview: Any = None


def follow(job: Any, poll: float = POLL_SECONDS) -> Iterator[Tick]:
    """Yield progress ticks until the job has finished (the caller then reads job.result)."""
    from modules.jobs.queue import get_queue

    queue = get_queue()
    last_preview = -1
    while True:
        position = queue.position(job)
        preview = None
        prog = job.progress
        if prog.preview is not None and prog.preview_id != last_preview:
            preview = prog.preview
            last_preview = prog.preview_id
        yield Tick(describe(job, position).html(), preview)
        if job.wait(poll):
            return
