"""Restarting the server process (the Extensions tab's "Apply and restart UI").

Extensions are imported into the process, so enabling, disabling or updating one takes effect only
in a fresh process. `webui.start()` attaches its uvicorn server here; a restart request first lets
that server shut down gracefully (the browser gets its answer, open streams are closed, the port is
released), then the main thread replaces the process with a new run of the same command line
(`os.execv`: same process id, flags, environment and working folder). A process that was not started
by `webui.start()` (tests building the app in-process) or that runs on Windows, where `execv` starts
a detached process instead of replacing this one, is not restartable: the tab then says the change
applies at the next start.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, NoReturn

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5
"""How long open connections (the page's event streams) may delay the restart."""

_server: Any = None
_requested = threading.Event()


def attach(server: Any) -> None:
    """Make `server` (a uvicorn.Server the main thread runs) the one a restart stops."""
    global _server
    _server = server
    _requested.clear()


def detach() -> None:
    global _server
    _server = None


def is_restartable() -> bool:
    return _server is not None and os.name != "nt"


def restart_requested() -> bool:
    return _requested.is_set()


def request_restart(delay: float = 0.5) -> None:
    """Stop the server after `delay` seconds (time for the current answer to reach the browser);
    `webui.start()` then calls `exec_restart()`."""
    server = _server
    if server is None or not is_restartable():
        raise RuntimeError("this process cannot restart itself; restart it by hand")
    _requested.set()

    def stop() -> None:
        log.info("restarting: stopping the server")
        server.config.timeout_graceful_shutdown = GRACEFUL_SHUTDOWN_S
        server.should_exit = True

    timer = threading.Timer(delay, stop)
    timer.daemon = True
    timer.start()


def command() -> list[str]:
    """The command line this process was started with, interpreter flags included."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return [sys.executable, *argv[1:]]


def exec_restart() -> NoReturn:
    """Replace this process with a fresh run of its command line (call once the server stopped)."""
    cmd = command()
    print(f"Restarting: {' '.join(cmd)}", flush=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
