"""Latency of the pose server: ``POST /predict`` over loopback against the real ``campose serve``.

Starts ``campose serve`` (uvicorn, access log off) on a free loopback port with ``--checkpoint``
(default: chapter 07's quick-profile PoseNet, L1 with alpha = 10, through the cached ``models``
stage; trained first if the cache lacks it), then sends the same 320x240 JPEG from 1, 4 and 16
concurrent clients (keep-alive connections, ``--requests`` per level after a warm-up) and reports
per-request latency (p50, p95, mean, ms, measured by the client), throughput (requests/s), errors
(anything but a 200: must be 0) and the server's own medians (``total_ms``, ``inference_ms``). Also
times :meth:`campose.walkable.WalkableMap.snap` on single points (the per-request snapping cost).
Prints a markdown table and writes benchmarks/results/serve_latency.json. The client runs on the
same machine: on 2 cores it competes with the server, as it would on a small deployment; note the
load average printed alongside.

    python benchmarks/serve_latency.py [--checkpoint PATH] [--requests 500] [--clients 1 4 16] [--threads N]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _common import machine, write_result



def default_checkpoint() -> Path:
    """Chapter 07's run ``L1, alpha = 10`` on the quick profile (cached models stage)."""
    from campose import pipeline
    from campose.study import STUDIES, run_name

    label = "L1, alpha = 10"
    return pipeline.train_model("quick", run_name("posenet", label), **STUDIES["posenet"][label]).checkpoint


def sample_photo(width: int = 320, height: int = 240) -> bytes:
    """A JPEG of a quick-profile test frame if rendered, else of smooth synthetic colours."""
    from PIL import Image

    frames = sorted(Path(os.environ.get("CAMPOSE_DATA", "data/runs")).glob("quick/render/quick-test/images/*.png"))
    if frames:
        img = Image.open(frames[len(frames) // 2]).convert("RGB")
    else:
        yy, xx = np.mgrid[0:height, 0:width] / width
        img = Image.fromarray((127.5 * (1 + np.sin(np.stack([7 * xx, 5 * yy, 3 * (xx + yy)], -1)))).astype(np.uint8))
    buf = io.BytesIO()
    img.resize((width, height), Image.BILINEAR).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "campose-bench-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def run_level(port: int, body: bytes, ctype: str, clients: int, requests: int) -> dict:
    """``requests`` POST /predict from ``clients`` threads, each on its own keep-alive connection."""
    latencies, server_total, server_model, errors = [], [], [], []
    lock, left = threading.Lock(), [requests]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": ctype})
                resp = conn.getresponse()
                payload = resp.read()
                dt = time.perf_counter() - t0
            except OSError as e:
                with lock:
                    errors.append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            with lock:
                if resp.status != 200:
                    errors.append(f"{resp.status}: {payload[:200]!r}")
                    continue
                r = json.loads(payload)
                latencies.append(dt)
                server_total.append(r["total_ms"])
                server_model.append(r["inference_ms"])
        conn.close()

    t0 = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    ms = 1e3 * np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": requests, "errors": len(errors), "error_examples": errors[:3],
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean()),
            "throughput_rps": len(latencies) / wall, "server_total_p50_ms": float(np.median(server_total or [np.nan])),
            "server_model_p50_ms": float(np.median(server_model or [np.nan]))}


def snap_cost(clearance: float = 0.0, n: int = 20000) -> dict:
    """Microseconds per :meth:`WalkableMap.snap` call on one point (random points over the grid,
    on and off the walkable floor), and per point in one batch of ``n``."""
    from campose.walkable import WalkableMap

    w = WalkableMap.from_plan(clearance=clearance)
    x0, x1, y0, y1 = w.extent
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n), np.full(n, 1.6)])
    w.snap(pts[0])
    t0 = time.perf_counter()
    for p in pts[:5000]:
        w.snap(p)
    single = (time.perf_counter() - t0) / 5000
    t0 = time.perf_counter()
    res = w.snap(pts)
    batch = (time.perf_counter() - t0) / n
    return {"single_us": 1e6 * single, "batch_us_per_point": 1e6 * batch, "share_moved": res.share_moved,
            "grid": list(w.shape), "resolution_m": w.resolution}


def main(argv=None) -> int:
    from campose.serve import start_server

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="default: the quick profile's posenet-l1-alpha-10 run")
    p.add_argument("--requests", type=int, default=500, help="requests per concurrency level (default 500)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels (default 1 4 16)")
    p.add_argument("--threads", type=int, default=None, help="server torch threads (default: campose serve's)")
    p.add_argument("--size", default="320x240", help="photo WIDTHxHEIGHT (default 320x240)")
    args = p.parse_args(argv)

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    w, h = (int(v) for v in args.size.split("x"))
    photo = sample_photo(w, h)
    body, ctype = multipart(photo)
    load_before = os.getloadavg()
    server = start_server(checkpoint, threads=args.threads, timeout=180)  # campose serve on a free loopback port
    port = server.port
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/model")
        model = json.loads(c.getresponse().read())
        run_level(port, body, ctype, 1, 20)  # warm-up
        levels = [run_level(port, body, ctype, k, args.requests) for k in args.clients]
    finally:
        server.stop()
    snap = snap_cost()
    load_after = os.getloadavg()

    size = "x".join(str(v) for v in model["image_size"])
    print(f"campose serve: {model['kind']} ({model['backbone']}, input {size}, torch threads {model['torch_threads']}), "
          f"checkpoint {checkpoint}")
    print(f"photo: {w}x{h} JPEG, {len(photo):,} bytes; {args.requests} requests per level; "
          f"CPUs: {len(os.sched_getaffinity(0))}; load average before/after: "
          f"{load_before[0]:.2f} / {load_after[0]:.2f}\n")
    print("| clients | requests | errors | p50 (ms) | p95 (ms) | mean (ms) | throughput (req/s) "
          "| server total p50 (ms) | model p50 (ms) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in levels:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
              f"| {r['mean_ms']:.1f} | {r['throughput_rps']:.1f} | {r['server_total_p50_ms']:.1f} "
              f"| {r['server_model_p50_ms']:.1f} |")
    print(f"\nsnapping (WalkableMap.snap, grid {snap['grid'][0]}x{snap['grid'][1]} at {snap['resolution_m']} m): "
          f"{snap['single_us']:.1f} us per single-point call; {snap['batch_us_per_point']:.2f} us per point in a batch "
          f"({100 * snap['share_moved']:.0f}% of the random points moved)")
    for r in levels:
        if r["errors"]:
            print(f"errors at {r['clients']} clients, e.g. {r['error_examples']}")
    keys = ("kind", "backbone", "image_size", "torch_threads")
    out = {"benchmark": "serve_latency", "checkpoint": str(checkpoint), "model": {k: model[k] for k in keys},
           "photo": {"width": w, "height": h, "bytes": len(photo)}, "levels": levels, "snap": snap,
           "load_average": [load_before[0], load_after[0]], "machine": machine()}
    write_result("serve_latency", out)
    return 1 if any(r["errors"] for r in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
