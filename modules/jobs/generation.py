"""Generation jobs: a processing object (txt2img / img2img) run on the queue."""

from __future__ import annotations

from typing import Any

from modules.jobs.queue import Job, get_queue, step_reporter


def submit_processing(p: Any, *, job_id: str | None = None, owner: str | None = None) -> Job:
    """Queue `process_images(p)`; the job's result is the `Processed`, its progress follows the steps."""
    from modules.processing import process_images

    def run(job: Job) -> Any:
        p.step_callback = step_reporter(job)
        return process_images(p)

    prompt = p.prompt if isinstance(p.prompt, str) else (p.prompt[0] if p.prompt else "")
    return get_queue().submit(p.mode, run, label=prompt[:200], owner=owner, job_id=job_id)


def run_processing(p: Any, *, job_id: str | None = None) -> Any:
    """Queue `p`, wait for it, and return the Processed (or raise what the job raised)."""
    job = submit_processing(p, job_id=job_id)
    job.wait()
    if job.exception is not None:
        raise job.exception
    return job.result
