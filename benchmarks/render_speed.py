"""Renderer speed: frames per second along a walk-through of the default floor (2 CPU cores).

Prints a small table and writes benchmarks/results/render_speed.json. Target (issue 2): at least
50 frames/s at 320x240.
"""

from __future__ import annotations

import time

import numpy as np
from _common import machine, write_result

from campose.camera import Intrinsics
from campose.floorplan import load_floorplan
from campose.render import Renderer
from campose.trajectory import simulate_walk


def main(frames: int = 200) -> dict:
    plan = load_floorplan()
    t0 = time.perf_counter()
    Renderer(plan, seed=0, texture_cache=False)  # painting, as a first process on a machine does
    paint = time.perf_counter() - t0
    Renderer(plan, seed=0)  # into the texture cache if it is not there yet
    t0 = time.perf_counter()
    renderer = Renderer(plan, seed=0)  # what every later process does
    load = time.perf_counter() - t0
    walk = simulate_walk(plan, ["SW", "NW", "NE", "SE", "SW"], fps=10, seed=1)
    idx = np.linspace(0, len(walk) - 1, frames).astype(int)
    rows = []
    for w, h in [(160, 120), (320, 240), (640, 480)]:
        K = Intrinsics.from_fov(w, h, 65.0)
        renderer.render(walk.x[0], walk.q[0], K)  # compile / warm up
        t = time.perf_counter()
        for i in idx:
            renderer.render(walk.x[i], walk.q[i], K)
        dt = time.perf_counter() - t
        rows.append({"width": w, "height": h, "frames": len(idx), "fps": len(idx) / dt, "ms_per_frame": 1000 * dt / len(idx)})
    result = {"benchmark": "render_speed", "texture_paint_s": paint, "texture_load_s": load, "results": rows,
              "machine": machine()}
    print(f"texture painting: {paint:.1f} s (once per machine); loading them from the disk cache: {load:.2f} s")
    print(f"{'size':>10} {'frames/s':>10} {'ms/frame':>10}")
    for r in rows:
        print(f"{r['width']:>5}x{r['height']:<4} {r['fps']:>10.1f} {r['ms_per_frame']:>10.2f}")
    write_result("render_speed", result)
    return result


if __name__ == "__main__":
    main()
