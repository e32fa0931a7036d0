"""Start-up: from `./webui.sh` (environment already installed) to the first answer, to the page, and to
the first image; memory of the idle server; and where the start-up time goes.

Each run starts the launcher on a free port with `--api` over a temporary data tree holding a tiny
SD 1.x checkpoint (tests/tiny_models.py), then polls:

- first answer: any HTTP answer on "/" (the "starting" page, 503, counts);
- page: "/" answers 200 with the Gradio UI (`--nowebui`: /docs);
- first image: `POST /sdapi/v1/txt2img` (steps 2, 64x64), sent as soon as the page answers, returns;
- RSS: resident memory of the server process when the page is up, and idle after the first image.

    python bench/bench_startup.py                        # ./webui.sh, 3 runs
    python bench/bench_startup.py --launcher webui.py --runs 5
    python bench/bench_startup.py --phases               # also: in-process phase times, import costs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PAYLOAD = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Accept": "text/html", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def descendants(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    found = [pid]
    for p in found:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_mib(pid: int) -> float:
    """Largest resident set among the launcher's processes: the server (bash/launch.py are small)."""
    best = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            pass
    return best / 1024


def make_tree(root: Path) -> Path:
    import tiny_models

    models = root / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    tiny_models.write_single_file(models, "tiny-sd1", "sd1")
    return root


def launcher_command(launcher: str, port: int, data: Path, extra: list[str]) -> list[str]:
    flags = ["--api", "--port", str(port), "--data-dir", str(data), *extra]
    if launcher == "webui.sh":
        return ["bash", str(ROOT / "webui.sh"), *flags]
    return [sys.executable, str(ROOT / launcher), *flags]


def one_run(launcher: str, data: Path, extra: list[str], timeout: float) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "EASEL_ALLOW_ROOT": "1", "CI": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("COMMANDLINE_ARGS", None)
    # Each run starts from the same state: no settings, caches or outputs of the previous one.
    for name in ("config.json", "cache", "outputs", "params.txt"):
        target = data / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    url = f"http://127.0.0.1:{port}"
    page = "/docs" if "--nowebui" in extra else "/"
    result: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(launcher_command(launcher, port, data, extra), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []

    def read_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Running on local URL" in line and "url_line_s" not in result:
                result["url_line_s"] = time.perf_counter() - t0

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"launcher exited with {proc.returncode}:\n{''.join(lines)}")
            try:
                status, _ = http(url + page, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            now = time.perf_counter() - t0
            result.setdefault("first_answer_s", now)
            if status == 200:
                result["page_s"] = now
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"page not ready within {timeout} s:\n{''.join(lines)}")
        result["rss_page_mib"] = rss_mib(proc.pid)

        t_req = time.perf_counter()
        status, body = http(url + "/sdapi/v1/txt2img", PAYLOAD, timeout=timeout)
        if status != 200 or not json.loads(body).get("images"):
            raise RuntimeError(f"txt2img answered {status}: {body[:500]!r}")
        now = time.perf_counter()
        result["first_image_s"] = now - t0
        result["first_request_s"] = now - t_req

        t_req = time.perf_counter()
        status, _ = http(url + "/sdapi/v1/txt2img", {**PAYLOAD, "seed": 2}, timeout=timeout)
        result["second_request_s"] = time.perf_counter() - t_req
        time.sleep(2.0)
        result["rss_idle_mib"] = rss_mib(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ready = re.search(r"ready after ([\d.]+) s", "".join(lines))
    if ready:
        result["ready_in_process_s"] = float(ready.group(1))
    return result


PHASES = r"""
import sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import modules
from modules import cmd_args, shared
out = {}
def mark(name, t):
    out[name] = round(time.perf_counter() - t, 3)
args = cmd_args.build_parser().parse_args(["--api", "--data-dir", sys.argv[2]])
t = time.perf_counter(); import fastapi, uvicorn; mark("import fastapi+uvicorn", t)
t = time.perf_counter(); shared.initialize(args); mark("shared.initialize (torch, settings, device policy)", t)
app = fastapi.FastAPI()
t = time.perf_counter(); from modules.api import api; api.mount(app, args); mark("API mount", t)
t = time.perf_counter(); import gradio; mark("import gradio", t)
t = time.perf_counter(); from modules.ui import ui; ui.mount(app, args); mark("UI build + mount", t)
t = time.perf_counter(); import diffusers, transformers; mark("diffusers+transformers top level (left)", t)
out["total"] = round(time.perf_counter() - t0, 3)
print(json.dumps(out))
"""

IMPORT_GROUPS = ("torch", "gradio", "diffusers", "transformers", "scipy", "fastapi", "uvicorn", "pandas",
                 "modules.api", "modules.ui", "modules.engine", "modules.processing")


def phases(data: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", PHASES, str(ROOT), str(data)], capture_output=True, text=True,
                         check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(res.stdout.strip().splitlines()[-1])


def import_costs(data: Path) -> dict[str, float]:
    """Largest cumulative import time (s) within each package group, from -X importtime. Groups
    overlap (modules.api's figure includes the diffusers import it triggers)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", PHASES, str(ROOT), str(data)],
                         capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    costs: dict[str, float] = {}
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if not m:
            continue
        name = m.group(3)
        for group in IMPORT_GROUPS:
            if name == group or name.startswith(group + "."):
                costs[group] = max(costs.get(group, 0.0), int(m.group(1)) / 1e6)
    return dict(sorted(costs.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launcher", choices=["webui.sh", "launch.py", "webui.py"], default="webui.sh")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--nowebui", action="store_true", help="API-only server (page = /docs)")
    ap.add_argument("--phases", action="store_true", help="also time the start-up phases in-process")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="easel-bench-startup-") as tmp:
        data = make_tree(Path(tmp))
        extra = ["--nowebui"] if args.nowebui else []
        runs = []
        for i in range(args.runs):
            r = one_run(args.launcher, data, extra, args.timeout)
            print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.items()), flush=True)
            runs.append(r)
        extra_info = {}
        if args.phases:
            extra_info["phases"] = phases(data)
            extra_info["imports"] = import_costs(data)

    import torch

    keys = sorted({k for r in runs for k in r}, key=lambda k: list(runs[0]).index(k) if k in runs[0] else 99)
    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, Python {platform.python_version()}, launcher {args.launcher}, "
          f"{args.runs} runs, load average (1 min): {os.getloadavg()[0]:.1f}")
    print()
    print("| measure | median | min | max |")
    print("|---|---|---|---|")
    for k in keys:
        vals = [r[k] for r in runs if k in r]
        unit = " MiB" if k.endswith("_mib") else " s"
        print(f"| {k} | {statistics.median(vals):.2f}{unit} | {min(vals):.2f}{unit} | {max(vals):.2f}{unit} |")
    if extra_info:
        print()
        print("In-process phases (s):", json.dumps(extra_info["phases"]))
        print("Largest cumulative import per group under -X importtime (s, overlapping):", json.dumps(extra_info["imports"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
