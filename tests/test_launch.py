"""The launcher and server entry: flag errors, refusals, --exit, extension installers, server address,
and a real server process answering HTTP while its model loads."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.requests import Request

import launch
import webui
from modules import cmd_args, launch_utils
from modules.app import server_address
from modules.paths import script_path

REPO = script_path


def _env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.pop("COMMANDLINE_ARGS", None)
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "CI": "1"})
    env.update(extra)
    return env


def _run(*argv: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _args(*argv: str) -> argparse.Namespace:
    return cmd_args.build_parser().parse_args(list(argv))


# --- flag errors and refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["webui.py", "launch.py"])
def test_unknown_flag_names_close_match(entry: str) -> None:
    res = _run(entry, "--lisen")
    assert res.returncode == 2
    assert "--lisen" in res.stderr
    assert "--listen" in res.stderr


def test_unknown_flag_in_commandline_args_env() -> None:
    res = _run("launch.py", "--exit", "--skip-install", COMMANDLINE_ARGS="--no-halff")
    assert res.returncode == 2
    assert "--no-half" in res.stderr


@pytest.mark.parametrize("entry", ["webui.py", "launch.py"])
def test_share_is_refused_before_serving(entry: str, tmp_path: Path) -> None:
    res = _run(entry, "--share", "--data-dir", str(tmp_path))
    assert res.returncode != 0
    assert "--share is not supported" in res.stderr
    assert "--listen" in res.stderr
    assert "Running on local URL" not in res.stdout
    # Refused before anything was prepared: no settings or cache were written to the data dir.
    assert list(tmp_path.iterdir()) == []


def test_refusal_rules() -> None:
    assert webui.refusal(_args()) is None
    assert webui.refusal(_args("--listen", "--port", "8000")) is None
    assert "not supported" in (webui.refusal(_args("--share")) or "")
    assert "not a TCP port" in (webui.refusal(_args("--port", "70000")) or "")


def test_memory_flags_parse() -> None:
    args = _args("--medvram", "--medvram-sdxl", "--lowvram")
    assert args.medvram and args.medvram_sdxl and args.lowvram
    assert not any(getattr(_args(), name) for name in ("medvram", "medvram_sdxl", "lowvram"))


# --- server address ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    ([], ("127.0.0.1", 7860)),
    (["--nowebui"], ("127.0.0.1", 7861)),
    (["--listen"], ("0.0.0.0", 7860)),
    (["--listen", "--port", "9000"], ("0.0.0.0", 9000)),
    (["--server-name", "192.168.1.5"], ("192.168.1.5", 7860)),
    (["--server-name", "myhost", "--listen"], ("myhost", 7860)),
    (["--nowebui", "--port", "8080"], ("127.0.0.1", 8080)),
])
def test_server_address(argv: list[str], expected: tuple[str, int]) -> None:
    assert server_address(_args(*argv)) == expected


def test_local_url_for_wildcard_binds() -> None:
    assert webui.local_url("0.0.0.0", 7860) == "http://127.0.0.1:7860"
    assert webui.local_url("127.0.0.1", 7861) == "http://127.0.0.1:7861"
    assert webui.local_url("::1", 7860) == "http://[::1]:7860"


def test_browser_is_not_opened_in_ci_or_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    assert not webui.should_open_browser(_args("--autolaunch"))
    monkeypatch.delenv("CI")
    monkeypatch.setenv("DISPLAY", ":0")
    assert webui.should_open_browser(_args("--autolaunch"))
    assert not webui.should_open_browser(_args())
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("DISPLAY")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        assert not webui.should_open_browser(_args("--autolaunch"))


# --- --exit and environment preparation -------------------------------------------------------------

def test_exit_prepares_and_exits(tmp_path: Path) -> None:
    res = _run("launch.py", "--exit", "--skip-install", "--data-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "Exiting because of --exit argument" in res.stdout
    assert "Running on local URL" not in res.stdout


def _write_extension(root: Path, name: str, body: str) -> Path:
    ext = root / name
    ext.mkdir(parents=True)
    (ext / "install.py").write_text(textwrap.dedent(body), encoding="utf-8")
    return ext


GOOD_INSTALLER = """
    import json, os, sys
    from pathlib import Path
    import launch
    import helper_in_extension_dir  # the extension's own folder is importable
    ok = {
        "pytest_installed": launch.is_installed("pytest"),
        "missing": launch.is_installed("no_such_package_xyz"),
        "python": launch.python,
        "git": launch.git,
        "index_url": launch.index_url,
        "run": launch.run([sys.executable, "-c", "print(40 + 2)"]).strip(),
        "run_pip": callable(launch.run_pip),
        "skip_install": launch.args.skip_install,
        "data_dir": launch.args.data_dir,
        "cwd": os.getcwd(),
    }
    Path(__file__).with_name("ran.json").write_text(json.dumps(ok))
    print("good extension installed")
