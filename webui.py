"""Start Easel: parse flags, prepare settings and models, serve the UI and/or API with uvicorn.

`launch.py` prepares the environment first and then calls `start()`; running this file directly
skips the preparation (A1111's `python webui.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import modules  # noqa: F401  (offline environment before anything imports huggingface_hub)
from modules import cmd_args, shared

log = logging.getLogger("webui")

SHARE_REFUSED = (
    "--share is not supported: Easel does not open public tunnels. To reach it from other machines, "
    "start it with --listen (with --gradio-auth / --api-auth) and put your own reverse proxy in front."
)

def refusal(args: argparse.Namespace) -> str | None:
    """Why these flags cannot be served, or None. Checked before anything is prepared or loaded."""
    if args.share:
        return SHARE_REFUSED
    if args.port is not None and not 0 < args.port < 65536:
        return f"--port {args.port}: not a TCP port (1-65535)"
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be bound, or None. Checked before the app is built, so a busy port
    is reported at once rather than after the imports; uvicorn binds again right after."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            # As uvicorn binds: a port left in TIME_WAIT by a previous run is usable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            return f"cannot serve on {host}:{port}: {e.strerror or e} (is another server using that port? see --port)"
    return None


def check_args(args: argparse.Namespace) -> None:
    """Exit with status 2 and a clear message when the flags ask for something Easel refuses."""
    message = refusal(args)
    if message is not None:
        print(f"webui: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=getattr(logging, args.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def local_url(host: str, port: int) -> str:
    """The URL to open on this machine: a wildcard bind is reached through loopback."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def should_open_browser(args: argparse.Namespace) -> bool:
    """--autolaunch (or the `auto_launch_browser` setting), except where no browser can show up:
    CI, or a Linux session without a display."""
    setting = str(getattr(shared.opts, "auto_launch_browser", "Disable") or "Disable")
    wanted = bool(args.autolaunch) or setting == "Remote" or (setting == "Local" and not cmd_args.is_non_local(args))
    if not wanted:
        return False
    if os.environ.get("CI"):
        return False
    return not (sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))


class _Startup:
    """Builds the app in a worker thread while the server already answers (see app.StartingGate)."""

    def __init__(self, args: argparse.Namespace, gate: Any, server: Any, url: str, started_at: float) -> None:
        self.args, self.gate, self.server, self.url, self.started_at = args, gate, server, url, started_at
        self.failed = False

    def run(self) -> None:
        from modules.app import create_app

        try:
            shared.initialize(self.args)
            app = create_app(self.args)
            self.gate.activate(app)
        except BaseException:
            log.exception("start-up failed")
            self.failed = True
            self.server.should_exit = True
            return
        # Printed once the real app serves, as A1111 does: whoever waits for this line (or follows
        # the link) gets the interface, not the "starting" page.
        print(f"Running on local URL:  {self.url}", flush=True)
        log.info("ready after %.1f s", time.monotonic() - self.started_at)
        if should_open_browser(self.args):
            import webbrowser

            webbrowser.open(self.url)


def start(args: argparse.Namespace, *, started_at: float | None = None) -> int:
    """Serve with already-parsed flags; returns the exit status.

    The server listens first and answers with a "starting" page while the settings, the device
    policy and the app (UI, API) are prepared in a worker thread; the model then loads in the
    background (create_app starts it).
    """
    started_at = time.monotonic() if started_at is None else started_at
    check_args(args)
    configure_logging(args)
    from modules.app import StartingGate, server_address

    host, port = server_address(args)
    if args.exit:
        shared.initialize(args)
        print("--exit: environment ready; not starting the server", flush=True)
        return 0
    problem = port_problem(host, port)
    if problem is not None:
        print(f"webui: error: {problem}", file=sys.stderr, flush=True)
        return 1

    import uvicorn

    gate = StartingGate()
    config = uvicorn.Config(gate, host=host, port=port, log_level="debug" if args.log_level == "DEBUG" else "warning",
                            timeout_keep_alive=args.timeout_keep_alive, lifespan="on")
    server = uvicorn.Server(config)
    from modules import restart

    restart.attach(server)  # "Apply and restart UI" stops this server, then the process re-executes
    startup = _Startup(args, gate, server, local_url(host, port), started_at)
    # A daemon thread: Ctrl+C during start-up ends the process without waiting for the imports.
    threading.Thread(target=startup.run, name="easel-startup", daemon=True).start()
    server.run()
    if restart.restart_requested():
        restart.exec_restart()
    if startup.failed:
        return 1
    # uvicorn returns normally after a failed bind, having logged why; say so in the exit status.
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    started_at = time.monotonic()
    from modules import script_loading

    # Extensions' preload.py add their flags before the command line is parsed.
    args, _parser = script_loading.parse_args_with_extensions(argv)
    return start(args, started_at=started_at)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
