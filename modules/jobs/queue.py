"""The one generation queue: every txt2img/img2img from the UI or the API is a job here.

One worker thread per device takes jobs in order, so jobs never interleave on the device. Each job
has its own status, progress and preview, so several clients can follow their own work; the
process-wide `shared.state` (A1111's global progress view) mirrors whichever job is running.

A job's `run` callable receives the Job and returns its result (usually a `processing.Processed`).
Cancelling a queued job removes it; cancelling the running job interrupts it within one step.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from modules import shared

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobStatus, ...] = ("done", "failed", "cancelled")


class QueueFullError(RuntimeError):
    """The queue holds as many waiting jobs as it may; the caller should retry later."""


class JobNotFoundError(KeyError):
    pass


@dataclass
class JobProgress:
    step: int = 0
    steps: int = 0
    job_no: int = 0
    job_count: int = 0
    preview: Any = None
    """PIL image of the latest live preview, or None"""
    preview_id: int = 0
    textinfo: str = ""

    @property
    def fraction(self) -> float:
        if self.job_count <= 0 or self.steps <= 0:
            return 0.0
        done = self.job_no + min(self.step, self.steps) / self.steps
        return max(0.0, min(1.0, done / self.job_count))


@dataclass
class Job:
    kind: str
    run: Callable[[Job], Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: JobStatus = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    exception: BaseException | None = None
    progress: JobProgress = field(default_factory=JobProgress)
    label: str = ""
    """what the job is, for listings (e.g. the prompt)"""
    owner: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    """what the submitter keeps with the job (the API keeps the request and the encoded response)"""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _listeners: list[Callable[[Job, str], None]] = field(default_factory=list, repr=False)
    _cancel_requested: bool = field(default=False, repr=False)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def eta(self) -> float | None:
        """Seconds left for a running job, from its pace so far."""
        frac = self.progress.fraction
        if self.status != "running" or self.started is None or frac <= 0:
            return None
        elapsed = time.time() - self.started
        return max(0.0, elapsed / frac - elapsed)

    def add_listener(self, fn: Callable[[Job, str], None]) -> Callable[[], None]:
        """fn(job, event) is called on 'progress', 'preview', 'status' events; returns an unsubscribe."""
        self._listeners.append(fn)

        def remove() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return remove

    def emit(self, event: str) -> None:
        for fn in list(self._listeners):
            try:
                fn(self, event)
            except Exception:
                log.exception("job listener failed")

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "label": self.label,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": round(self.progress.fraction, 4) if self.status == "running" else (
                1.0 if self.status == "done" else 0.0),
            "step": self.progress.step,
            "steps": self.progress.steps,
            "job_no": self.progress.job_no,
            "job_count": self.progress.job_count,
            "eta": self.eta(),
            "error": self.error,
        }


class JobQueue:
    """A FIFO of jobs served by one worker thread (one device)."""

    def __init__(self, max_queued: int = 64, keep_finished: int = 200) -> None:
        self.max_queued = max_queued
        self._lock = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._keep_finished = keep_finished
        self._running: Job | None = None
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._counter = itertools.count()
        self.completed = 0

    # --- submission --------------------------------------------------------------------------------
    def submit(self, kind: str, run: Callable[[Job], Any], *, label: str = "", owner: str | None = None,
               job_id: str | None = None) -> Job:
        job = Job(kind=kind, run=run, label=label, owner=owner)
        if job_id:
            job.id = job_id
        with self._lock:
            if len(self._pending) >= self.max_queued:
                raise QueueFullError(
                    f"the queue is full ({self.max_queued} jobs waiting); try again when some have finished")
            self._pending.append(job)
            self._jobs[job.id] = job
            self._trim()
            self._ensure_worker()
            self._lock.notify_all()
        return job

    def run_and_wait(self, kind: str, run: Callable[[Job], Any], *, label: str = "", job_id: str | None = None) -> Job:
        job = self.submit(kind, run, label=label, job_id=job_id)
        job.wait()
        return job

    # --- queries -----------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    @property
    def running(self) -> Job | None:
        return self._running

    def pending(self) -> list[Job]:
        with self._lock:
            return list(self._pending)

    def position(self, job: Job) -> int | None:
        """0 for the running job, 1.. for queued ones in order, None when finished."""
        with self._lock:
            if job is self._running:
                return 0
            for i, j in enumerate(self._pending):
                if j is job:
                    return i + 1
        return None

    # --- control -----------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._lock:
            if job.status == "queued" and job in self._pending:
                self._pending.remove(job)
                self._finish(job, "cancelled")
                return job
            if job.status == "running":
                job._cancel_requested = True
                shared.state.interrupt()
        return job

    def interrupt_running(self) -> None:
        shared.state.interrupt()

    def skip_running(self) -> None:
        shared.state.skip()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    # --- worker ------------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._stopping = False
            self._worker = threading.Thread(target=self._work, name="easel-job-worker", daemon=True)
            self._worker.start()

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.is_finished]
        for j in finished[: max(0, len(finished) - self._keep_finished)]:
            self._jobs.pop(j.id, None)

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished = time.time()
        job._done.set()
        job.emit("status")

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running = job
                job.status = "running"
                job.started = time.time()
            job.emit("status")
            state = shared.state
            state.begin(job=f"{job.kind}-{job.id}")
            try:
                job.result = job.run(job)
                if job._cancel_requested:
                    self._finish(job, "cancelled")
                else:
                    self._finish(job, "done")
                    self.completed += 1
            except BaseException as e:  # a job must never take the worker down
                job.exception = e
                job.error = str(e) or type(e).__name__
                job.error_type = type(e).__name__
                if not isinstance(e, (ValueError, RuntimeError)):
                    log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                self._finish(job, "cancelled" if job._cancel_requested else "failed")
            finally:
                state.end()
                with self._lock:
                    self._running = None
                    self._trim()


def step_reporter(job: Job) -> Callable[[Any], None]:
    """A processing step callback that copies progress (and previews) from shared.state into the job."""
    state = shared.state

    def on_step(info: Any) -> None:
        prog = job.progress
        prog.step = info.step + 1
        prog.steps = info.total
        prog.job_no = state.job_no
        prog.job_count = max(state.job_count, 1)
        if state.id_live_preview != prog.preview_id and state.current_image is not None:
            prog.preview = state.current_image
            prog.preview_id = state.id_live_preview
            job.emit("preview")
        job.emit("progress")

    return on_step


_queue: JobQueue | None = None
_queue_lock = threading.Lock()


def get_queue() -> JobQueue:
    """The process-wide queue (created on first use)."""
    global _queue
    with _queue_lock:
        if _queue is None:
            limit = int(getattr(shared.opts, "queue_max_size", 64) or 64)
            _queue = JobQueue(max_queued=limit)
        return _queue
