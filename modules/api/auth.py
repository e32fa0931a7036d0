"""Who may call the API and how much they may send: HTTP Basic auth, a body size limit, CORS, and
A1111's `X-Process-Time` header and `--api-log` lines.

`ApiGuard` is plain ASGI middleware over the whole app and acts on the API's path families only
(`/sdapi`, `/api`, `/internal`, the file and extra-network routes, the API docs); the UI's own
routes are left to the UI and `--gradio-auth`. Unlike A1111, whose `--api-auth` covers only some
routes, every route of those families is protected, websockets included.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

log = logging.getLogger("easel.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIXES = ("/sdapi/", "/api/", "/internal/", "/file=", "/sd_extra_networks/")
PROTECTED_EXACT = ("/sdapi", "/api", "/internal", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
REALM = "Easel API"


def parse_credentials(text: str | None) -> list[tuple[str, str]]:
    """`"user:pass[,user2:pass2]"` -> pairs; a password may itself contain ':'."""
    pairs = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep:
            raise ValueError("--api-auth entries must look like user:password")
        pairs.append((user, password))
    return pairs


def is_protected_path(path: str) -> bool:
    return path in PROTECTED_EXACT or path.startswith(PROTECTED_PREFIXES)


def check_basic_auth(header: str | None, credentials: list[tuple[str, str]]) -> bool:
    """True when an `Authorization: Basic ...` header matches one of the credentials. Every pair is
    compared in constant time, so timing tells nothing about which user or how much matched."""
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    user, sep, password = decoded.partition(":")
    if not sep:
        return False
    ok = False
    for known_user, known_password in credentials:
        user_ok = hmac.compare_digest(user.encode(), known_user.encode())
        password_ok = hmac.compare_digest(password.encode(), known_password.encode())
        ok |= user_ok & password_ok
    return ok


def _json_message(status: int, error: str, detail: str) -> bytes:
    return json.dumps({"error": error, "detail": detail, "body": None, "errors": detail}).encode()


class _BodyTooLarge(Exception):
    pass


class ApiGuard:
    """ASGI middleware: Basic auth and a body limit on API paths; process time header; request log."""

    def __init__(self, app: ASGIApp, *, credentials: list[tuple[str, str]] | None = None,
                 max_body: Callable[[], int] | None = None, log_requests: bool = False) -> None:
        self.app = app
        self.credentials = list(credentials or [])
        self.max_body = max_body
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        protected = is_protected_path(path)
        if protected and self.credentials and not self._authorized(scope):
            await self._refuse(scope, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        status_holder = {"status": 0, "started": False}
        limit = self.max_body() if (protected and self.max_body is not None) else None
        if limit is not None:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _send_json(send, 413, _json_message(413, "RequestTooLarge",
                                                          f"the request body is {int(length)} bytes; the limit is "
                                                          f"{limit} (setting api_max_request_mb)"))
                self._log(scope, 413, start)
                return
            receive = _limited(receive, limit)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-process-time", f"{time.perf_counter() - start:.4f}".encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except _BodyTooLarge:
            if not status_holder["started"]:
                await _send_json(send, 413, _json_message(413, "RequestTooLarge",
                                                          f"the request body is over the limit of {limit} bytes "
                                                          "(setting api_max_request_mb)"))
                status_holder["status"] = 413
            else:
                raise
        finally:
            if protected:
                self._log(scope, status_holder["status"], start)

    def _authorized(self, scope: Scope) -> bool:
        if scope["type"] == "http" and scope.get("method") == "OPTIONS" and _header(scope, b"origin"):
            return True  # CORS preflights carry no credentials; the CORS middleware answers them
        return check_basic_auth(_header(scope, b"authorization"), self.credentials)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = _json_message(401, "Unauthorized", "this route needs HTTP Basic credentials (--api-auth)")
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", f'Basic realm="{REALM}"'.encode()),
        ]})
        await send({"type": "http.response.body", "body": body})

    def _log(self, scope: Scope, status: int, start: float) -> None:
        if self.log_requests:
            client = scope.get("client") or ("-", 0)
            log.info("API %s %s %s %s %.3fs", client[0], scope.get("method", "WS"), scope.get("path", ""), status,
                     time.perf_counter() - start)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message

    return wrapped


def install(app: FastAPI, args: Any, *, max_body: Callable[[], int]) -> None:
    """Add the guard and, when asked for with --cors-allow-origins[-regex], CORS (closed otherwise)."""
    credentials = parse_credentials(getattr(args, "api_auth", None))
    app.add_middleware(ApiGuard, credentials=credentials, max_body=max_body,
                       log_requests=bool(getattr(args, "api_log", None)))
    origins = [o.strip() for o in (getattr(args, "cors_allow_origins", None) or "").split(",") if o.strip()]
    regex = getattr(args, "cors_allow_origins_regex", None)
    if origins or regex:
        # Added after the guard, so it is the outer layer and answers preflights itself.
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=regex, allow_methods=["*"],
                           allow_credentials=True, allow_headers=["*"], expose_headers=["X-Process-Time"])
