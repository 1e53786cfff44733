"""The pose server: a FastAPI app that loads one PoseNet or MapNet checkpoint and serves its poses.

:func:`create_app` loads the checkpoint, the floor plan and its walkable map once; :func:`run` (and
``campose serve``) serves the app under uvicorn. Endpoints:

* ``POST /predict``: a photo in the multipart field ``image`` (JPEG or PNG, any size, any mode:
  grey, palette, RGBA and 16-bit grey are converted to 8-bit RGB, alpha dropped; the EXIF
  orientation is applied) -> the camera pose (:class:`Prediction`). The photo goes through
  :func:`campose.dataset.image_to_tensor` at the checkpoint's training ``image_size``, exactly as
  in training.
* ``GET /``: the dashboard (``campose/static``, no CDN): pick or drop a photo, see the prediction on
  the plan. ``GET /plan`` (the plan as JSON for drawing), ``GET /plan/walkable.png`` (the walkable
  grid the snapping uses), ``GET /model``, ``GET /health``, and ``/docs`` (Swagger UI served from the
  ``swagger-ui-bundle`` package, so it works offline).

Frames and units: positions are metres in the building (world) frame, x east, y north, z up;
orientations are camera-to-world unit quaternions (w, x, y, z), w >= 0 (:mod:`campose.geometry`).
``yaw_deg`` is the heading of the camera's optical axis in the floor plane, degrees counter-clockwise
from east (+x), in (-180, 180] (as :func:`campose.plots.headings` draws it); ``pitch_deg`` is positive
looking up, ``roll_deg`` as :func:`campose.geometry.camera_yaw_pitch_roll`. The snapped position is the
prediction moved to the nearest walkable point of the plan (:meth:`campose.walkable.WalkableMap.snap`,
z unchanged).

Bad input never gives a 500: every refusal is a 4xx JSON body ``{"error": ..., "detail": ...}``.
Limits: uploads over ``max_upload_bytes`` (default :data:`MAX_UPLOAD_BYTES`, 20 MiB) get 413 (from the
``Content-Length`` header before the body is read; a body sent without one, chunked, is cut off once
it passes the limit); images over ``max_pixels``
(default :data:`MAX_PIXELS`, 40 megapixels) get 413 from the image header, before any pixel is
decoded (PIL's own decompression-bomb guard also answers 413).

Concurrency: the request is parsed on the event loop; decoding runs in worker threads, at most one per
CPU at a time (bounding the memory of large photos); the network runs under a lock, one image at a
time, in eval mode without gradients. :func:`create_app` sets torch's intra-op threads for the process
(default :func:`campose.train.cpu_threads`: 1 on machines with 2 or fewer CPUs).
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_PIXELS = 40_000_000
ABSOLUTE_KINDS = ("posenet", "mapnet")
IMAGE_FORMATS = ("JPEG", "PNG")
STATIC = Path(__file__).with_name("static")
_MULTIPART_SLACK = 64 * 2**10  # multipart boundaries and part headers around the image bytes


class InputError(Exception):
    """A request the server refuses: HTTP ``status``, a short ``error`` and a ``detail`` sentence."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


# ---------------------------------------------------------------------------- the model
@dataclass
class ServedModel:
    """A loaded absolute-pose checkpoint: the model (eval mode, CPU), its checkpoint ``info``, the
    network input ``image_size`` (width, height) pixels and the file it came from."""

    model: object
    info: dict
    image_size: tuple[int, int]
    path: Path

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _train_config(info: dict) -> dict:
    """The checkpoint's training config (a dict, as :func:`campose.train.save_checkpoint` writes it)."""
    cfg = info.get("train_config")
    return cfg if isinstance(cfg, dict) else {}


def load_served_model(checkpoint) -> ServedModel:
    """Load ``checkpoint`` for serving (:func:`campose.train.load_checkpoint`). FileNotFoundError for
    a missing file; :class:`campose.train.CheckpointError` for an unreadable or foreign file, a MeNet
    (relative-pose) checkpoint or one without a training image size."""
    from campose.train import CheckpointError, load_checkpoint

    path = Path(checkpoint)
    model, info = load_checkpoint(path)
    if model.kind not in ABSOLUTE_KINDS:
        raise CheckpointError(f"{path} holds a {model.kind} model, which predicts the pose of one image relative "
                              f"to another; the server needs an absolute-pose model ({' or '.join(ABSOLUTE_KINDS)})")
    size = _train_config(info).get("image_size")
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: no training image size in the checkpoint "
                              f"(train_config['image_size'] is {size!r})") from None
    if min(w, h) < 8:
        raise CheckpointError(f"{path}: training image size {w}x{h} is below 8 pixels")
    return ServedModel(model, info, (w, h), path)


# ---------------------------------------------------------------------------- images
def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Bytes of a JPEG or PNG -> (uint8 (H, W, 3) RGB array, {"width", "height", "format", "mode"}
    of the upload). The size is checked against ``max_pixels`` from the header, before decoding.
    Raises :class:`InputError` (400 empty or corrupt, 413 too large, 415 not a JPEG or PNG)."""
    from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

    from campose.dataset import pil_to_rgb

    if not data:
        raise InputError(400, "empty upload", "the field 'image' holds no bytes; send a JPEG or PNG photo")
    try:
        im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise InputError(415, "not a JPEG or PNG image", f"the {len(data)} bytes uploaded are not a JPEG or PNG "
                                                         "image (or its header is broken)") from None
    except Image.DecompressionBombError as e:
        raise InputError(413, "image too large", f"{e}; the limit is {max_pixels:,} pixels") from None
    except Exception as e:  # a header PIL cannot parse
        raise InputError(400, "corrupt image", f"cannot read the image header: {type(e).__name__}: {e}") from None
    with im:
        w, h = im.size
        meta = {"width": w, "height": h, "format": im.format, "mode": im.mode}
        if w * h > max_pixels:
            raise InputError(413, "image too large", f"the image is {w}x{h} = {w * h:,} pixels; the limit is "
                                                     f"{max_pixels:,} pixels ({max_pixels / 1e6:g} megapixels)")
        try:
            im.load()
            if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # a phone photo taken sideways
                im = ImageOps.exif_transpose(im)
            return pil_to_rgb(im), meta
        except Exception as e:  # truncated data, broken streams: PIL raises OSError, SyntaxError, ValueError ...
            raise InputError(400, "corrupt image", f"the {meta['format']} image ({w}x{h}) cannot be decoded, "
                                                   f"it is truncated or corrupt: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------- plan
def plan_json(plan, walkable, clearance: float | None) -> dict:
    """The plan for the dashboard to draw (metres, world frame): ``bounds`` [[xmin, ymin], [xmax, ymax]],
    ``segments`` [[x0, y0, x1, y1], ...] with ``segment_kinds`` (wall, door_closed, door_open),
    ``spaces`` (name, kind, walkable, polygon) and ``walkable``: the snapping grid's ``extent``
    [xmin, xmax, ymin, ymax], ``resolution``, ``clearance``, ``area_m2`` and ``image`` (its URL)."""
    from campose.floorplan import DOOR_CLOSED, DOOR_OPEN, WALL

    names = {WALL: "wall", DOOR_CLOSED: "door_closed", DOOR_OPEN: "door_open"}
    r = lambda a: np.round(np.asarray(a, float), 3).tolist()  # noqa: E731  (millimetres are plenty)
    return {"name": plan.name, "bounds": r(plan.bounds), "segments": r(plan.segments),
            "segment_kinds": [names[int(k)] for k in plan.kinds],
            "spaces": [{"name": s.name, "kind": s.kind, "walkable": s.walkable, "polygon": r(s.polygon)}
                       for s in plan.spaces],
            "walkable": {"extent": r(walkable.extent), "resolution": walkable.resolution, "clearance": clearance,
                         "area_m2": round(walkable.walkable_area_m2, 2), "image": "/plan/walkable.png"}}


def walkable_png(walkable, rgba=(45, 160, 90, 110)) -> bytes:
    """The walkable grid as a PNG, north up (row 0 = the grid's north edge): walkable cells ``rgba``,
    the rest transparent; drawn over the grid's ``extent``."""
    from PIL import Image

    img = np.zeros(walkable.mask.shape + (4,), np.uint8)
    img[walkable.mask] = rgba
    buf = io.BytesIO()
    Image.fromarray(img[::-1]).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------- response models
class Position(BaseModel):
    """A point in the building frame, metres (x east, y north, z up)."""

    x: float
    y: float
    z: float


class Quaternion(BaseModel):
    """Camera-to-world unit quaternion, w >= 0."""

    w: float
    x: float
    y: float
    z: float


class Orientation(BaseModel):
    """The camera's orientation: quaternion and angles in degrees."""

    quaternion: Quaternion
    yaw_deg: float = Field(description="heading of the optical axis in the floor plane, degrees "
                                       "counter-clockwise from east (+x), in (-180, 180]")
    pitch_deg: float = Field(description="elevation of the optical axis, degrees, positive looking up")
    roll_deg: float = Field(description="roll about the optical axis, degrees (campose.geometry.camera_rotation)")


class ImageInfo(BaseModel):
    """The uploaded photo as received."""

    width: int = Field(description="pixels")
    height: int = Field(description="pixels")
    format: str = Field(description="JPEG or PNG")
    mode: str = Field(description="PIL mode of the upload (it was converted to RGB)")


class Prediction(BaseModel):
    """The pose of the camera that took the uploaded photo."""

    position: Position = Field(description="predicted camera centre, metres, building frame")
    orientation: Orientation
    snapped_position: Position = Field(description="position moved to the nearest walkable point (z kept)")
    snapped: bool = Field(description="the prediction was off the walkable floor and was moved")
    snap_distance_m: float = Field(description="how far the position was moved, metres (0 if not snapped)")
    inference_ms: float = Field(description="the network's forward pass, milliseconds (without waiting for it)")
    decode_ms: float = Field(description="image decoding and preprocessing, milliseconds")
    total_ms: float = Field(description="the whole request in the server, from reading the upload to the answer, ms")
    image: ImageInfo
    model_input: list[int] = Field(description="(width, height) the photo was resized to, pixels")


class ErrorBody(BaseModel):
    """A refused request: what was wrong (``error``) and how (``detail``)."""

    error: str
    detail: str


# ---------------------------------------------------------------------------- the app
def _finite(obj):
    """``obj`` with NaN and infinities as None (JSON has no NaN; a diverged run's metrics hold some)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


class _Predictor:
    """Decode -> preprocess -> network (under a lock) -> pose, yaw and snapping, for one upload."""

    def __init__(self, served: ServedModel, walkable, max_pixels: int):
        self.served, self.walkable, self.max_pixels = served, walkable, max_pixels
        self.model_lock = threading.Lock()
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.decoders = threading.BoundedSemaphore(max(1, cpus))

    def forward(self, tensor) -> tuple[np.ndarray, np.ndarray, float]:
        """(position (3,) metres, unit quaternion (4,), milliseconds the network ran, not counting
        the wait for the lock)."""
        import torch

        with self.model_lock, torch.inference_mode():
            t0 = time.perf_counter()
            t, q = self.served.model.predict_pose(tensor)
            ms = 1e3 * (time.perf_counter() - t0)
        return t.numpy().astype(float), q.numpy().astype(float), ms

    def __call__(self, data: bytes) -> dict:
        from campose.dataset import image_to_tensor
        from campose.geometry import camera_yaw_pitch_roll

        t0 = time.perf_counter()
        with self.decoders:
            rgb, meta = decode_image(data, self.max_pixels)
            tensor = image_to_tensor(rgb, self.served.image_size)
        decode_ms = 1e3 * (time.perf_counter() - t0)
        x, q, inference_ms = self.forward(tensor)
        yaw, pitch, roll = (math.degrees(float(a)) for a in camera_yaw_pitch_roll(q))
        snap = self.walkable.snap(x)
        xyz = lambda p: dict(zip("xyz", (float(v) for v in p)))  # noqa: E731
        return {"position": xyz(x),
                "orientation": {"quaternion": dict(zip("wxyz", (float(v) for v in q))),
                                "yaw_deg": yaw, "pitch_deg": pitch, "roll_deg": roll},
                "snapped_position": xyz(snap.positions), "snapped": bool(snap.moved[0]),
                "snap_distance_m": float(snap.distance[0]),
                "decode_ms": decode_ms, "inference_ms": inference_ms,
                "image": meta, "model_input": list(self.served.image_size)}


def _model_summary(served: ServedModel, num_threads: int) -> dict:
    info, cfg, meta = served.info, _train_config(served.info), served.info.get("meta") or {}
    return _finite({
        "kind": served.kind, "backbone": served.model.backbone.name, "image_size": list(served.image_size),
        "parameters": served.parameters, "checkpoint": str(served.path.resolve()),
        "profile": meta.get("profile"), "labels": meta.get("labels"), "name": meta.get("name"), "meta": meta,
        "status": info.get("status"), "message": info.get("message"), "best_epoch": info.get("best_epoch"),
        "epochs_run": len(info.get("history") or []), "metrics": info.get("metrics") or {},
        "loss": info.get("loss_config"), "train_config": cfg, "created": info.get("created"),
        "torch_threads": num_threads})


def _predict_body(max_bytes: int, max_pixels: int) -> dict:
    """The OpenAPI request body of ``POST /predict`` (the endpoint parses the form itself)."""
    photo = {"type": "string", "format": "binary",
             "description": f"a JPEG or PNG photo, at most {max_bytes:,} bytes and {max_pixels:,} pixels"}
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"], "properties": {"image": photo}}}}}


def create_app(checkpoint, plan=None, walkable=None, clearance: float = 0.0, num_threads: int | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The FastAPI app serving ``checkpoint`` (a PoseNet or MapNet checkpoint file).

    ``plan``: a :class:`campose.floorplan.FloorPlan`, a plan JSON path, or None (the default floor);
    ``walkable``: a prebuilt :class:`campose.walkable.WalkableMap` for snapping, or None to build one
    from the plan keeping ``clearance`` metres from walls (about 1 s, once). ``num_threads``: torch's
    intra-op threads for the process (None: :func:`campose.train.cpu_threads`). Upload limits:
    ``max_upload_bytes`` and ``max_pixels``. Raises FileNotFoundError or ValueError
    (:class:`campose.train.CheckpointError`, :class:`campose.floorplan.FloorPlanError`) before serving."""
    import torch
    from PIL import Image

    from campose.floorplan import FloorPlan, load_floorplan
    from campose.train import cpu_threads
    from campose.walkable import WalkableMap

    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    served = load_served_model(checkpoint)
    plan = plan if isinstance(plan, FloorPlan) else load_floorplan(plan)
    if walkable is None:
        walkable = WalkableMap.from_plan(plan, clearance=clearance)
    else:
        clearance = None  # unknown: the map was built elsewhere
    threads = cpu_threads(num_threads)
    torch.set_num_threads(threads)
    predictor = _Predictor(served, walkable, int(max_pixels))
    warm = io.BytesIO()
    Image.new("RGB", (32, 24)).save(warm, format="PNG")
    predictor(warm.getvalue())  # warm-up: the first pass allocates and imports, not a person's first request
    plan_body, plan_png = plan_json(plan, walkable, clearance), walkable_png(walkable)
    summary = _model_summary(served, threads)
    started = time.time()

    app = FastAPI(title="campose pose server",
                  description=f"Camera pose from one photo: {served.kind} ({served.model.backbone.name}, "
                              f"{served.image_size[0]}x{served.image_size[1]} input). Positions in metres, "
                              "building frame (x east, y north, z up); quaternions camera-to-world (w, x, y, z); "
                              "yaw in degrees counter-clockwise from east.",
                  version="1", docs_url=None)
    app.state.served, app.state.walkable = served, walkable

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        from http import HTTPStatus

        phrase = HTTPStatus(exc.status_code).phrase
        detail = str(exc.detail)
        if detail == phrase:
            detail = f"{request.method} {request.url.path}: {phrase.lower()}; the endpoints are listed at /docs"
        return _error(exc.status_code, phrase.lower(), detail)

    @app.post("/predict", response_model=Prediction,
              openapi_extra={"requestBody": _predict_body(max_upload_bytes, max_pixels)},
              responses={c: {"model": ErrorBody} for c in (400, 413, 415, 422)},
              summary="Camera pose of one photo (multipart field 'image')")
    async def predict(request: Request):
        t0 = time.perf_counter()
        try:
            data = await _read_upload(request, max_upload_bytes)
            result = await run_in_threadpool(predictor, data)
        except InputError as e:
            return _error(e.status, e.error, e.detail)
        result["total_ms"] = 1e3 * (time.perf_counter() - t0)
        return result

    @app.get("/health", summary="Liveness: the model is loaded")
    def health():
        return {"status": "ok", "model": served.kind, "uptime_s": round(time.time() - started, 1)}

    @app.get("/model", summary="The loaded checkpoint: model, input size, training profile, labels and metrics")
    def model_info():
        return summary

    @app.get("/plan", summary="The floor plan for drawing (metres, building frame) and the walkable grid")
    def plan_info():
        return plan_body

    @app.get("/plan/walkable.png", summary="The walkable grid used for snapping, north up, over walkable.extent",
             response_class=Response)
    def plan_image():
        return Response(plan_png, media_type="image/png")

    @app.get("/", include_in_schema=False)
    def dashboard():
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs():  # Swagger UI from the swagger-ui-bundle package: FastAPI's default loads it from a CDN
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title}: API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.add_middleware(_BodyLimit, max_bytes=max_upload_bytes)
    return app


class _BodyLimit:
    """ASGI middleware: reading a request body past ``max_bytes`` (plus the multipart framing) raises
    :class:`InputError` (413), whatever the headers say (chunked uploads have no Content-Length)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes, self.limit = app, max_bytes, max_bytes + _MULTIPART_SLACK

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise InputError(413, "upload too large", f"the request body passed {self.limit:,} bytes; the "
                                                          f"limit is {self.max_bytes:,} bytes per photo")
            return message

        await self.app(scope, limited_receive, send)


async def _read_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of the multipart field ``image``, refusing bodies over ``max_bytes`` (413): from the
    Content-Length header before reading, else while reading (:class:`_BodyLimit`)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + _MULTIPART_SLACK:
        raise InputError(413, "upload too large", f"the request body is {int(length):,} bytes; the limit is "
                                                  f"{max_bytes:,} bytes ({max_bytes / 2**20:g} MiB) per photo")
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise InputError(415, "expected multipart/form-data",
                         f"send the photo as multipart/form-data in the field 'image' (got content type "
                         f"{ctype or 'none'!r}), e.g. curl -F image=@photo.jpg")
    try:
        form = await request.form(max_files=4, max_fields=16)
    except InputError:
        raise
    except Exception as e:  # malformed multipart bodies, too many parts
        detail = getattr(e, "detail", None) or str(e)
        raise InputError(400, "malformed multipart body", f"cannot parse the form: {detail}") from None
    try:
        upload = form.get("image")
        if upload is None:
            fields = ", ".join(repr(k) for k in form.keys()) or "none"
            raise InputError(422, "missing field 'image'", f"send the photo in the multipart field 'image' "
                                                           f"(fields received: {fields})")
        if not isinstance(upload, UploadFile):
            raise InputError(422, "field 'image' is not a file",
                             "the field 'image' holds text; upload the photo as a file, e.g. curl -F image=@photo.jpg")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InputError(413, "upload too large", f"the photo is over {max_bytes:,} bytes "
                                                      f"({max_bytes / 2**20:g} MiB), the limit per photo")
        return data
    finally:
        await form.close()


def run(checkpoint, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options) -> None:
    """Serve ``checkpoint`` at http://host:port/ under uvicorn until interrupted; ``options`` go to
    :func:`create_app` (plan, walkable, clearance, num_threads, limits). The app is built, and the
    checkpoint checked, before uvicorn starts."""
    import uvicorn

    uvicorn.run(create_app(checkpoint, **options), host=host, port=port, log_level=log_level)


# ---------------------------------------------------------------------------- the server as a process
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS's choice; another process may take it before it is used)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """``campose serve`` running in a subprocess (:func:`start_server`): ``url`` (``http://host:port``),
    ``port``, ``process`` (:class:`subprocess.Popen`), ``startup_s`` (seconds from launch to the first
    answer of ``GET /health``), ``returncode`` (None while it runs) and :meth:`log` (its stderr). A
    context manager: :meth:`stop` on exit. If the Python process that started it exits first, the
    server is killed with it."""

    def __init__(self, process, url: str, port: int, log_path: Path, startup_s: float):
        import weakref

        self.process, self.url, self.port, self.log_path, self.startup_s = process, url, port, log_path, startup_s
        self._finalizer = weakref.finalize(self, _kill_and_clean, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """What the server wrote to stderr so far (its start line; warnings and errors)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (uvicorn finishes the requests in flight and shuts down), SIGKILL after ``timeout``
        seconds; returns the exit code (0 or -SIGTERM after a clean shutdown: uvicorn re-raises the
        signal once it has shut down)."""
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"ServerProcess({self.url}, pid {self.pid}, {state})"


def _kill_and_clean(process, log_path: Path) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    try:
        log_path.unlink()
    except OSError:
        pass


def _healthy(host: str, port: int) -> bool:
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_server(checkpoint, port: int | None = None, host: str = "127.0.0.1", plan=None,
                 clearance: float | None = None, threads: int | None = None, log_level: str = "warning",
                 timeout: float = 120) -> ServerProcess:
    """Start ``campose serve --checkpoint checkpoint`` in a subprocess (this Python, ``-m campose.cli``)
    on ``host``:``port`` (default: a free port, tried up to three times if another process takes it
    first) and wait until ``GET /health`` answers 200. ``plan``, ``clearance``, ``threads`` and
    ``log_level`` are the command's options (None: its defaults; ``warning`` keeps the access log off).
    Raises RuntimeError with the server's own message when it exits before answering (a bad checkpoint
    exits with code 2 and one line), TimeoutError after ``timeout`` seconds (the process is killed)."""
    import subprocess
    import sys
    import tempfile

    cmd = [sys.executable, "-m", "campose.cli", "serve", "--checkpoint", str(checkpoint), "--host", host,
           "--log-level", log_level]
    for flag, value in (("--plan", plan), ("--clearance", clearance), ("--threads", threads)):
        if value is not None:
            cmd += [flag, str(value)]
    for attempt in range(3 if port is None else 1):
        p = free_port(host) if port is None else int(port)
        fd, log_name = tempfile.mkstemp(prefix="campose-serve-", suffix=".log")
        log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(cmd + ["--port", str(p)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not _healthy(host, p):
            if time.monotonic() > deadline:
                _kill_and_clean(proc, log_path)
                raise TimeoutError(f"campose serve did not answer GET /health on {host}:{p} within {timeout} s")
            time.sleep(0.2)
        if proc.poll() is None:
            return ServerProcess(proc, f"http://{host}:{p}", p, log_path, time.perf_counter() - t0)
        out = log_path.read_text(errors="replace").strip()
        _kill_and_clean(proc, log_path)
        if port is None and "address already in use" in out.lower() and attempt < 2:
            continue  # the free port was taken between choosing it and binding it
        lines = out.splitlines()
        raise RuntimeError(f"campose serve exited with code {proc.returncode} before answering: "
                           + ("\n".join(lines[-20:]) if lines else "(no output)"))
    raise AssertionError("unreachable")


def serving(checkpoint, port: int | None = None, **options):
    """A context manager: ``with serving(checkpoint) as url: ...`` runs ``campose serve`` on a free
    loopback port (:func:`start_server`, same ``options``) for the block, yielding its base URL
    (``http://127.0.0.1:PORT``), and stops it afterwards."""
    from contextlib import contextmanager

    @contextmanager
    def _serving():
        with start_server(checkpoint, port=port, **options) as server:
            yield server.url

    return _serving()
