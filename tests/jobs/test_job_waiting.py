"""Waiting on jobs from async code (the API's blocking calls) and keeping data with a job."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modules.api import runner
from modules.api.errors import ApiError
from modules.jobs.queue import JobQueue


def test_wait_job_resolves_when_the_worker_finishes() -> None:
    q = JobQueue()
    gate = threading.Event()
    job = q.submit("test", lambda job: gate.wait(5) and "ok")
    job.meta["request"] = {"prompt": "x"}

    async def main() -> str:
        asyncio.get_running_loop().call_later(0.05, gate.set)
        return await runner.run(job)

    assert asyncio.run(main()) == "ok"
    assert job.status == "done" and job.meta == {"request": {"prompt": "x"}}
    q.shutdown()


def test_outcome_raises_what_the_job_raised() -> None:
    q = JobQueue()
    job = q.submit("test", lambda job: (_ for _ in ()).throw(ValueError("bad value")))
    asyncio.run(runner.wait_job(job))
    with pytest.raises(ValueError, match="bad value"):
        runner.outcome(job)
    q.shutdown()


def test_cancelled_job_without_result_is_a_409() -> None:
    q = JobQueue()
    gate = threading.Event()
    q.submit("test", lambda job: gate.wait(5))
    waiting = q.submit("test", lambda job: "never")
    q.cancel(waiting.id)
    with pytest.raises(ApiError) as e:
        runner.outcome(waiting)
    assert e.value.status == 409
    gate.set()
    q.shutdown()
