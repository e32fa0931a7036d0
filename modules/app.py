"""The web application: one FastAPI app serving the REST API and the Gradio UI.

`create_app` wires the parts the flags ask for, then starts loading the model in the background and
returns: the server answers while the checkpoint loads, and the UI shows the loader's status. With
no checkpoint at all the app starts the same way; the status then says where to put one.

`StartingGate` lets the server listen before the app exists: building it (torch, gradio and
diffusers imports, the UI layout) takes seconds, and during them the gate answers every request
with a "starting" page instead of leaving the browser with a refused connection.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from modules import shared
from modules.version import __version__

log = logging.getLogger(__name__)

ENGINE_PACKAGES = ("diffusers", "transformers")
"""Packages whose top-level import is not thread-safe: both swap themselves for a lazy module while
initialising, and a second thread importing from them at that moment can get "cannot import name".
They are imported in the main thread before the background load thread may import them."""


def create_app(args: argparse.Namespace) -> FastAPI:
    """The app for these flags: the API with --api/--nowebui, the UI unless --nowebui; the default
    checkpoint starts loading in a worker thread before this returns."""
    from modules import script_callbacks, script_loading, scripts

    app = FastAPI(title="Easel", version=__version__, docs_url="/docs", redoc_url="/redoc")
    # Extensions' scripts and settings exist before the UI and the API are built from them.
    script_loading.load_extensions()
    if args.api or args.nowebui:
        from modules.api import api

        api.mount(app, args)
    if not args.nowebui:
        from modules.ui import ui

        ui.mount(app, args)
    if args.api or args.nowebui:
        # The API fills arguments a request leaves out from the scripts' component defaults.
        scripts.scripts_txt2img.ensure_inputs()
        scripts.scripts_img2img.ensure_inputs()
    script_callbacks.app_started_callback(None if args.nowebui else shared.demo, app)
    # After the mounts: the load thread would otherwise compete with them for the interpreter and
    # delay the first page; the model is not needed to serve it.
    start_model_load()
    return app


def start_model_load() -> None:
    """Load the default checkpoint in the background (no-op before shared.initialize)."""
    if shared.model_manager is None:
        return
    for name in ENGINE_PACKAGES:
        if name not in sys.modules:
            importlib.import_module(name)
    shared.model_manager.load_in_background()


def server_address(args: argparse.Namespace) -> tuple[str, int]:
    """(host, port) as A1111 chooses them: loopback unless --listen / --server-name (which wins);
    port 7860, or 7861 for the API-only server, unless --port."""
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or (7861 if args.nowebui else 7860)
    return host, port


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STARTING_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="1"><title>Easel is starting</title>
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#333}</style>
</head><body><h1>Easel is starting&hellip;</h1>
<p>The interface is being prepared. This page reloads by itself when it is ready.</p></body></html>
"""


class StartingGate:
    """An ASGI app that answers at once and hands everything to the real app once it is activated.

    Until then HTTP requests get 503 with `Retry-After: 1` (a self-reloading page for browsers, JSON
    for API clients) and websockets are closed with "try again later". `activate()` is called from
    the thread that built the app: it runs the app's lifespan start-up (Gradio starts its queue
    there) on the server's event loop, then routes requests to it. Server shutdown runs the app's
    lifespan shutdown.
    """

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._app_state: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ready = threading.Event()
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: asyncio.Queue[Message] | None = None
        self._lifespan_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._own_lifespan(receive, send)
            return
        app = self._app
        if app is not None:
            if self._app_state:
                scope["state"] = {**scope.get("state", {}), **self._app_state}
            await app(scope, receive, send)
        elif scope["type"] == "http":
            await self._starting_response(scope, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "starting"})

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self._loop_ready.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._app_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _starting_response(scope: Scope, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        accept = headers.get(b"accept", b"").decode("latin-1")
        if "text/html" in accept or scope.get("path") == "/":
            body, ctype = STARTING_HTML.encode(), b"text/html; charset=utf-8"
        else:
            body = json.dumps({"detail": "Easel is starting; try again in a moment"}).encode()
            ctype = b"application/json"
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    def activate(self, app: ASGIApp, timeout: float | None = None) -> None:
        """Start `app`'s lifespan on the server's loop and route requests to it (call from a worker
        thread, after the server started; blocks until the app's start-up finished)."""
        if not self._loop_ready.wait(timeout):
            raise TimeoutError("the server did not start")
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._app_startup(app), self._loop).result(timeout)

    async def _app_startup(self, app: ASGIApp) -> None:
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        state: dict[str, Any] = {}
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
        to_app, from_app = self._to_app, self._from_app

        async def run() -> None:
            try:
                await app(scope, to_app.get, from_app.put)
            except Exception as e:  # an app without lifespan support raises; uvicorn treats that as "none"
                await from_app.put({"type": "easel.lifespan.unsupported", "message": repr(e)})

        self._lifespan_task = asyncio.create_task(run())
        await to_app.put({"type": "lifespan.startup"})
        reply = await from_app.get()
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"application start-up failed: {reply.get('message', '')}")
        if reply["type"] == "easel.lifespan.unsupported":
            log.debug("app has no lifespan: %s", reply.get("message"))
            self._lifespan_task = None
        self._app_state = state
        self._app = app

    async def _app_shutdown(self) -> None:
        if self._lifespan_task is None or self._to_app is None or self._from_app is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        try:
            reply = await asyncio.wait_for(self._from_app.get(), timeout=10)
        except asyncio.TimeoutError:
            log.warning("application shutdown did not finish in 10 s")
            return
        if reply["type"] == "lifespan.shutdown.failed":
            log.error("application shutdown failed: %s", reply.get("message", ""))
