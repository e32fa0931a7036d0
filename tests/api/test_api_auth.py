"""--api-auth, CORS and server control over HTTP against a real server process."""

from __future__ import annotations

import time

import pytest
import requests
from api_server import Server, write_models

ALICE = ("alice", "s3cret")
BOB = ("bob", "pa:ss")  # a password may contain ':'

ROUTES = [
    ("GET", "/sdapi/v1/samplers"),
    ("GET", "/sdapi/v1/progress"),
    ("GET", "/sdapi/v1/loras"),
    ("POST", "/sdapi/v1/refresh-loras"),
    ("GET", "/sdapi/v1/cmd-flags"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/internal/progress"),
    ("GET", "/file=/etc/hostname"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("auth")
    models = write_models(root / "models")
    server = Server(root / "data", models, "--api-auth", "alice:s3cret,bob:pa:ss", "--cors-allow-origins",
                    "http://friend.test", "--api-server-stop", "--api-log")
    yield server
    server.stop()


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_api_route_family_needs_credentials(srv: Server, method: str, path: str) -> None:
    r = requests.request(method, srv.url + path, timeout=60)
    assert r.status_code == 401, (path, r.status_code)
    assert r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["error"] == "Unauthorized"
    assert requests.request(method, srv.url + path, auth=("alice", "wrong"), timeout=60).status_code == 401
    assert requests.request(method, srv.url + path, auth=("mallory", "s3cret"), timeout=60).status_code == 401
    for creds in (ALICE, BOB):
        assert requests.request(method, srv.url + path, auth=creds, timeout=60).status_code != 401, (path, creds)


def test_generation_with_credentials(srv: Server) -> None:
    payload = {"prompt": "x", "steps": 1, "width": 64, "height": 64}
    assert srv.post("/sdapi/v1/txt2img", json=payload).status_code == 401
    r = srv.post("/sdapi/v1/txt2img", json=payload, auth=ALICE)
    assert r.status_code == 200 and len(r.json()["images"]) == 1


def test_cmd_flags_never_expose_credentials(srv: Server) -> None:
    flags = srv.get("/sdapi/v1/cmd-flags", auth=ALICE).json()
    assert flags["api_auth"] == "<redacted>" and flags["gradio_auth"] is None
    assert "s3cret" not in str(flags) and "pa:ss" not in str(flags)


def test_cors_opens_only_for_the_allowed_origin(srv: Server) -> None:
    preflight = {"Origin": "http://friend.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = requests.options(srv.url + "/sdapi/v1/txt2img", headers=preflight, timeout=30)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://friend.test"
    r = requests.options(srv.url + "/sdapi/v1/txt2img", headers={**preflight, "Origin": "http://evil.test"},
                         timeout=30)
    assert r.headers.get("access-control-allow-origin") is None
    r = srv.get("/sdapi/v1/samplers", headers={"Origin": "http://friend.test"}, auth=ALICE)
    assert r.headers["access-control-allow-origin"] == "http://friend.test"


def test_api_log_and_server_restart_then_stop(srv: Server) -> None:
    assert "/sdapi/v1/samplers" in srv.log()  # --api-log writes one line per request
    assert srv.post("/sdapi/v1/server-restart").status_code == 401
    assert srv.post("/sdapi/v1/server-restart", auth=ALICE).status_code == 200
    # The same process runs its command line again (os.execv): down, then answering once more.
    deadline = time.time() + 120
    while "Restarting:" not in srv.log() and time.time() < deadline:
        time.sleep(0.2)
    assert "Restarting:" in srv.log()
    while time.time() < deadline:
        try:
            if srv.get("/sdapi/v1/samplers", auth=ALICE).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    assert srv.proc.poll() is None
    assert srv.get("/sdapi/v1/samplers", auth=ALICE).status_code == 200
    assert srv.post("/sdapi/v1/server-stop").status_code == 401
    assert srv.post("/sdapi/v1/server-stop", auth=ALICE).status_code == 200
    deadline = time.time() + 30
    while srv.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert srv.proc.poll() is not None, "the server did not stop"
