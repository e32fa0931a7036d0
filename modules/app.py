"""The web application: one FastAPI app serving the REST API and the Gradio UI.

`create_app` wires the parts the flags ask for. The model starts loading in the background before
the app is returned, so the page is served while the checkpoint loads.
"""

from __future__ import annotations

import argparse
import logging

from fastapi import FastAPI

from modules import shared
from modules.version import __version__

log = logging.getLogger(__name__)


def create_app(args: argparse.Namespace) -> FastAPI:
    app = FastAPI(title="Easel", version=__version__, docs_url="/docs", redoc_url="/redoc")
    if shared.model_manager is not None:
        shared.model_manager.load_in_background()
    if args.api or args.nowebui:
        from modules.api import api

        api.mount(app, args)
    if not args.nowebui:
        from modules.ui import ui

        ui.mount(app, args)
    return app


def server_address(args: argparse.Namespace) -> tuple[str, int]:
    """(host, port) as A1111 chooses them: loopback unless --listen / --server-name."""
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or (7861 if args.nowebui else 7860)
    return host, port
