"""API overhead: a `/sdapi/v1/txt2img` request against calling `process_images` directly.

Both sides use the same tiny checkpoint (1 step, 64x64). The direct side runs in this process; the
HTTP side is a real server process (`webui.py --nowebui`) on a loopback port. Overhead is
median(HTTP) - median(direct) - median(PNG+base64 encoding of the result), i.e. what the API adds
beyond encoding the image: request parsing, checks, queueing, waiting, JSON. Then 8 concurrent
clients measure throughput against the same number of requests sent one after another.

    python bench/bench_api.py              # 30 requests per side, 8 clients x 6 requests
    python bench/bench_api.py --reps 60
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "api"))

import requests  # noqa: E402
import torch  # noqa: E402

from modules import cmd_args, shared  # noqa: E402  (first Easel import: offline environment)

PAYLOAD = {"prompt": "a red circle", "steps": 1, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"}


def direct_times(root: Path, models: Path, reps: int) -> tuple[list[float], list[float]]:
    """Wall times of process_images for the payload, and of encoding its image as the API does."""
    from modules.api import codec
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images

    args = cmd_args.build_parser().parse_args(["--data-dir", str(root / "direct"), "--models-dir", str(models)])
    shared.initialize(args)
    shared.opts.live_previews_enable = False
    times, encode = [], []
    for i in range(reps + 2):
        p = StableDiffusionProcessingTxt2Img(**{**PAYLOAD, "seed": i}, do_not_save_samples=True, do_not_save_grid=True)
        t0 = time.perf_counter()
        res = process_images(p)
        t1 = time.perf_counter()
        codec.encode_pil_to_base64(res.images[0], res.infotexts[0])
        t2 = time.perf_counter()
        if i >= 2:  # the first runs load the model and warm caches
            times.append(t1 - t0)
            encode.append(t2 - t1)
    shared.model_manager.close()
    return times, encode


def http_times(url: str, reps: int) -> list[float]:
    session = requests.Session()
    times = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        r = session.post(url + "/sdapi/v1/txt2img", json={**PAYLOAD, "seed": i}, timeout=300)
        t1 = time.perf_counter()
        r.raise_for_status()
        if i >= 2:
            times.append(t1 - t0)
    return times


def concurrent_throughput(url: str, clients: int, per_client: int) -> tuple[float, float]:
    """(requests/s with `clients` concurrent clients, requests/s one after another)."""
    def client(k: int, errors: list[str]) -> None:
        session = requests.Session()
        for j in range(per_client):
            r = session.post(url + "/sdapi/v1/txt2img", json={**PAYLOAD, "seed": 1000 * k + j}, timeout=300)
            if r.status_code != 200:
                errors.append(r.text)

    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(k, errors)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parallel = clients * per_client / (time.perf_counter() - t0)
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0][:200]}")
    t0 = time.perf_counter()
    client(99, errors)
    sequential = per_client / (time.perf_counter() - t0)
    return parallel, sequential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=6)
    opts = parser.parse_args()

    from api_server import Server, write_models

    with tempfile.TemporaryDirectory(prefix="easel-bench-api-") as tmp:
        root = Path(tmp)
        models = write_models(root / "models")
        server = Server(root / "server", models, settings={"live_previews_enable": False})
        try:
            http = http_times(server.url, opts.reps)
            parallel, sequential = concurrent_throughput(server.url, opts.clients, opts.per_client)
        finally:
            server.stop()
        direct, encode = direct_times(root, models, opts.reps)

    med = statistics.median
    overhead = med(http) - med(direct) - med(encode)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"direct process_images (1 step, 64x64): median {med(direct) * 1000:.1f} ms")
    print(f"PNG + base64 encoding of the result:  median {med(encode) * 1000:.1f} ms")
    print(f"HTTP /sdapi/v1/txt2img:                median {med(http) * 1000:.1f} ms")
    print(f"API overhead beyond encoding:          {overhead * 1000:.1f} ms per request")
    print(f"throughput: {opts.clients} concurrent clients {parallel:.1f} req/s, one client {sequential:.1f} req/s")


if __name__ == "__main__":
    main()
