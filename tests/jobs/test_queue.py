import threading
import time

import pytest

from modules import shared
from modules.jobs.queue import JobQueue, QueueFullError


def test_jobs_run_one_at_a_time_in_order():
    q = JobQueue()
    active = []
    order = []
    lock = threading.Lock()

    def work(job):
        with lock:
            active.append(job.id)
            assert len(active) == 1
        time.sleep(0.02)
        order.append(job.label)
        with lock:
            active.remove(job.id)
        return job.label.upper()

    jobs = [q.submit("test", work, label=f"j{i}") for i in range(5)]
    for j in jobs:
        assert j.wait(5)
    assert order == [f"j{i}" for i in range(5)]
    assert [j.result for j in jobs] == [f"J{i}" for i in range(5)]
    assert all(j.status == "done" for j in jobs)
    q.shutdown()


def test_a_failing_job_does_not_stop_the_worker():
    q = JobQueue()
    bad = q.submit("test", lambda job: 1 / 0)
    good = q.submit("test", lambda job: "ok")
    assert good.wait(5) and bad.wait(5)
    assert bad.status == "failed" and bad.error_type == "ZeroDivisionError"
    assert good.status == "done" and good.result == "ok"
    q.shutdown()


def test_cancel_queued_and_running_jobs():
    q = JobQueue()
    started = threading.Event()

    def long_job(job):
        started.set()
        for _ in range(200):
            if shared.state.interrupted:
                return "stopped"
            time.sleep(0.01)
        return "finished"

    running = q.submit("test", long_job)
    waiting = q.submit("test", lambda job: "never")
    assert started.wait(5)
    assert q.position(running) == 0 and q.position(waiting) == 1
    q.cancel(waiting.id)
    assert waiting.status == "cancelled"
    q.cancel(running.id)
    assert running.wait(5)
    assert running.status == "cancelled" and running.result == "stopped"
    q.shutdown()


def test_queue_has_a_bounded_length():
    q = JobQueue(max_queued=2)
    gate = threading.Event()
    q.submit("test", lambda job: gate.wait(5))
    time.sleep(0.05)  # the first job is running, no longer waiting
    q.submit("test", lambda job: None)
    q.submit("test", lambda job: None)
    with pytest.raises(QueueFullError, match="full"):
        q.submit("test", lambda job: None)
    gate.set()
    q.shutdown()
