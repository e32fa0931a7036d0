"""Progress and control of the running generation (A1111's `shared.state`).

The engine reads `interrupted` / `skipped` every step and reports progress through `sampling_step`
and `set_current_latent`; UI and API progress views read the same object.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any


class State:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.server_start = time.time()
        self.reset()

    def reset(self) -> None:
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent: Any = None
        self.current_image: Any = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.textinfo: str | None = None
        self.time_start: float | None = None

    # --- control -------------------------------------------------------------------------------
    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def stop_generating(self) -> None:
        self.stopping_generation = True

    # --- lifecycle ------------------------------------------------------------------------------
    def begin(self, job: str = "(unknown)") -> None:
        with self._lock:
            self.reset()
            self.job = job
            self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            self.time_start = time.time()

    def end(self) -> None:
        with self._lock:
            self.job = ""
            self.job_count = 0
            self.sampling_step = 0
            self.sampling_steps = 0
            self.current_latent = None

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0
        self.skipped = False

    def set_current_latent(self, latent: Any, step: int) -> None:
        self.current_latent = latent
        self.sampling_step = step

    def set_current_image(self, image: Any) -> None:
        self.current_image = image
        self.current_image_sampling_step = self.sampling_step
        self.id_live_preview += 1

    def dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }
