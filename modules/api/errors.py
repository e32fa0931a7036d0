"""API errors in A1111's JSON shape: `{"error": <type>, "detail": <message>, "body": ..., "errors": <str>}`.

Handlers are installed on the whole app (as A1111 does), so every route answers bad input with a
status and a message instead of a traceback. Tracebacks go to the log; a response carries one only
when the server runs with `--api-log debug`.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ApiError(Exception):
    """An error the API answers with `status` and a message; `error` names its kind for clients."""

    def __init__(self, status: int, detail: str, error: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.error = error or type(self).__name__


def error_body(error: str, detail: Any, errors: str, body: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": detail, "body": body, "errors": errors}


def _field_path(loc: Any) -> str:
    return ".".join(str(part) for part in loc) if isinstance(loc, (list, tuple)) else str(loc)


def status_for_exception(e: BaseException) -> int:
    """The HTTP status an exception raised by the engine or the model manager stands for."""
    from modules.engine.samplers import UnknownSamplerError
    from modules.model_manager.manager import CheckpointNotFoundError, VaeNotFoundError
    from modules.processing import InvalidParameterError, NoModelError

    if isinstance(e, ApiError):
        return e.status
    if isinstance(e, (CheckpointNotFoundError, VaeNotFoundError)):
        return 404
    if isinstance(e, UnknownSamplerError):
        return 400
    if isinstance(e, InvalidParameterError):
        return 422
    if isinstance(e, NoModelError):
        return 503
    return 500


def install_error_handlers(app: FastAPI, *, debug: bool = False) -> None:
    """Answer every error with A1111's error object; 500s say only what failed unless `debug`."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(status_code=e.status, content=error_body(e.error, e.detail, e.detail))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        detail = e.detail if e.detail is not None else ""
        return JSONResponse(status_code=e.status_code, content=error_body("HTTPException", detail, str(detail)),
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        # `detail` keeps FastAPI's list of {loc, msg, type} so clients written against FastAPI's
        # default 422 still read it; `errors` says the same in one line, field paths first.
        problems = jsonable_encoder(e.errors(), custom_encoder={BaseException: str})
        for item in problems:
            item.pop("input", None)
            item.pop("url", None)
            item.pop("ctx", None)
        summary = "; ".join(f"{_field_path(p.get('loc'))}: {p.get('msg')}" for p in problems)
        return JSONResponse(status_code=422, content=error_body("RequestValidationError", problems, summary))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, e: Exception) -> JSONResponse:
        return exception_response(e, debug=debug, path=request.url.path)


def exception_response(e: BaseException, *, debug: bool, path: str = "") -> JSONResponse:
    """The response for an exception that escaped a route (or a job): its mapped status, its message."""
    status = status_for_exception(e)
    message = str(e) or type(e).__name__
    if status >= 500:
        log.error("API error on %s: %s\n%s", path, message,
                  "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    content = error_body(type(e).__name__ if not isinstance(e, ApiError) else e.error, message, message)
    if debug:
        content["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return JSONResponse(status_code=status, content=content)


def handled(debug: bool) -> Callable[[F], F]:
    """Turn exceptions escaping a route into A1111's error response with the mapped status, without
    the traceback (unless debug). Starlette's last-resort handler would also answer, but re-raises
    into the server log as an unhandled crash; routes answer for themselves instead."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def inner(*a: Any, **kw: Any) -> Any:
            try:
                return await fn(*a, **kw)
            except (ApiError, StarletteHTTPException, RequestValidationError):
                raise
            except Exception as e:
                return exception_response(e, debug=debug, path=fn.__name__)

        return inner  # type: ignore[return-value]

    return wrap
