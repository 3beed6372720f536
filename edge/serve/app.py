"""The FastAPI app of ``edge-serve``: one Predictor, a batcher, bounded everything.

Imported only once the ``serve`` extra is known to be installed (see :mod:`edge.serve.cli`).

Request path of ``POST /v1/predict``: upload admission (503 + Retry-After beyond
``max_uploading``) -> body read under the size limit and the upload-rate rule (408 and close
when too slow) -> scoring admission (503 beyond ``max_inflight``) -> multipart parsed in
memory -> each upload decoded and preprocessed on a worker thread (never on the event loop:
decoding may block, e.g. on a lock) -> the views' model inputs join the batcher's next
onnxruntime call -> JSON with the keys of ``edge-predict --json`` -> with an audit log, its
line written before the answer leaves (503 when it cannot be). Every error is JSON ``{"error": "..."}``; nothing unexpected becomes a
traceback in a response or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from edge.dicom import DicomInfo, is_dicom
from edge.errors import ImageError
from edge.image import JPEG_SIGNATURE, PNG_SIGNATURE
from edge.loader import read_any
from edge.predictor import valid_probabilities
from edge.serve.audit import audit_record, model_facts
from edge.serve.batcher import Batcher
from edge.serve.limits import Limits, token_matches
from edge.serve.metrics import Metrics
from edge.serve.uploads import ApiError, parse_uploads, read_body
from edge.trust import refusal_text

log = logging.getLogger("edge.serve")

# Paths anyone may call when a token is set: liveness/readiness probes and the page itself
# (the page asks for the token before it calls the API).
OPEN_PATHS = ("/", "/healthz", "/readyz")
# The page may talk to this server only: no external script, style, font or image can load.
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; connect-src 'self'; img-src 'self' data: blob:; "
                                           "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"}
STUDY_NAME = "study"


def model_card(predictor) -> dict:
    """The body of ``GET /v1/model``: the model's card (:meth:`edge.card.ModelCard.to_dict`)."""
    return predictor.card.to_dict()


def sniff(data: bytes) -> str | None:
    """'png', 'jpeg', 'dicom' from the first bytes, else None (decides 415 vs 400)."""
    if data[:len(PNG_SIGNATURE)] == PNG_SIGNATURE:
        return "png"
    if data[:3] == JPEG_SIGNATURE:
        return "jpeg"
    return "dicom" if is_dicom(data) else None


@dataclass
class View:
    """One upload after preprocessing: uint8 (S, S) image, model input (1, ...), ms spent, and
    for DICOM its non-identifying header facts (UIDs, part)."""

    name: str
    u8: np.ndarray
    x: np.ndarray
    preprocess_ms: float
    dicom: DicomInfo | None = None


def prepare(predictor, max_pixels: int, name: str, data: bytes) -> View:
    """Decode and preprocess one upload (runs on a worker thread).

    Raises
    ------
    ApiError
        415 not an image type, 400 undecodable, 413 above ``max_pixels``.
    """
    t0 = time.perf_counter()
    try:
        # bytes in memory -> the stored array, by the route a file takes (a DICOM upload as its
        # stored words and grey table, with its non-identifying facts from the same parse)
        arr, _, info = read_any(data, predictor.config.dicom_voi, indexed=True)
    except ImageError as e:
        if sniff(data) is None:
            raise ApiError(415, f"{name}: not a PNG, JPEG or DICOM image") from None
        raise ApiError(400, _named(str(e), name)) from None
    h, w = arr.shape[:2]
    if h * w > max_pixels:
        raise ApiError(413, f"{name}: image is {w}x{h}, above the {max_pixels:,}-pixel limit")
    try:
        u8 = predictor.preprocess(arr)  # the one preprocessing path, as for the file itself
    except ImageError as e:
        raise ApiError(400, _named(str(e), name)) from None
    x = predictor.model_input(u8)
    return View(name, u8, x, (time.perf_counter() - t0) * 1e3, info)


def _named(message: str, name: str) -> str:
    """An edge error about ``<bytes>`` / ``<array>`` told with the upload's name."""
    for anon in ("<bytes>", "<array>"):
        message = message.replace(anon, name)
    return message if message.startswith(name) else f"{name}: {message}"


def cam_png(u8: np.ndarray, cam: np.ndarray) -> str:
    """The CAM overlay of one view as a base64 PNG string."""
    import cv2

    from edge.cam import overlay

    ok, buf = cv2.imencode(".png", overlay(u8, cam))
    if not ok:
        raise RuntimeError("cannot encode the CAM overlay")
    return base64.b64encode(buf.tobytes()).decode("ascii")


class _Once:
    """Call ``fn`` on the first call only (a counter decremented exactly once per request)."""

    def __init__(self, fn):
        self._fn = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


@dataclass
class Trail:
    """What the audit line of one request needs beyond its answer."""

    request_id: str
    client: str | None
    sha256: list


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Service:
    """What the routes share: predictor, limits, worker threads, batcher, counters, metrics,
    and the audit log (None when auditing is off)."""

    def __init__(self, predictor, limits: Limits, metrics: Metrics, audit=None):
        self.predictor = predictor
        self.limits = limits
        self.metrics = metrics
        self.audit = audit
        self.audit_ok = True  # False after a line could not be written, until one can again
        self.audit_pool = ThreadPoolExecutor(1, thread_name_prefix="edge-serve-audit") if audit else None
        self.model = model_facts(predictor)
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="edge-serve-prep")
        self.batcher = None
        self.inflight = 0  # requests being scored (touched only on the event loop thread)
        self.uploading = 0  # requests still receiving their body
        self.preparing = 0  # admitted requests whose inputs have not reached the batcher yet
        self.ready = False
        self.draining = False

    async def start(self) -> None:
        self.batcher = Batcher(self.predictor.run, self.limits.max_batch, self.limits.max_wait_ms / 1e3,
                               self.limits.batching, expected=lambda: self.preparing,
                               on_batch=self.metrics.batch_size.observe)
        self.batcher.start()
        await self.warm_up()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        self.pool.shutdown(wait=True)
        if self.audit is not None:
            self.audit_pool.shutdown(wait=True)
            self.audit.close()

    async def record(self, trail: Trail, status: int, answer: dict | None) -> None:
        """Write the request's audit line (when auditing is on), or refuse the answer with 503."""
        if self.audit is None:
            return
        line = audit_record(request_id=trail.request_id, client=trail.client, endpoint="/v1/predict",
                            status=status, model=self.model, upload_sha256=trail.sha256, answer=answer)
        try:
            await asyncio.get_running_loop().run_in_executor(self.audit_pool, self.audit.write, line)
        except (OSError, ValueError) as e:  # ValueError: a value JSON cannot hold (NaN)
            self.audit_ok = False
            log.error("audit log %s cannot be written (%s); answering 503", self.audit.path,
                      getattr(e, "strerror", None) or type(e).__name__)
            raise ApiError(503, "the audit log cannot be written; no answer is given unaudited",
                           {"Retry-After": "5", "X-Request-ID": trail.request_id}) from None
        self.audit_ok = True

    async def warm_up(self) -> None:
        """One request's path end to end (PNG decode, worker, batcher, model) before ready."""
        import cv2

        size = self.predictor.config.size
        ramp = np.tile(np.linspace(0, 255, size, dtype=np.float32), (size, 1)).astype(np.uint8)
        png = cv2.imencode(".png", ramp)[1].tobytes()
        view = await self._run(prepare, self.predictor, self.limits.max_pixels, "warm-up.png", png)
        await self.batcher.infer(view.x)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _refuse_when_unavailable(self) -> None:
        if self.draining:
            raise ApiError(503, "the server is shutting down", {"Retry-After": "5", "Connection": "close"})
        if not self.ready:
            raise ApiError(503, "the model is still warming up", {"Retry-After": "1"})

    def admit_upload(self) -> None:
        """Count an upload in, or refuse it with 503 (not ready, shutting down, or full)."""
        self._refuse_when_unavailable()
        if self.uploading >= self.limits.max_uploading:
            raise ApiError(503, f"busy: {self.uploading} uploads in progress (limit {self.limits.max_uploading})",
                           {"Retry-After": "1"})
        self.uploading += 1
        self.metrics.uploading.set(self.uploading)

    def release_upload(self) -> None:
        self.uploading -= 1
        self.metrics.uploading.set(self.uploading)

    def admit(self) -> None:
        """Count a received request in for scoring, or refuse it with 503 (an upload admitted
        before a SIGTERM is still scored: draining lets requests in flight finish)."""
        if self.inflight >= self.limits.max_inflight:
            raise ApiError(503, f"busy: {self.inflight} requests in flight (limit {self.limits.max_inflight})",
                           {"Retry-After": "1"})
        self.inflight += 1
        self.preparing += 1
        self.metrics.inflight.set(self.inflight)

    def release(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.set(self.inflight)

    async def receive(self, request) -> bytearray:
        """The body, under the uploading bound, the size limit and the upload-rate rule."""
        self.admit_upload()
        try:
            return await read_body(request, self.limits.max_body_bytes, self.limits.allowed_upload_s)
        finally:
            self.release_upload()

    async def predict(self, request, want_cam: bool, trail: Trail | None = None) -> dict:
        """Receive the body (uploading bound), then admit, score within the timeout, release."""
        body = await self.receive(request)
        self.admit()
        prepared = _Once(self._prepared)
        try:
            return await asyncio.wait_for(self._predict(request, body, want_cam, prepared, trail),
                                          self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within the {self.limits.timeout_s:g} s request limit") from None
        finally:
            prepared()  # also when the request failed or timed out before reaching the batcher
            self.release()

    def _prepared(self) -> None:
        self.preparing -= 1

    async def _predict(self, request, body: bytearray, want_cam: bool, prepared, trail: Trail | None) -> dict:
        uploads = parse_uploads(body, request.headers.get("content-type", ""), self.limits.max_files)
        del body
        if trail is not None and self.audit is not None:  # the exact inputs, for the audit line
            trail.sha256 = await self._all(_sha256, [(u.data,) for u in uploads])
        views = await self._prepare_all(uploads)
        prepared()  # from here on this request no longer counts as one the batcher may wait for
        x = views[0].x if len(views) == 1 else np.concatenate([v.x for v in views])
        result = await self.batcher.infer(x)
        probs = self.predictor.probabilities(result.outputs)
        if not np.all(valid_probabilities(probs)):
            raise ApiError(500, "the model returned a probability that is not a number in [0, 1]; no label given")
        self.metrics.images.inc(len(views))
        cams = result.outputs.get("cam") if want_cam and self.predictor.has_cam else None
        return await self._respond(views, result.outputs, result.run_ms / result.batch_size, cams)

    async def _prepare_all(self, uploads: list) -> list:
        return await self._all(prepare, [(self.predictor, self.limits.max_pixels, u.name, u.data) for u in uploads])

    async def _all(self, fn, arg_tuples: list) -> list:
        """``fn(*args)`` for each args tuple on the worker threads; the first error is raised."""
        done = await asyncio.gather(*(self._run(fn, *a) for a in arg_tuples), return_exceptions=True)
        for item in done:  # every exception is retrieved, so asyncio logs none of them
            if isinstance(item, BaseException):
                raise item
        return done

    async def _respond(self, views: list, outputs: dict, share_ms: float, cams) -> dict:
        """The answer: one view's, or the request's views as one study. Views the input gate
        refuses are a JSON 422 naming them when nothing is left to score; a study keeps its
        other views (the refused ones stay in ``views`` with ``probability`` null)."""
        p = self.predictor
        preds = [p.answer(v.name, outputs, i, v.preprocess_ms, share_ms, dicom=v.dicom) for i, v in enumerate(views)]
        refused = [v for v in preds if v.refused]
        if refused and len(refused) == len(preds):
            raise ApiError(422, "; ".join(refusal_text(v.path, v.gate) for v in refused))
        if len(preds) == 1:
            body = preds[0].to_dict()
        else:
            uids = {v.dicom.study_uid if v.dicom else None for v in views}
            uid = uids.pop() if len(uids) == 1 else None  # the request's views are one study
            body = p.study_answer(STUDY_NAME, preds, uid).to_dict()
            if refused:
                body["warnings"] = [refusal_text(v.path, v.gate) for v in refused]
        if cams is not None:  # one per view; null for a refused view
            kept = [i for i, a in enumerate(preds) if not a.refused]
            pngs = dict(zip(kept, await self._all(cam_png, [(views[i].u8, cams[i]) for i in kept])))
            body["cam"] = pngs[0] if len(preds) == 1 else [pngs.get(i) for i in range(len(preds))]
        return body


def create_app(predictor, limits: Limits | None = None, token: str | None = None, audit=None):
    """The FastAPI application serving ``predictor``.

    Parameters
    ----------
    predictor : edge.predictor.Predictor
    limits : Limits, optional
    token : str, optional
        When set, every path but ``/``, ``/healthz`` and ``/readyz`` needs
        ``Authorization: Bearer <token>``.
    audit : edge.serve.audit.AuditLog, optional
        When set, every ``POST /v1/predict`` answer is one line in it, written before the
        answer leaves (503 when it cannot be).
    """
    metrics = Metrics()
    service = Service(predictor, limits or Limits(), metrics, audit)

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="edge-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service, metrics)
    app.add_middleware(Guard, token=token, metrics=metrics)
    return app


def _add_routes(app, service: Service, metrics: Metrics) -> None:
    page = resources.files("edge.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.post("/v1/predict")
    async def predict(request: Request):
        want_cam = request.query_params.get("cam", "0").lower() in ("1", "true", "yes")
        client = request.client.host if request.client else None
        trail = Trail(uuid.uuid4().hex, client, [])
        try:
            answer = await service.predict(request, want_cam, trail)
        except ApiError as e:
            await service.record(trail, e.status, None)
            e.headers["X-Request-ID"] = trail.request_id
            raise
        except Exception:
            await service.record(trail, 500, None)
            raise
        await service.record(trail, 200, answer)
        return JSONResponse(answer, headers={"X-Request-ID": trail.request_id})

    @app.get("/v1/model")
    async def model():
        return JSONResponse(model_card(service.predictor))

    @app.get("/healthz")
    async def healthz():
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    async def readyz():
        if service.ready and not service.draining and service.audit_ok:
            return JSONResponse({"status": "ready"})
        why = "shutting down" if service.draining else "warming up" if not service.ready else \
            "the audit log cannot be written"
        return JSONResponse({"error": f"not ready: {why}"}, 503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def index():
        return HTMLResponse(page, headers=PAGE_HEADERS)


def _add_error_handlers(app) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        message = {404: f"no such endpoint: {request.url.path[:200]}",
                   405: f"{request.method} is not allowed on {request.url.path[:200]}"}
        return JSONResponse({"error": message.get(exc.status_code, str(exc.detail))}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"invalid request: {where} {first.get('msg', '')}".strip()}, 422)


class Guard:
    """Pure ASGI middleware: bearer token, request metrics, and a JSON 500 for the unexpected.

    An unexpected exception is answered ``{"error": "internal error"}`` and logged as one line
    (its type only: a message could carry request data); it never reaches uvicorn, which would
    print a traceback.
    """

    def __init__(self, app, token: str | None, metrics: Metrics):
        self.app = app
        self.token = token
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                status.update(code=message["status"], started=True)
            await send(message)

        try:
            if self.token is not None and scope["path"] not in OPEN_PATHS and not self._authorised(scope):
                await _json(401, "missing or wrong bearer token", send_tracked, {"WWW-Authenticate": "Bearer"})
            else:
                await self.app(scope, receive, send_tracked)
        except Exception as e:  # noqa: BLE001  the one place that turns surprises into a JSON 500
            log.error("internal error on %s %s: %s", scope.get("method"), self.metrics.endpoint(scope["path"]),
                      type(e).__name__)
            if not status["started"]:
                await _json(500, "internal error", send_tracked)
        finally:
            self.metrics.observe(scope["path"], status["code"], time.perf_counter() - t0)

    def _authorised(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        return token_matches(header.decode("latin-1"), self.token)


async def _json(status: int, message: str, send, headers: dict | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