"""


def test_extension_installers_run_with_launch_module(tmp_path: Path) -> None:
    data = tmp_path / "data"
    exts = data / "extensions"
    good = _write_extension(exts, "good-ext", GOOD_INSTALLER)
    (good / "helper_in_extension_dir.py").write_text("", encoding="utf-8")
    _write_extension(exts, "bad-ext", "raise RuntimeError('dependency xyz could not be built')\n")
    disabled = _write_extension(exts, "off-ext", "open(__file__ + '.ran', 'w').close()\n")
    (exts / "no-installer").mkdir()
    (data / "config.json").write_text(json.dumps({"disabled_extensions": ["off-ext"]}), encoding="utf-8")

    res = _run("launch.py", "--exit", "--data-dir", str(data), "--no-hashing")
    assert res.returncode == 0, res.stderr
    # The failing installer is reported by name with its error, and start-up went on to the end.
    assert "bad-ext" in res.stderr
    assert "dependency xyz could not be built" in res.stderr
    assert "Exiting because of --exit argument" in res.stdout
    assert "good extension installed" in res.stdout

    ran = json.loads((good / "ran.json").read_text())
    assert ran["pytest_installed"] is True
    assert ran["missing"] is False
    assert Path(ran["python"]).resolve() == Path(sys.executable).resolve()
    assert ran["git"]
    assert ran["run"] == "42"
    assert ran["run_pip"] is True
    assert ran["skip_install"] is False
    assert Path(ran["data_dir"]).resolve() == data.resolve()  # the launcher's flags reach install.py
    assert Path(ran["cwd"]).resolve() == REPO.resolve()
    assert not (disabled / "install.py.ran").exists()


def test_skip_install_runs_no_installer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ext = _write_extension(data / "extensions", "marker-ext", "open(__file__ + '.ran', 'w').close()\n")
    res = _run("launch.py", "--exit", "--skip-install", "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    assert not (ext / "install.py.ran").exists()
    res = _run("launch.py", "--exit", "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    assert (ext / "install.py.ran").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_update_all_extensions_pulls_git_checkouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def git(*argv: str, cwd: Path) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main",
                        *argv], cwd=cwd, check=True, capture_output=True)

    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", cwd=origin)
    (origin / "version.txt").write_text("1")
    git("add", ".", cwd=origin)
    git("commit", "-m", "v1", cwd=origin)
    user = tmp_path / "extensions"
    user.mkdir()
    git("clone", str(origin), "my-ext", cwd=user)
    git("clone", str(origin), "orphan-ext", cwd=user)
    (user / "plain-ext").mkdir()
    (origin / "version.txt").write_text("2")
    git("commit", "-am", "v2", cwd=origin)
    git("remote", "set-url", "origin", str(tmp_path / "gone"), cwd=user / "orphan-ext")

    exts = launch_utils.list_extensions(user, tmp_path / "no-builtin", {}, _args())
    failed = launch_utils.update_extensions(exts)
    assert (user / "my-ext" / "version.txt").read_text() == "2"
    assert failed == ["orphan-ext"]
    assert "orphan-ext" in capsys.readouterr().err


def test_list_extensions_honours_settings_and_flags(tmp_path: Path) -> None:
    user, builtin = tmp_path / "extensions", tmp_path / "extensions-builtin"
    for folder, names in ((user, ["b-ext", "a-ext", "off"]), (builtin, ["core"])):
        for name in names:
            (folder / name).mkdir(parents=True)
    (user / ".hidden").mkdir()

    def names(settings: dict, *flags: str) -> list[str]:
        return [e.name for e in launch_utils.list_extensions(user, builtin, settings, _args(*flags))]

    assert names({}) == ["core", "a-ext", "b-ext", "off"]
    assert names({"disabled_extensions": ["off"]}) == ["core", "a-ext", "b-ext"]
    assert names({"disable_all_extensions": "extra"}) == ["core"]
    assert names({"disable_all_extensions": "all"}) == []
    assert names({}, "--disable-extra-extensions") == ["core"]
    assert names({}, "--disable-all-extensions") == []


def test_requirements_met(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\npytest>=1  # inline comment\n--prefer-binary\n\n", encoding="utf-8")
    assert launch_utils.requirements_met(req)
    req.write_text("pytest<1\n", encoding="utf-8")
    assert not launch_utils.requirements_met(req)
    req.write_text("no-such-package-xyz>=1\n", encoding="utf-8")
    assert not launch_utils.requirements_met(req)
    req.write_text('no-such-package-xyz>=1; python_version < "3"\npytest\n', encoding="utf-8")
    assert launch_utils.requirements_met(req)


def test_repo_requirements_are_met_so_later_starts_skip_pip() -> None:
    assert launch_utils.requirements_met(launch_utils.REQUIREMENTS_FILE)


def test_run_reports_failures() -> None:
    assert launch_utils.run([sys.executable, "-c", "print('hi')"]).strip() == "hi"
    with pytest.raises(RuntimeError, match="could not do it") as err:
        launch_utils.run([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
                         errdesc="could not do it")
    assert "Error code: 3" in str(err.value)
    assert "boom" in str(err.value)


def test_launch_module_offers_a1111_helpers() -> None:
    for name in ("is_installed", "run_pip", "run", "git", "python", "index_url", "git_clone", "repo_dir",
                 "commit_hash", "prepare_environment", "args"):
        assert hasattr(launch, name), name
    assert launch.is_installed("pytest")


# --- webui.sh ------------------------------------------------------------------------------------------

def _shell_env(**extra: str) -> dict[str, str]:
    """webui.sh pointed at the interpreter running the tests: its venv, or no venv at all."""
    if sys.prefix != sys.base_prefix:
        return _env(venv_dir=sys.prefix, **extra)
    return _env(venv_dir="-", python_cmd=sys.executable, **extra)


@pytest.mark.skipif(sys.platform == "win32", reason="shell launcher")
def test_webui_sh_prepares_and_exits(tmp_path: Path) -> None:
    env = _shell_env(EASEL_ALLOW_ROOT="1")
    res = subprocess.run(["bash", "webui.sh", "--exit", "--skip-install", "--data-dir", str(tmp_path)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "Exiting because of --exit argument" in res.stdout
    # Flags still go through the same strict parser.
    res = subprocess.run(["bash", "webui.sh", "-f", "--exit", "--lisen"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert "--listen" in res.stderr


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "geteuid"), reason="shell launcher")
def test_webui_sh_root_rule(tmp_path: Path) -> None:
    env = _shell_env()
    env.pop("EASEL_ALLOW_ROOT", None)
    res = subprocess.run(["bash", "webui.sh", "--exit", "--skip-install", "--data-dir", str(tmp_path)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    if os.geteuid() == 0:
        assert res.returncode == 1
        assert "must not be launched as root" in res.stderr
        res = subprocess.run(["bash", "webui.sh", "-f", "--exit", "--skip-install", "--data-dir", str(tmp_path)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr


# --- the starting gate ------------------------------------------------------------------------------

def test_starting_gate_answers_then_hands_over_with_lifespan() -> None:
    import contextlib

    from fastapi import FastAPI

    from modules.app import StartingGate

    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        events.append("startup")
        yield {"token": "from-lifespan"}
        events.append("shutdown")

    inner = FastAPI(lifespan=lifespan)

    @inner.get("/hello")
    def hello(request: Request) -> dict:
        return {"hello": "world", "state": request.state.token}

    async def request(gate: StartingGate, path: str, accept: str = "*/*") -> tuple[int, dict, bytes]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
                 "headers": [(b"accept", accept.encode()), (b"host", b"test")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80), "state": {}}
        await gate(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body

    async def scenario() -> None:
        gate = StartingGate()
        to_gate: asyncio.Queue = asyncio.Queue()
        from_gate: asyncio.Queue = asyncio.Queue()
        lifespan_task = asyncio.create_task(gate({"type": "lifespan", "state": {}}, to_gate.get, from_gate.put))
        await to_gate.put({"type": "lifespan.startup"})
        assert (await from_gate.get())["type"] == "lifespan.startup.complete"

        status, headers, body = await request(gate, "/", accept="text/html")
        assert status == 503 and headers["retry-after"] == "1"
        assert b"Easel is starting" in body and "text/html" in headers["content-type"]
        status, headers, body = await request(gate, "/sdapi/v1/sd-models", accept="application/json")
        assert status == 503 and json.loads(body)["detail"].startswith("Easel is starting")
        assert not gate.ready and events == []

        await asyncio.to_thread(gate.activate, inner, 10)  # as the start-up thread does
        assert gate.ready and events == ["startup"]
        status, _, body = await request(gate, "/hello")
        assert status == 200
        assert json.loads(body) == {"hello": "world", "state": "from-lifespan"}

        await to_gate.put({"type": "lifespan.shutdown"})
        assert (await from_gate.get())["type"] == "lifespan.shutdown.complete"
        await lifespan_task
        assert events == ["startup", "shutdown"]

    # In a thread of its own: browser tests earlier in the session may leave an event loop running in
    # the main thread (Playwright's sync API), and asyncio.run refuses to nest.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(timeout=60)


def test_start_up_failure_stops_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while building the app ends the server (exit status 1) instead of leaving it on the
    "starting" page forever."""
    from modules import shared

    def broken_initialize(args: argparse.Namespace) -> None:
        raise RuntimeError("settings file is unreadable")

    monkeypatch.setattr(shared, "initialize", broken_initialize)
    server = argparse.Namespace(should_exit=False)
    startup = webui._Startup(_args(), gate=None, server=server, url="http://127.0.0.1:1", started_at=0.0)
    startup.run()
    assert startup.failed
    assert server.should_exit


