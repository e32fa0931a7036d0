"""A real Easel server process on a loopback port, for HTTP tests of the API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_models(models: Path) -> Path:
    """tiny-sd1 and a second tiny SD 1.x checkpoint, plus a VAE file, under `models`."""
    from tiny_models import write_single_file, write_vae_file

    checkpoints = models / "Stable-diffusion"
    write_single_file(checkpoints, "tiny-sd1", "sd1", 0)
    write_single_file(checkpoints, "tiny-other", "sd1", 7)
    write_vae_file(models / "VAE", "tiny-vae", "sd1", seed=50)
    return models


class Server:
    """`python webui.py --nowebui ...` over a data dir; `.url` is its base URL."""

    def __init__(self, data_dir: Path, models_dir: Path, *extra: str, settings: dict | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = {"live_previews_enable": True, "show_progress_every_n_steps": 1, **(settings or {})}
        (data_dir / "config.json").write_text(json.dumps(config))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COMMANDLINE_ARGS": ""}
        self.log_path = data_dir / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (kept open for the process's lifetime)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "webui.py"), "--nowebui", "--data-dir", str(data_dir), "--models-dir",
             str(models_dir), "--port", str(self.port), *extra],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        """Until the app serves: the server prints A1111's "Running on local URL" line then (before
        it, a "starting" gate answers 503)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            if "Running on local URL" in self.log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"server did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
        return requests.get(self.url + path, timeout=kw.pop("timeout", 120), **kw)

    def post(self, path: str, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
        return requests.post(self.url + path, timeout=kw.pop("timeout", 120), **kw)

    def delete(self, path: str, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
        return requests.delete(self.url + path, timeout=kw.pop("timeout", 120), **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
