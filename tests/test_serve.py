"""The pose server (``campose.serve``, ``campose serve``): every endpoint through FastAPI's TestClient,
every kind of bad upload, and the real ``campose serve`` process on a loopback port.

Checkpoints are written here as :func:`campose.train.train` writes them (an untrained
mobilenet_v3_small PoseNet with a small head, 64x48 input): ``on_floor`` predicts near a walkable
point of the plan, ``off_floor`` outside the building, so both snapping outcomes are exercised.
"""

import io
import math
import re
import signal
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from campose import cli
from campose.dataset import image_to_tensor
from campose.floorplan import load_floorplan
from campose.losses import build_loss
from campose.models import build_model
from campose.serve import MAX_PIXELS, MAX_UPLOAD_BYTES, create_app, serving, start_server
from campose.train import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint
from campose.walkable import WalkableMap

SIZE = (64, 48)


def write_checkpoint(path, kind="posenet", mean=(20.0, 13.0, 1.6), std=(0.05, 0.05, 0.01), seed=0):
    """A checkpoint as ``train.train`` writes it (one epoch's history, a NaN validation loss)."""
    torch.manual_seed(seed)
    cfg = TrainConfig(kind=kind, backbone="mobilenet_v3_small", hidden=(64,), image_size=SIZE, epochs=1)
    model = build_model(kind, backbone="mobilenet_v3_small", hidden=[64], translation_mean=list(mean),
                        translation_std=list(std)).eval()
    row = {"epoch": 1, "train_loss": 1.5, "val_loss": math.nan, "val_position_m": 2.5, "val_rotation_deg": 12.0,
           "lr": 1e-4, "seconds": 3.0}
    save_checkpoint(path, model, model_config=model.config, loss_config=build_loss(kind, **cfg.loss_options()).config,
                    normalisation={"translation_mean": list(mean), "translation_std": list(std)},
                    train_config=cfg.to_dict(), history=[row], best_epoch=1, status="completed", message="",
                    stopped_epoch=None, metrics=row, split={"walk": {"train": [0, 9], "val": [9, 10]}}, seconds=3.0,
                    meta={"profile": "quick", "labels": "truth", "name": f"test-{kind}"})
    return path


@pytest.fixture(scope="module")
def plan():
    return load_floorplan()


@pytest.fixture(scope="module")
def walkable(plan):
    return WalkableMap.from_plan(plan)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, plan):
    d = tmp_path_factory.mktemp("checkpoints")
    inside = next(iter(plan.route_nodes.values()))  # route nodes are 0.2 m or more from any wall
    return {"on_floor": write_checkpoint(d / "on.pt", mean=(*inside, 1.6)),
            "off_floor": write_checkpoint(d / "off.pt", mean=(-1.5, -1.5, 1.6), seed=1),
            "mapnet": write_checkpoint(d / "mapnet.pt", kind="mapnet", mean=(*inside, 1.6), seed=2),
            "menet": write_checkpoint(d / "menet.pt", kind="menet")}


@pytest.fixture(scope="module")
def client(checkpoints, plan, walkable):
    with TestClient(create_app(checkpoints["on_floor"], plan=plan, walkable=walkable)) as c:
        yield c


def encode(img, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(seed=0, size=(320, 240)) -> Image.Image:
    """A smooth colour image (gradients and blobs), so JPEG and resizing behave as on photos."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [np.sin(6 * xx * rng.uniform(0.5, 2) + 4 * yy * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)]
    return Image.fromarray(((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8))


def post(client, data: bytes, name="photo.png", field="image", mime="application/octet-stream"):
    return client.post("/predict", files={field: (name, data, mime)})


def expected_pose(checkpoint, data: bytes):
    """What the model says for the decoded upload: ``predict_pose(image_to_tensor(img, size))``."""
    model, _ = load_checkpoint(checkpoint)
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    t, q = model.predict_pose(image_to_tensor(img, SIZE))
    return t.numpy(), q.numpy()


def xyz(p):
    return np.array([p["x"], p["y"], p["z"]])


def quat(o):
    q = o["quaternion"]
    return np.array([q["w"], q["x"], q["y"], q["z"]])


# ---------------------------------------------------------------------------- predictions
def test_predict_fields_and_values(client, checkpoints, walkable):
    data = encode(photo(), "JPEG", quality=90)
    r = post(client, data, "photo.jpg", mime="image/jpeg")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"position", "orientation", "snapped_position", "snapped", "snap_distance_m", "inference_ms",
                         "decode_ms", "total_ms", "image", "model_input"}
    assert body["image"] == {"width": 320, "height": 240, "format": "JPEG", "mode": "RGB"}
    assert body["model_input"] == list(SIZE)
    for k in ("inference_ms", "decode_ms", "total_ms"):
        assert isinstance(body[k], float) and body[k] > 0
    assert body["total_ms"] >= body["inference_ms"] + body["decode_ms"]
    o = body["orientation"]
    assert all(isinstance(o[k], float) for k in ("yaw_deg", "pitch_deg", "roll_deg"))
    q = quat(o)
    assert abs(np.linalg.norm(q) - 1) < 1e-5 and q[0] >= 0
    t_ref, q_ref = expected_pose(checkpoints["on_floor"], data)
    np.testing.assert_allclose(xyz(body["position"]), t_ref, atol=1e-5)
    np.testing.assert_allclose(q, q_ref, atol=1e-5)
    # yaw: the optical axis (third column of R) in the plane, counter-clockwise from east
    from campose.geometry import quat_to_matrix
    from campose.plots import headings

    fwd = quat_to_matrix(q)[:, 2]
    assert o["yaw_deg"] == pytest.approx(math.degrees(math.atan2(fwd[1], fwd[0])), abs=1e-6)
    d = headings(q)[0]
    assert o["yaw_deg"] == pytest.approx(math.degrees(math.atan2(d[1], d[0])), abs=1e-6)
    # near a walkable route node: not snapped
    assert walkable.is_walkable(t_ref) and body["snapped"] is False and body["snap_distance_m"] == 0.0
    assert body["snapped_position"] == body["position"]


def test_off_floor_prediction_is_snapped(checkpoints, plan, walkable):
    with TestClient(create_app(checkpoints["off_floor"], plan=plan, walkable=walkable)) as c:
        for seed in range(3):
            body = post(c, encode(photo(seed))).json()
            p, s = xyz(body["position"]), xyz(body["snapped_position"])
            assert not walkable.is_walkable(p) and body["snapped"] is True
            assert walkable.is_walkable(s) and s[2] == p[2]
            assert body["snap_distance_m"] == pytest.approx(np.linalg.norm(s[:2] - p[:2]), abs=1e-9)
            assert body["snap_distance_m"] > 1.0  # from outside the building to its inside


def test_mapnet_checkpoint(checkpoints, plan, walkable):
    with TestClient(create_app(checkpoints["mapnet"], plan=plan, walkable=walkable)) as c:
        data = encode(photo(3))
        body = post(c, data).json()
        t_ref, q_ref = expected_pose(checkpoints["mapnet"], data)
        np.testing.assert_allclose(xyz(body["position"]), t_ref, atol=1e-5)
        np.testing.assert_allclose(quat(body["orientation"]), q_ref, atol=1e-5)
        assert c.get("/model").json()["kind"] == "mapnet"


def grey_16bit(grey: np.ndarray) -> bytes:
    return encode(Image.fromarray(grey.astype(np.uint16) * 257))


@pytest.mark.parametrize("variant", ["grey", "grey16", "rgba", "palette", "palette_transparent"])
def test_image_modes_answer_as_rgb(client, variant):
    rgb = photo(4)
    if variant in ("grey", "grey16"):
        grey = rgb.convert("L")
        same = Image.merge("RGB", [grey] * 3)
        data = grey_16bit(np.asarray(grey)) if variant == "grey16" else encode(grey)
    elif variant == "rgba":
        same, data = rgb, encode(Image.merge("RGBA", [*rgb.split(), Image.new("L", rgb.size, 255)]))
    else:
        pal = rgb.quantize(colors=64)
        if variant == "palette_transparent":
            pal.info["transparency"] = 63  # a transparent colour: PIL goes through RGBA, the colour stays
        same, data = pal.convert("RGB"), encode(pal)
    r, ref = post(client, data), post(client, encode(same))
    assert r.status_code == 200, r.text
    body, want = r.json(), ref.json()
    assert body["image"]["mode"] == {"grey": "L", "grey16": "I;16", "rgba": "RGBA"}.get(variant, "P")
    assert body["position"] == want["position"] and body["orientation"] == want["orientation"]


def test_exif_orientation_is_applied(client):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show rotated 90 degrees clockwise
    data = encode(photo(5), "JPEG", quality=95, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    body = post(client, data).json()
    want = post(client, encode(upright)).json()
    assert body["position"] == want["position"] and body["image"]["width"] == 320


def test_concurrent_requests_agree(client):
    data = encode(photo(6), "JPEG")
    one = post(client, data).json()["position"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(client, data), range(12)))
    assert all(a.status_code == 200 and a.json()["position"] == one for a in answers)


# ---------------------------------------------------------------------------- bad input
def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, followed by a few bytes of pixel data."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(encode(photo(7, (64, 48)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _truncated_png():
    data = encode(photo(8))
    return data[: len(data) // 2]


def _corrupt_png():
    data = bytearray(encode(photo(9)))
    data[200:400] = b"\x55" * 200  # inside the image data: the zlib stream or a chunk CRC breaks
    return bytes(data)


BAD = {  # name -> (request kwargs, status, words the error must contain)
    "empty": (lambda: {"files": {"image": ("e.png", b"", "image/png")}}, 400, "empty upload"),
    "text": (lambda: {"files": {"image": ("notes.txt", b"just some text\n" * 20, "text/plain")}}, 415,
             "not a JPEG or PNG"),
    "gif": (lambda: {"files": {"image": ("a.gif", encode(photo(1), "GIF"), "image/gif")}}, 415, "not a JPEG or PNG"),
    "truncated_png": (lambda: {"files": {"image": ("t.png", _truncated_png(), "image/png")}}, 400, "corrupt image"),
    "truncated_jpeg": (lambda: {"files": {"image": ("t.jpg", encode(photo(2), "JPEG")[:1500], "image/jpeg")}}, 400,
                       "corrupt image"),
    "corrupt_png": (lambda: {"files": {"image": ("c.png", _corrupt_png(), "image/png")}}, 400, "corrupt image"),
    "huge_png_header": (lambda: {"files": {"image": ("h.png", png_header(8000, 6000), "image/png")}}, 413,
                        "48,000,000 pixels"),
    "huge_jpeg_header": (lambda: {"files": {"image": ("h.jpg", jpeg_claiming(7000, 7000), "image/jpeg")}}, 413,
                         "49,000,000 pixels"),
    "decompression_bomb": (lambda: {"files": {"image": ("b.png", png_header(60000, 60000), "image/png")}}, 413,
                           "image too large"),
    "too_many_bytes": (lambda: {"files": {"image": ("big.jpg", b"\xff" * (MAX_UPLOAD_BYTES + 2**17), "image/jpeg")}},
                       413, "upload too large"),
    "wrong_field": (lambda: {"files": {"file": ("p.png", encode(photo(3)), "image/png")}}, 422,
                    "missing field 'image'"),
    "text_field": (lambda: {"data": {"image": "photo.png"}, "files": {"other": ("x", b"x", "text/plain")}}, 422,
                   "not a file"),
    "not_multipart": (lambda: {"content": encode(photo(3)), "headers": {"content-type": "image/png"}}, 415,
                      "multipart/form-data"),
    "malformed_multipart": (lambda: {"content": b"garbage, no parts",
                                     "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400,
                            "malformed multipart"),
    "no_boundary": (lambda: {"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, 400,
                    "Missing boundary"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(client, case):
    make, status, words = BAD[case]
    r = client.post("/predict", **make())
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and words in body["error"] + " " + body["detail"]
    assert post(client, encode(photo(0))).status_code == 200  # still serving


def test_huge_image_is_refused_without_decoding(client, monkeypatch):
    from PIL import ImageFile

    def never(self, *a, **k):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    r = post(client, png_header(10000, 5000))
    assert r.status_code == 413 and f"{MAX_PIXELS:,} pixels" in r.json()["detail"]


def test_limits_are_configurable_and_enforced_while_reading(checkpoints, plan, walkable):
    app = create_app(checkpoints["on_floor"], plan=plan, walkable=walkable, max_upload_bytes=20_000, max_pixels=10_000)
    with TestClient(app) as c:
        r = post(c, b"\xff" * 30_000)  # within the multipart slack: refused while reading the part
        assert r.status_code == 413 and "20,000 bytes" in r.json()["detail"]
        r = post(c, encode(photo(0, (200, 100))))  # 20,000 pixels
        assert r.status_code == 413 and "10,000 pixels" in r.json()["detail"]
        assert post(c, encode(photo(0, (100, 100)))).status_code == 200
        # no Content-Length (a chunked body): cut off once past the limit
        boundary = "b0undary"
        head = f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n\r\n".encode()
        chunks = iter([head] + [b"\xff" * 10_000] * 20 + [f"\r\n--{boundary}--\r\n".encode()])
        r = c.post("/predict", content=chunks, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and "request body passed" in r.json()["detail"]
        assert post(c, encode(photo(0, (100, 100)))).status_code == 200


# ---------------------------------------------------------------------------- the other endpoints
def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["model"] == "posenet"


def test_model_describes_the_checkpoint(client, checkpoints):
    m = client.get("/model").json()
    model, _ = load_checkpoint(checkpoints["on_floor"])
    assert m["kind"] == "posenet" and m["backbone"] == "mobilenet_v3_small" and m["image_size"] == list(SIZE)
    assert m["profile"] == "quick" and m["labels"] == "truth" and m["name"] == "test-posenet"
    assert m["status"] == "completed" and m["best_epoch"] == 1 and m["epochs_run"] == 1
    assert m["parameters"] == sum(p.numel() for p in model.parameters())
    assert m["checkpoint"] == str(checkpoints["on_floor"].resolve())
    assert m["metrics"]["val_position_m"] == 2.5 and m["metrics"]["val_loss"] is None  # NaN -> null
    assert m["torch_threads"] >= 1 and m["train_config"]["image_size"] == list(SIZE)


def test_plan_and_walkable_image(client, plan, walkable):
    p = client.get("/plan").json()
    assert p["bounds"] == plan.bounds.tolist() and len(p["segments"]) == len(p["segment_kinds"]) == len(plan.segments)
    assert set(p["segment_kinds"]) <= {"wall", "door_closed", "door_open"}
    assert len(p["spaces"]) == len(plan.spaces) and any(s["walkable"] for s in p["spaces"])
    assert p["walkable"]["extent"] == pytest.approx(list(walkable.extent), abs=1e-3)
    r = client.get(p["walkable"]["image"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(r.content)))[::-1, :, 3] > 0  # north-up image -> grid rows
    assert np.array_equal(mask, walkable.mask)


def test_dashboard_is_served_from_the_package(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert 'id="marker"' in html and 'id="plan"' in html and 'type="file"' in html
    for asset, mime in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        a = client.get(asset)
        assert a.status_code == 200 and mime in a.headers["content-type"]
        html += a.text
    # no CDN: the only absolute URL is the SVG namespace

    urls = set(re.findall(r"https?://[^\s\"'`)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls


def test_openapi_docs_and_json_404(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    # Swagger UI works offline: every script and stylesheet it loads is served here, none from a CDN
    assets = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", docs.text)
    assert assets and not [a for a in assets if a.startswith("http")], assets
    for a in assets:
        assert client.get(a).status_code == 200, a
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image"]
    assert {"/health", "/model", "/plan"} <= set(spec["paths"])
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not found" and "/docs" in r.json()["detail"]
    r = client.get("/predict")
    assert r.status_code == 405 and set(r.json()) == {"error", "detail"}


# ---------------------------------------------------------------------------- refusals at start
def test_create_app_refuses_relative_and_foreign_checkpoints(checkpoints, plan, walkable, tmp_path):
    with pytest.raises(CheckpointError, match="menet model.*absolute-pose model"):
        create_app(checkpoints["menet"], plan=plan, walkable=walkable)
    with pytest.raises(FileNotFoundError):
        create_app(tmp_path / "missing.pt", plan=plan, walkable=walkable)
    with pytest.raises(ValueError, match="num_threads"):
        create_app(checkpoints["on_floor"], plan=plan, walkable=walkable, num_threads=0)


def test_cli_serve_refuses_bad_checkpoints(checkpoints, tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    cases = [(tmp_path / "missing.pt", "checkpoint not found"), (tmp_path, "checkpoint not found"),
             (foreign, "is not a campose checkpoint"), (garbage, "cannot read checkpoint"),
             (checkpoints["menet"], "holds a menet model")]
    for path, words in cases:
        assert cli.main(["serve", "--checkpoint", str(path), "--port", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("campose serve: error: ") and words in err and err.count("\n") == 1, err


def test_cli_serve_process_exits_2_on_a_menet_checkpoint(checkpoints):
    p = subprocess.run([sys.executable, "-m", "campose.cli", "serve", "--checkpoint", str(checkpoints["menet"])],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "campose serve: error:" in p.stderr and "menet" in p.stderr
    assert "Uvicorn running" not in p.stderr


def test_cli_serve_runs_the_real_server(checkpoints):
    with start_server(checkpoints["on_floor"]) as server:  # campose serve on a free loopback port
        url = server.url
        assert server.running and server.startup_s > 0 and url.startswith("http://127.0.0.1:")
        data = encode(photo(0), "JPEG")
        r = httpx.post(f"{url}/predict", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=30)
        assert r.status_code == 200, r.text
        t_ref, _ = expected_pose(checkpoints["on_floor"], data)
        np.testing.assert_allclose(xyz(r.json()["position"]), t_ref, atol=1e-5)
        assert httpx.post(f"{url}/predict", files={"image": ("e.jpg", b"", "image/jpeg")}).status_code == 400
        assert httpx.get(f"{url}/").status_code == 200
        assert "campose serve: posenet" in server.log()
    assert server.returncode in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
    assert server.stop() == server.returncode
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


def test_start_server_reports_a_server_that_exits(checkpoints):
    with pytest.raises(RuntimeError, match="exited with code 2.*menet"):
        start_server(checkpoints["menet"])


def test_serving_yields_the_url_and_stops(checkpoints):
    with serving(checkpoints["on_floor"], threads=1) as url:
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ok"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