# --- the real server -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Server:
    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.log = cwd / "server.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen([sys.executable, str(REPO / "webui.py"), *argv], cwd=cwd, env=_env(),
                                     stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_http(self, url: str, timeout: float) -> list[int]:
        """Poll until `url` answers 200; returns the statuses seen on the way."""
        start = time.monotonic()
        seen: list[int] = []
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, _ = _get(url, timeout=2)
            except OSError:
                status = 0
            if status:
                seen.append(status)
            if status == 200:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"no 200 from {url} within {timeout} s (saw {sorted(set(seen))}):\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float) -> str:
        """The output once it holds `text` (it may come a moment after the app answers)."""
        deadline = time.monotonic() + timeout
        while text not in self.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        out = self.output()
        assert text in out, out
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture()
def server_tree(tmp_path: Path, tiny_models_dir: Path) -> Path:
    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    src = tiny_models_dir / "Stable-diffusion"
    shutil.copy2(src / "tiny-sd1.safetensors", models)
    shutil.copytree(src / "tiny-sd1.config", models / "tiny-sd1.config")
    return tmp_path


def _json(url: str) -> object:
    status, body = _get(url, timeout=10)
    assert status == 200, body[:500]
    return json.loads(body)


@pytest.mark.slow
def test_api_server_answers_and_loads_model_in_background(server_tree: Path) -> None:
    port = _free_port()
    server = _Server(["--nowebui", "--port", str(port), "--data-dir", str(server_tree)], server_tree)
    try:
        seen = server.wait_http(f"http://127.0.0.1:{port}/docs", timeout=90)
        assert set(seen) <= {503, 200}  # "starting" answers, then the app
        # Printed just after the app takes over from the "starting" answers.
        server.wait_output(f"Running on local URL:  http://127.0.0.1:{port}", timeout=10)
        status, body = _get(f"http://127.0.0.1:{port}/openapi.json")
        assert status == 200
        assert "/sdapi/v1/txt2img" in json.loads(body)["paths"]
        models = _json(f"http://127.0.0.1:{port}/sdapi/v1/sd-models")
        assert [m["model_name"] for m in models] == ["tiny-sd1"]  # type: ignore[index]
        # The background load finishes by itself, without any request asking for the model.
        deadline = time.monotonic() + 60
        options: dict = {}
        while time.monotonic() < deadline:
            options = _json(f"http://127.0.0.1:{port}/sdapi/v1/options")  # type: ignore[assignment]
            if "tiny-sd1" in str(options.get("sd_model_checkpoint")):
                break
            time.sleep(0.2)
        assert "tiny-sd1" in str(options.get("sd_model_checkpoint")), options
    finally:
        server.stop()


@pytest.mark.slow
def test_server_starts_without_any_checkpoint(tmp_path: Path) -> None:
    port = _free_port()
    server = _Server(["--nowebui", "--port", str(port), "--data-dir", str(tmp_path)], tmp_path)
    try:
        server.wait_http(f"http://127.0.0.1:{port}/docs", timeout=90)
        assert _json(f"http://127.0.0.1:{port}/sdapi/v1/sd-models") == []
        # The log says where a checkpoint goes.
        out = server.wait_output("no checkpoint found", timeout=30)
        assert str(tmp_path / "models" / "Stable-diffusion") in out
    finally:
        server.stop()


def test_port_in_use_is_reported_before_start_up(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _run("webui.py", "--nowebui", "--port", str(port), "--data-dir", str(tmp_path), timeout=120)
    assert res.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in res.stderr
    assert "Running on local URL" not in res.stdout
    assert list(tmp_path.iterdir()) == []  # nothing was initialised
