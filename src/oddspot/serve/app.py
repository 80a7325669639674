"""The FastAPI application of `oddspot serve`: endpoints, limits, token, errors and the page.

    POST /v1/models/{name}/predict   images (multipart files, or one raw image body) -> scores as JSON
    GET  /v1/models, /v1/models/{name}
    GET  /healthz (the process answers), /readyz (every model loaded and warmed up)
    GET  /metrics (Prometheus), /docs (OpenAPI; Swagger UI from fastapi-offline, no CDN), / (the inspection page, served from package data)

Model calls never run on the event loop: a request decodes its images in a worker thread, puts
them on its model's micro-batcher (`serve.batching`) and awaits the results. Every error is JSON
`{"error": "..."}` with one line: 400 bad image or request, 401 token, 403 another web site (a
foreign Origin, or a Host other than 127.0.0.1/localhost on a loopback service), 404 unknown model,
413 body too large, 415 not an image, 503 queue full (Retry-After), 504 timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oddspot import __version__
from oddspot.errors import OddspotError
from oddspot.serve.batching import MicroBatcher, QueueFull
from oddspot.serve.decode import UnsupportedImage, decode_image_bytes
from oddspot.serve.metrics import ServiceMetrics
from oddspot.serve.models import OUTPUTS, ServedModel
from oddspot.serve.schemas import ErrorBody, ModelInfo, ModelList, PredictAnswer
from oddspot.serve.settings import ServeSettings

RAW_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/webp",
             "application/octet-stream")
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
DOCS_STATIC = "/docs-static"  # Swagger UI's script, stylesheet and icon, from the fastapi-offline package
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 503, 504)}
BINARY = {"schema": {"type": "string", "format": "binary"}}
REQUEST_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    **{media: BINARY for media in ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp")},
}}


class ApiError(Exception):
    """An answer other than 200: status, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Service:
    """What the app serves: the models, their batchers (started by the app's lifespan), metrics and limits."""

    def __init__(self, models: Sequence[ServedModel], settings: ServeSettings) -> None:
        names = [m.name for m in models]
        if not models:
            raise OddspotError("no model to serve; pass at least one RUN")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise OddspotError(f"two runs are both named {dupes[0]!r}; name them apart with NAME=RUN")
        self.models = {m.name: m for m in models}
        self.settings = settings
        self.metrics = ServiceMetrics(names)
        self.batchers: dict[str, MicroBatcher] = {}
        self.limiter = anyio.CapacityLimiter(settings.decoders)

    def start(self) -> None:
        """One inference thread per model; each warms its model up first (see /readyz)."""
        s = self.settings
        for name, served in self.models.items():
            if name not in self.batchers:
                self.batchers[name] = MicroBatcher(
                    served.infer, s.max_batch, s.max_wait_ms / 1000.0, s.queue, s.queue_pixels, served.warmup, name,
                    on_batch=lambda size, seconds, n=name: self.metrics.batch(n, size, seconds),
                    on_depth=lambda depth, n=name: self.metrics.depth(n, depth))

    def stop(self) -> None:
        for batcher in self.batchers.values():
            batcher.stop()
        self.batchers.clear()

    def lookup(self, name: str) -> tuple[ServedModel, MicroBatcher]:
        if name not in self.models or name not in self.batchers:
            raise ApiError(404, f"model {name[:64]!r} unknown; loaded: {', '.join(sorted(self.models))}")
        return self.models[name], self.batchers[name]

    async def decode(self, served: ServedModel, blobs: list[bytes], answers: list[dict[str, Any]]) -> dict[int, Any]:
        """{index: image} of the blobs that decode (in worker threads); the others' answers get 415 or 400."""
        images: dict[int, Any] = {}

        def decode_one(i: int) -> Any:
            started = time.perf_counter()
            what = f"image {i}" + (f" ({answers[i]['name'][:80]})" if answers[i]["name"] else "")
            image = decode_image_bytes(blobs[i], self.settings.max_pixels, what)
            served.check_image(image, what)
            answers[i]["timing_ms"] = {"decode": round((time.perf_counter() - started) * 1e3, 3)}
            return image

        for i in range(len(blobs)):
            try:
                images[i] = await anyio.to_thread.run_sync(decode_one, i, limiter=self.limiter)
            except UnsupportedImage as exc:
                answers[i].update(status=415, error=str(exc))
            except OddspotError as exc:
                answers[i].update(status=400, error=str(exc))
        return images

    async def score(self, served: ServedModel, batcher: MicroBatcher, images: dict[int, Any], wanted: tuple[str, ...],
                    answers: list[dict[str, Any]], deadline: float) -> None:
        """Queue the images, await their results until `deadline` (perf_counter; 504 after it), fill their answers."""
        order = sorted(images)
        maps = served.task == "road" or bool({"heatmap", "mask", "map"} & set(wanted))
        futures = batcher.submit([images[i] for i in order], maps=maps)
        try:
            done = await asyncio.wait_for(asyncio.gather(*[asyncio.wrap_future(f) for f in futures], return_exceptions=True),
                                          max(deadline - time.perf_counter(), 0.0))
        except (asyncio.TimeoutError, TimeoutError):
            for f in futures:
                f.cancel()  # an image still queued is dropped
            raise ApiError(504, f"not answered within {self.settings.timeout_s:g} s (model {served.name} is busy); "
                                "retry later or send fewer images") from None
        for i, outcome in zip(order, done):
            if isinstance(outcome, OddspotError):
                answers[i].update(status=400, error=str(outcome))
            elif isinstance(outcome, BaseException):
                answers[i].update(status=500, error=f"scoring failed ({type(outcome).__name__}); see the service's log")
            else:
                result, timing = outcome
                image = images[i]
                answers[i].update(width=int(image.shape[1]), height=int(image.shape[0]), score=result.score,
                                  normalized=result.normalized,
                                  decision=None if result.decision is None else "anomalous" if result.decision else "normal")
                answers[i]["timing_ms"].update(queue=round(timing.queue * 1e3, 3), inference=round(timing.inference * 1e3, 3),
                                               batch_size=timing.batch_size)
                if wanted or served.task == "road":
                    answers[i].update(await anyio.to_thread.run_sync(served.render, image, result, wanted, limiter=self.limiter))

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(all ready, {model: "ready" | "warming up" | "warm-up failed: ..."})."""
        states = {}
        for name in self.models:
            b = self.batchers.get(name)
            states[name] = "not started" if b is None else "warming up" if not b.ready.is_set() else b.failed or "ready"
        return all(v == "ready" for v in states.values()), states


class Observe:
    """ASGI middleware: request count and latency by route template and status; headers every answer carries."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            self.metrics.request(getattr(route, "path", "other"), status, time.perf_counter() - started)


def host_name(value: str) -> str:
    """The host part of a Host header or of an origin's netloc: `[::1]:8000` -> `::1`, `localhost:80` -> `localhost`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SameOrigin:
    """ASGI middleware against other web sites: a service bound to loopback answers only requests whose Host
    is a loopback name (DNS rebinding), and no request that changes state may come from another origin.

    A page elsewhere can make a browser post a form to 127.0.0.1; its Origin header gives it away.
    """

    LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

    def __init__(self, app: ASGIApp, loopback: bool) -> None:
        self.app, self.loopback = app, loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        refusal = None
        if self.loopback and not (host_name(host) in self.LOOPBACK_NAMES or host_name(host).startswith("127.")):
            refusal = f"Host {host[:80]!r} is not this service; it answers to 127.0.0.1 and localhost only"
        origin = headers.get("origin")
        if refusal is None and origin is not None and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            netloc = origin.split("://", 1)[-1]
            if netloc.lower() != host.lower():
                refusal = f"cross-origin request from {origin[:80]!r} refused; call the API directly, not from another site"
        if refusal is not None:
            await error_response(403, refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def blank_answer(index: int, name: str | None) -> dict[str, Any]:
    """One image's answer before it is decoded and scored (every field of `schemas.ImageAnswer` but the pictures)."""
    return {"index": index, "name": name, "status": 200, "error": None, "width": None, "height": None, "score": None,
            "normalized": None, "decision": None, "timing_ms": None}


def parse_outputs(text: str) -> tuple[str, ...]:
    """`heatmap,mask` -> ("heatmap", "mask"); an unknown name is a 400."""
    wanted = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [w for w in wanted if w not in OUTPUTS]
    if unknown:
        raise ApiError(400, f"outputs: {unknown[0][:40]!r} unknown; choose from {', '.join(OUTPUTS)}")
    return wanted


