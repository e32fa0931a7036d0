"""Running API work on the job queue: submit, wait without holding a thread, and turn a job's
outcome into a result or an API error.

Blocking `/sdapi/v1` calls wait on an asyncio future that the job's status listener completes, so
many waiting clients cost no worker threads; the device work itself runs on the queue's one worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modules.api.errors import ApiError
from modules.jobs.generation import submit_processing
from modules.jobs.queue import Job, JobNotFoundError, QueueFullError, get_queue


def submit(p: Any, *, job_id: str | None = None, owner: str | None = None) -> Job:
    """Queue a generation; 503 when the queue is full, 409 when `job_id` is taken."""
    if job_id:
        try:
            get_queue().get(job_id)
        except JobNotFoundError:
            pass
        else:
            raise ApiError(409, f"a job with id {job_id!r} exists already", "JobExists")
    try:
        return submit_processing(p, job_id=job_id, owner=owner)
    except QueueFullError as e:
        raise ApiError(503, str(e), "QueueFull") from None


def submit_task(kind: str, fn: Callable[[], Any], *, label: str = "") -> Job:
    """Queue non-generation device work (model switch, unload) so it never overlaps a generation."""
    try:
        return get_queue().submit(kind, lambda job: fn(), label=label)
    except QueueFullError as e:
        raise ApiError(503, str(e), "QueueFull") from None


async def wait_job(job: Job) -> Job:
    """Wait until the job has finished, without blocking the event loop or a thread."""
    if job.is_finished:
        return job
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def on_event(j: Job, event: str) -> None:
        if event == "status" and j.is_finished:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    remove = job.add_listener(on_event)
    try:
        if not job.is_finished:  # it may have finished before the listener was in place
            await done
    finally:
        remove()
    return job


def outcome(job: Job) -> Any:
    """The job's result, or its exception raised again (the API maps it to a status)."""
    if job.exception is not None:
        raise job.exception
    if job.status == "cancelled" and job.result is None:
        raise ApiError(409, f"job {job.id} was cancelled", "JobCancelled")
    return job.result


async def run(job: Job) -> Any:
    await wait_job(job)
    return outcome(job)
