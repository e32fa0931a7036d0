"""The A1111-compatible REST API (`/sdapi/v1/...`) and Easel's jobs API (`/api/v1/jobs`).

`mount(app, args)` adds both to the app, with A1111's error responses, HTTP Basic auth
(`--api-auth`), a request size limit, CORS (closed unless `--cors-allow-origins`) and `--api-log`.
"""

from __future__ import annotations

import argparse
import logging

from fastapi import FastAPI

from modules import shared
from modules.api import auth, errors

log = logging.getLogger(__name__)


def max_body_bytes() -> int:
    """The request body limit, read per request so a settings change applies at once."""
    return int(getattr(shared.opts, "api_max_request_mb", 64) or 64) * 1024 * 1024


def mount(app: FastAPI, args: argparse.Namespace) -> None:
    """Serve the `/sdapi/v1` API and the jobs API on `app`, with error handling, auth and CORS."""
    debug = str(getattr(args, "api_log", "") or "").lower() == "debug"
    errors.install_error_handlers(app, debug=debug)
    # Imported here, not at module level: the route modules pull in the engine (torch, diffusers).
    from modules.api import jobs_api, sdapi

    app.include_router(sdapi.build_router(args))
    app.include_router(jobs_api.build_router(debug=debug))
    auth.install(app, args, max_body=max_body_bytes)
    if getattr(args, "api_log", None):
        logging.getLogger("easel.api").setLevel(logging.INFO)
