"""The asynchronous jobs API (`/api/v1/jobs`), beyond A1111: submit and get an id at once, follow
one job's own status, position and progress, fetch its result, cancel it, or stream its events.

- `POST /api/v1/jobs` with a txt2img or img2img body (the same fields as `/sdapi/v1/txt2img` and
  `/img2img`; `?kind=` picks, else a body with `init_images` is img2img) -> 202 `{id, kind, status,
  position, urls}`; 503 when the queue is full.
- `GET /api/v1/jobs` recent jobs, newest first; `GET /api/v1/jobs/{id}` one job, with `result`
  (`{images, parameters, info}`) once done; `DELETE /api/v1/jobs/{id}` cancels a queued or running job.
- `GET /api/v1/jobs/{id}/events`: server-sent events `status`, `progress` and `preview` (a base64
  PNG) until the job has finished.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from modules.api import adapter, codec, runner
from modules.api import models as m
from modules.api.errors import ApiError, handled, status_for_exception
from modules.jobs.queue import Job, JobNotFoundError, get_queue

KEEPALIVE_S = 15.0


def _get(job_id: str) -> Job:
    try:
        return get_queue().get(job_id)
    except JobNotFoundError:
        raise ApiError(404, f"job {job_id!r} not found (finished jobs are kept for a while, then forgotten)",
                       "JobNotFound") from None


def _parse(kind: str, body: dict[str, Any]) -> m.GenerationRequest:
    model = m.StableDiffusionImg2ImgProcessingAPI if kind == "img2img" else m.StableDiffusionTxt2ImgProcessingAPI
    try:
        return model.model_validate(body)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors()]
        raise RequestValidationError(errors) from None


def job_view(job: Job, *, with_result: bool = False) -> dict[str, Any]:
    """A job's summary plus its queue position; the result (encoded once) when asked for and done."""
    view = job.summary()
    view["position"] = get_queue().position(job)
    if job.status == "failed":
        view["error_type"] = job.error_type
        view["status_code"] = status_for_exception(job.exception) if job.exception is not None else 500
    if with_result and job.status in ("done", "cancelled") and job.result is not None:
        view["result"] = result_of(job)
    return view


def result_of(job: Job) -> dict[str, Any] | None:
    cached = job.meta.get("response")
    if cached is not None:
        return cached
    req, p = job.meta.get("request"), job.meta.get("processing")
    processed = job.result
    if req is not None and p is not None:
        response = adapter.generation_response(req, p, processed)
    elif hasattr(processed, "images") and hasattr(processed, "js"):
        response = {"images": adapter.response_images(processed, send_images=True), "parameters": {},
                    "info": processed.js()}
    else:
        return None
    job.meta["response"] = response
    return response


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _progress_data(job: Job) -> dict[str, Any]:
    prog = job.progress
    return {"id": job.id, "status": job.status, "progress": round(prog.fraction, 4), "step": prog.step,
            "steps": prog.steps, "job_no": prog.job_no, "job_count": prog.job_count, "eta": job.eta(),
            "position": get_queue().position(job)}


async def event_stream(job: Job, request: Request) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[str] = asyncio.Queue()

    def on_event(j: Job, event: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    remove = job.add_listener(on_event)
    try:
        yield _sse("status", job_view(job))
        last_preview = 0
        while not job.is_finished:
            try:
                event = await asyncio.wait_for(events.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": keep-alive\n\n"
                continue
            # Take everything that has piled up, and send each kind of event once.
            pending = {event}
            while not events.empty():
                pending.add(events.get_nowait())
            if "progress" in pending:
                yield _sse("progress", _progress_data(job))
            preview = job.progress.preview
            if "preview" in pending and preview is not None and job.progress.preview_id != last_preview:
                last_preview = job.progress.preview_id
                image = await run_in_threadpool(codec.encode_pil_to_base64, preview)
                yield _sse("preview", {"id": job.id, "preview_id": last_preview, "image": image})
            if "status" in pending and not job.is_finished:
                yield _sse("status", job_view(job))
        yield _sse("status", job_view(job))
    finally:
        remove()


def build_router(*, debug: bool = False) -> APIRouter:
    guard = handled(debug)
    r = APIRouter(prefix="/api/v1", tags=["jobs"])

    @r.post("/jobs", status_code=202, response_model=m.JobCreated)
    @guard
    async def create_job(body: dict[str, Any] = Body(...),
                         kind: Literal["txt2img", "img2img"] | None = Query(None)) -> Any:
        chosen = kind or ("img2img" if body.get("init_images") else "txt2img")
        req = _parse(chosen, body)
        build = adapter.build_img2img if chosen == "img2img" else adapter.build_txt2img
        p = await run_in_threadpool(build, req)
        job = runner.submit(p, job_id=req.force_task_id)
        job.meta["request"] = req
        job.meta["processing"] = p
        base = f"/api/v1/jobs/{job.id}"
        return JSONResponse(status_code=202, content={
            "id": job.id, "kind": job.kind, "status": job.status, "position": get_queue().position(job),
            "urls": {"self": base, "events": f"{base}/events"}})

    @r.get("/jobs")
    @guard
    async def list_jobs(limit: int = Query(50, ge=1, le=1000)) -> Any:
        return [job_view(j) for j in get_queue().jobs()[:limit]]

    @r.get("/jobs/{job_id}")
    @guard
    async def get_job(job_id: str) -> Any:
        job = _get(job_id)
        return await run_in_threadpool(job_view, job, with_result=True)

    @r.delete("/jobs/{job_id}")
    @guard
    async def cancel_job(job_id: str) -> Any:
        job = _get(job_id)
        if job.is_finished:
            raise ApiError(409, f"job {job_id} has finished already ({job.status})", "JobFinished")
        get_queue().cancel(job_id)
        return job_view(job)

    @r.get("/jobs/{job_id}/events")
    @guard
    async def job_events(job_id: str, request: Request) -> Any:
        job = _get(job_id)
        return StreamingResponse(event_stream(job, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return r
