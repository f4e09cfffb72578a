"""The FastAPI app: loaded models, their batchers, the limits every request passes, and the routes.

The body size limit is one ASGI layer (``Gate``) around every route, which also counts every answer
for ``/metrics``; the API key is a dependency of the API routers (the page, health and metrics stay
open). Routes then only parse their own format and call ``run_job``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from omnivis.serve.api_errors import ApiError, error_response
from omnivis.serve.batching import BatchPolicy, Job, MicroBatcher
from omnivis.serve.metrics import ServerMetrics
from omnivis.serve.models import ServedModel


@dataclass
class ServeConfig:
    """The server's limits and batching (``omnivis serve --help`` says the same)."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    request_timeout_s: float = 60.0
    api_key: str | None = None
    max_images: int = 16  # per generation request (OpenAI ``n``)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def served(request: Request, name: str) -> ServedModel:
    """The model called ``name``; an unknown name is a 404 that lists the loaded ones."""
    models: dict[str, ServedModel] = request.app.state.models
    if name not in models:
        raise ApiError(404, f"no model named '{name}'; loaded: {', '.join(models) or 'none'}", "model")
    return models[name]


async def _client_gone(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_job(request: Request, name: str, item) -> tuple[object, Job]:
    """Queue ``item`` for model ``name`` and wait for its answer, the client, or the timeout."""
    state = request.app.state
    batcher: MicroBatcher = state.batchers[name]
    job = batcher.submit(item)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({job.future, watcher}, timeout=state.config.request_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job.future in done:
        return job.future.result(), job
    batcher.withdraw(job, "client_gone" if watcher in done else "timeout")  # frees its place in the queue
    if watcher in done:
        raise ApiError(499, "the client closed the request")
    raise ApiError(504, f"model '{name}' did not answer within {state.config.request_timeout_s:g} s; try again later",
                   headers={"Retry-After": "1"})


def timings(job: Job) -> dict:
    end = job.finished or time.perf_counter()
    start = job.started or end
    return {"queue": round((start - job.enqueued) * 1000, 3), "model": round((end - start) * 1000, 3),
            "total": round((end - job.enqueued) * 1000, 3)}


def require_key(request: Request) -> None:
    """The API key check, a dependency of every router but the page, health and metrics."""
    key = request.app.state.config.api_key
    if not key:
        return
    given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY or X-API-Key: KEY)",
                       headers={"WWW-Authenticate": "Bearer"})


class Gate:
    """ASGI layer around everything: the body size limit (413, from Content-Length or while the body
    streams in, raised when a route reads it) and the request metrics."""

    def __init__(self, app, config: ServeConfig, metrics: ServerMetrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), {"code": 500}
        limit, seen = self.config.max_upload_bytes, {"bytes": 0}
        length = dict(scope.get("headers", [])).get(b"content-length", b"").decode("latin-1")

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        digits = length.isascii() and length.isdigit()
        declared = None  # a declared length over the limit (or not a number) is refused when the body is read
        if length and (not digits or int(length) > limit):
            declared = ApiError(413 if digits else 400, f"the request body is {length} bytes; the limit is "
                                f"{limit}" if digits else f"Content-Length '{length}' is not a number")

        async def limited_receive():
            if declared is not None:
                raise declared
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise ApiError(413, f"the request body is over the limit of {limit} bytes")
            return message

        try:
            await self.app(scope, limited_receive, counting_send)
        finally:
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def create_app(models: dict[str, ServedModel], config: ServeConfig | None = None) -> FastAPI:
    """An app serving ``models`` (name -> loaded model). Batchers start with the app and stop after it
    has answered its in-flight requests."""
    from omnivis.serve import routes_edit, routes_explain, routes_face, routes_kserve, routes_omnivis, routes_openai

    config = config or ServeConfig()
    metrics = ServerMetrics()
    policy = BatchPolicy(config.max_batch, config.max_wait_ms, config.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for batcher in app.state.batchers.values():
            batcher.start()
        app.state.explain_copies = {}  # routes_explain's private model copies; their asyncio locks are this loop's
        app.state.ready = True
        yield
        app.state.ready = False
        for batcher in app.state.batchers.values():
            await batcher.stop()

    app = FastAPI(title="omnivis", version="0.1.0", lifespan=lifespan,
                  description="Trained omnivis bundles: omnivis JSON endpoints per task, the OpenAI Images API "
                  "and the KServe v2 (Open Inference Protocol) REST API.")
    app.state.models, app.state.config, app.state.metrics = models, config, metrics
    app.state.ready, app.state.draining = False, False
    app.state.explain_copies = {}
    app.state.batchers = {name: MicroBatcher(name, model.run_batch, policy, metrics.observer(name),
                                             metrics.dropper(name)) for name, model in models.items()}
    for name, batcher in app.state.batchers.items():
        metrics.waiting.labels(name).set_function(lambda b=batcher: len(b.waiting))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request.url.path, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no endpoint at {request.url.path}; the API is described at /docs",
                   405: f"{request.method} is not allowed at {request.url.path}; the API is described at /docs"}
        text = message.get(exc.status_code) if exc.detail in ("Not Found", "Method Not Allowed") else str(exc.detail)
        return error_response(request.url.path, ApiError(exc.status_code, text, headers=exc.headers))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(request.url.path, ApiError(422, f"{param or 'request'}: {first.get('msg', 'invalid')}",
                                                          param))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # never expected: still an answer in the family's format
        return error_response(request.url.path, ApiError(500, f"internal error ({type(exc).__name__}); see the server log"))

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("omnivis.serve").joinpath("static/index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        kinds = {".js": "text/javascript", ".css": "text/css"}
        suffix = name[name.rfind("."):] if "." in name else ""
        item = resources.files("omnivis.serve").joinpath("static", name)
        if suffix not in kinds or "/" in name or not item.is_file():
            raise ApiError(404, f"no static file '{name}'")
        return Response(item.read_text(), media_type=kinds[suffix])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    guard = [Depends(require_key)] if config.api_key else []  # no key: no per-request dependency to solve
    app.include_router(routes_face.router, dependencies=guard)  # before /api/{task}/{model}: /api/face/verify/...
    app.include_router(routes_edit.router, dependencies=guard)  # before /api/{task}/{model}
    app.include_router(routes_omnivis.router, dependencies=guard)
    app.include_router(routes_explain.router, dependencies=guard)
    app.include_router(routes_openai.router, dependencies=guard)
    app.include_router(routes_kserve.router)  # server metadata and health stay open
    app.include_router(routes_kserve.models_router, dependencies=guard)
    app.add_middleware(Gate, config=config, metrics=metrics)
    return app
