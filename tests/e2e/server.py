"""Start and stop a real Easel server (python webui.py) on a free loopback port, for browser tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Small, fast UI defaults for the tiny test models (ui-config.json overrides A1111's 512x512 / 20 steps).
TEST_UI_CONFIG = {
    "txt2img/Width/value": 64,
    "txt2img/Height/value": 64,
    "txt2img/Sampling steps/value": 4,
    "img2img/Width/value": 64,
    "img2img/Height/value": 64,
    "img2img/Sampling steps/value": 4,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_models(models: Path, *, inpaint: bool = False) -> None:
    """The tiny checkpoints a test server needs, in `models/Stable-diffusion/`."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import tiny_models
    finally:
        sys.path.pop(0)
    checkpoints = models / "Stable-diffusion"
    if not (checkpoints / "tiny-sd1.safetensors").exists():
        tiny_models.write_single_file(checkpoints, "tiny-sd1", "sd1", 0)
    if inpaint and not (checkpoints / "tiny-sd1-inpaint.safetensors").exists():
        tiny_models.write_single_file(checkpoints, "tiny-sd1-inpaint", "sd1-inpaint", 10)


class EaselServer:
    """One `webui.py` process over a data folder; `restart()` keeps the folder."""

    def __init__(self, data_dir: Path, *, extra_args: list[str] | None = None, log_name: str = "server",
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"{log_name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_ui_config(self, overrides: dict | None = None) -> None:
        path = self.data_dir / "ui-config.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(TEST_UI_CONFIG)
        data.update(overrides or {})
        path.write_text(json.dumps(data, indent=4))

    def start(self, timeout: float = 90.0, attempts: int = 2) -> EaselServer:
        """Start and wait for the page; a start-up crash is retried once (import races in threads)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
        return self

    def _start_once(self, timeout: float) -> EaselServer:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False",
                   **self.extra_env)
        env.pop("COMMANDLINE_ARGS", None)
        cmd = [sys.executable, str(REPO / "webui.py"), "--data-dir", str(self.data_dir), "--models-dir",
               str(self.data_dir / "models"), "--port", str(self.port), "--no-hashing", *self.extra_args]
        log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
        self._log = log
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.read_log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/config", timeout=2) as r:
                    if r.status in (200, 401):
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"server did not answer within {timeout}s:\n{self.read_log()[-4000:]}")

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def restart(self) -> EaselServer:
        self.stop()
        return self.start()