def media_kind(content_type: str) -> str:
    """'multipart' or 'raw' for the request's Content-Type; anything else is a 415."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base == "multipart/form-data":
        return "multipart"
    if base in RAW_TYPES:
        return "raw"
    shown = f"Content-Type {base[:60]!r}" if base else "no Content-Type"
    raise ApiError(415, f"{shown}: send images as multipart/form-data files, or one image body with "
                        "Content-Type image/png, image/jpeg, image/bmp, image/tiff or image/webp")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its declared length) exceeds `limit` bytes."""
    too_large = f"request body over the limit of {limit / 2**20:g} MB; send fewer or smaller images"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def split_parts(headers: Headers, body: bytes, max_images: int) -> list[tuple[str | None, bytes]]:
    """(file name, bytes) of every file in a multipart body; other form fields are ignored."""

    async def stream():
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=max_images, max_fields=32).parse()
    except MultiPartException as exc:
        raise ApiError(400, f"multipart body: {exc.message}; at most {max_images} files per request") from None
    parts = []
    try:
        for _, value in form.multi_items():
            if not isinstance(value, str):
                parts.append((value.filename, await value.read()))
    finally:
        await form.close()
    return parts


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The service for `models` (already loaded); its lifespan starts and stops the inference threads."""
    settings = settings or ServeSettings()
    service = Service(models, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    # FastAPIOffline: the /docs page loads Swagger UI from files shipped in the package, not from a CDN
    app = FastAPIOffline(title="oddspot", version=__version__, lifespan=lifespan, redoc_url=None, static_url=DOCS_STATIC,
                         description="Visual anomaly detection as a service: score images with fitted oddspot models.")
    app.state.service = service
    app.add_middleware(SameOrigin, loopback=settings.loopback)
    app.add_middleware(Observe, metrics=service.metrics)  # added last: runs first, so it counts refusals too

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = {404: f"no such endpoint {request.url.path[:80]!r}; see /docs",
                405: f"{request.method} is not allowed on {request.url.path[:80]!r}; see /docs"}
        return error_response(exc.status_code, text.get(exc.status_code, str(exc.detail)), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__}); see the service's log")

    def authorize(request: Request) -> None:
        token = settings.token
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "missing or wrong bearer token; send `Authorization: Bearer <token>`",
                           {"WWW-Authenticate": 'Bearer realm="oddspot"'})

    guarded = [Depends(authorize)]

    # models and scoring ------------------------------------------------------------------------
    @app.get("/v1/models", response_model=ModelList, dependencies=guarded, responses={401: ERRORS[401]}, tags=["models"])
    async def list_models() -> dict[str, Any]:
        """Every loaded model: name, task, kind, version, thresholds and input size."""
        return {"models": [m.describe() for m in service.models.values()]}

    @app.get("/v1/models/{name}", response_model=ModelInfo, dependencies=guarded,
             responses={401: ERRORS[401], 404: ERRORS[404]}, tags=["models"])
    async def describe_model(name: str) -> dict[str, Any]:
        """One loaded model."""
        return service.lookup(name)[0].describe()

    @app.post("/v1/models/{name}/predict", response_model=PredictAnswer, dependencies=guarded, responses=ERRORS,
              tags=["models"], openapi_extra={"requestBody": REQUEST_BODY})
    async def predict(name: str, request: Request,
                      outputs: str = Query("", description="comma-separated: heatmap, mask, map")) -> Response:
        """Score images: multipart/form-data files (`-F image=@a.png -F image=@b.png`), or one image as the body
        (`--data-binary @a.png -H 'Content-Type: image/png'`). Each image's result carries its score, normalized
        score and decision; `outputs` adds base64 pictures. Images that fail are listed with their error; the
        request fails (with the first image's status) only when none could be scored."""
        started = time.perf_counter()
        served, batcher = service.lookup(name)
        wanted = parse_outputs(outputs)
        kind = media_kind(request.headers.get("content-type", ""))
        if batcher.full():  # shed before reading the body
            raise QueueFull(f"model {name}: the queue is full; retry later", batcher.retry_after())
        body = await read_body(request, settings.max_body_bytes)
        parts = await split_parts(request.headers, body, settings.max_images) if kind == "multipart" else [(None, body)]
        del body
        if not parts or (kind == "raw" and not parts[0][1]):
            raise ApiError(400, "no image in the request; send files as multipart/form-data "
                                "(`-F image=@photo.png`) or one image as the body")
        answers = [blank_answer(i, file_name) for i, (file_name, _) in enumerate(parts)]
        images = await service.decode(served, [data for _, data in parts], answers)
        del parts
        if images:
            await service.score(served, batcher, images, wanted, answers, started + settings.timeout_s)
        if all(a["status"] != 200 for a in answers):
            first = answers[0]
            raise ApiError(first["status"], first["error"] if len(answers) == 1 else
                           f"none of the {len(answers)} images could be scored; first: {first['error']}")
        return JSONResponse({
            "model": served.name, "version": served.version, "task": served.task, "kind": served.kind,
            "runtime": served.runtime, "thresholds": served.thresholds, "results": answers,
            "timing_ms": {"total": round((time.perf_counter() - started) * 1e3, 3)},
        })

    @app.exception_handler(QueueFull)
    async def shed(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})

    # operations --------------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: ERRORS[503]})
    async def readyz() -> Response:
        """Every model is loaded and warmed up (503 until then, or when a warm-up failed)."""
        ok, states = service.readiness()
        if ok:
            return JSONResponse({"status": "ready", "models": states})
        waiting = ", ".join(f"{n}: {s}" for n, s in states.items() if s != "ready")
        return error_response(503, f"not ready ({waiting})")

    @app.get("/metrics", dependencies=guarded, tags=["operations"], responses={401: ERRORS[401]})
    async def metrics() -> Response:
        """Prometheus text: requests by route and status, latency, batch sizes, queue depth."""
        body, content_type = service.metrics.exposition()
        return Response(body, media_type=content_type)

    # the page ----------------------------------------------------------------------------------
    files = {name: (resources.files("oddspot.serve").joinpath("static", name).read_bytes(), media)
             for name, media in STATIC.items()}

    def static(name: str) -> Response:
        body, media = files[name]
        return Response(body, media_type=media, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in files or name == "index.html":
            raise ApiError(404, f"no such file {name[:80]!r}")
        return static(name)

    return app
