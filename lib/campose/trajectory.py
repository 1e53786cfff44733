"""Walk-through sequences on a floor plan: where a person holding a phone walks and looks.

A walk follows named nodes of the plan's route graph (shortest paths between them), with a
per-walk sideways offset, a preferred speed around 1.2 m/s, slow-downs at turns, a body heading
that turns at a limited rate (so corners take several frames), head turns on top of it, eye height
with step bob, and small pitch/roll jitter. Everything is in the world frame (metres, radians) and
deterministic for a seed. Poses are camera-to-world, as everywhere in campose.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from campose.floorplan import FloorPlan


@dataclass(frozen=True)
class WalkStyle:
    """How a person walks and looks around (metres, seconds, degrees)."""

    speed: float = 1.2  # preferred walking speed, m/s
    speed_jitter: float = 0.12  # slow variation of the speed, m/s
    eye_height: float = 1.6  # m
    bob: float = 0.02  # vertical step bob amplitude, m
    step_hz: float = 1.8
    lateral: float = 0.25  # slow sideways wander, m (1 sigma)
    corner_smoothing: float = 0.6  # Gaussian smoothing of the route polyline, m
    max_turn_rate: float = 45.0  # body heading rate limit, deg/s
    head_yaw: float = 12.0  # head turns relative to the body, deg (1 sigma)
    head_timescale: float = 2.5  # s
    pitch: float = -4.0  # mean pitch (negative looks down), deg
    pitch_jitter: float = 2.0  # deg
    roll_jitter: float = 1.5  # deg


@dataclass
class Walk:
    """A sampled walk: times (s), camera centres (N, 3) m, camera-to-world quaternions (N, 4)."""

    name: str
    t: np.ndarray
    x: np.ndarray
    q: np.ndarray
    route: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def length(self) -> float:
        """Horizontal path length in metres."""
        return float(np.linalg.norm(np.diff(self.x[:, :2], axis=0), axis=1).sum())


def shortest_path(plan: FloorPlan, a: str, b: str) -> list[str]:
    """Dijkstra over the route graph; node names from ``a`` to ``b`` inclusive."""
    for n in (a, b):
        if n not in plan.route_nodes:
            raise KeyError(f"unknown route node {n!r}; known: {sorted(plan.route_nodes)}")
    adj = plan.route_graph()
    dist, prev, heap = {a: 0.0}, {}, [(0.0, a)]
    while heap:
        d, u = heapq.heappop(heap)
        if u == b:
            break
        if d > dist.get(u, np.inf):
            continue
        for v in adj[u]:
            nd = d + float(np.linalg.norm(plan.route_nodes[u] - plan.route_nodes[v]))
            if nd < dist.get(v, np.inf):
                dist[v], prev[v] = nd, u
                heapq.heappush(heap, (nd, v))
    if b not in dist:
        raise ValueError(f"route nodes {a!r} and {b!r} are not connected")
    path = [b]
    while path[-1] != a:
        path.append(prev[path[-1]])
    return path[::-1]


def route_polyline(plan: FloorPlan, waypoints: list[str]) -> tuple[np.ndarray, list[str]]:
    """Join waypoints by shortest paths; returns the (K, 2) polyline and the node list."""
    if len(waypoints) < 2:
        raise ValueError("a route needs at least two waypoints")
    nodes = [waypoints[0]]
    for a, b in zip(waypoints[:-1], waypoints[1:]):
        nodes += shortest_path(plan, a, b)[1:]
    return np.stack([plan.route_nodes[n] for n in nodes]), nodes


def _resample(poly: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    poly = poly[keep]
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(poly, axis=0), axis=1))])
    si = np.arange(0, s[-1], step)
    return np.stack([np.interp(si, s, poly[:, 0]), np.interp(si, s, poly[:, 1])], 1)


def _smooth_series(n: int, sigma_samples: float, rng) -> np.ndarray:
    """Unit-variance smooth Gaussian noise of length n (correlation length ~ sigma_samples)."""
    from scipy.ndimage import gaussian_filter1d

    pad = int(4 * sigma_samples) + 1
    w = rng.standard_normal(n + 2 * pad)
    s = gaussian_filter1d(w, max(sigma_samples, 1e-3), mode="wrap")[pad: pad + n]
    return s / max(s.std(), 1e-9)


def simulate_walk(plan: FloorPlan, waypoints: list[str], fps: float = 10.0, seed: int = 0,
                  style: WalkStyle = WalkStyle(), name: str = "walk", clearance: float = 0.35) -> Walk:
    """Simulate a person walking the route through ``waypoints`` and sample it at ``fps``."""
    from scipy.ndimage import gaussian_filter1d

    from campose.geometry import camera_rotation

    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rng = np.random.default_rng(seed)
    poly, nodes = route_polyline(plan, waypoints)
    ds = 0.02
    path = _resample(poly, ds)
    sig = style.corner_smoothing / ds
    path = np.stack([gaussian_filter1d(path[:, i], sig, mode="nearest") for i in range(2)], 1)
    # sideways wander, kept inside the walkable area with clearance
    tang = np.gradient(path, axis=0)
    tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-tang[:, 1], tang[:, 0]], 1)
    off = style.lateral * _smooth_series(len(path), 4.0 / ds, rng)
    for _ in range(6):
        cand = path + off[:, None] * normal
        bad = ~plan.is_walkable(cand, clearance)
        if not bad.any():
            break
        off[bad] *= 0.5
        off = gaussian_filter1d(off, 0.5 / ds, mode="nearest")
    path = path + off[:, None] * normal
    ok = plan.is_walkable(path, clearance * 0.6)
    if not ok.all():
        p = path[~ok][0]
        raise ValueError(f"walk {name!r} leaves the walkable area near ({p[0]:.2f}, {p[1]:.2f}); "
                         "check the route graph or reduce corner_smoothing")
    s_path = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    path_yaw = np.unwrap(np.arctan2(np.gradient(path[:, 1]), np.gradient(path[:, 0])))

    # walker: integrate arclength and body yaw at 100 Hz
    dt = 0.01
    total = s_path[-1]
    s, yaw = 0.0, path_yaw[0]
    ts, ss, yaws = [], [], []
    vmax_turn = np.radians(style.max_turn_rate)
    speed_noise = _smooth_series(int(total / 0.3 / dt) + 1000, 3.0 / dt, rng)
    t = 0.0
    k = 0
    while s < total and k < 10_000_000:
        look = np.interp(s + 0.6, s_path, path_yaw)
        err = (look - yaw + np.pi) % (2 * np.pi) - np.pi
        yaw += np.clip(err / 0.4 * dt, -vmax_turn * dt, vmax_turn * dt)
        v_pref = style.speed + style.speed_jitter * speed_noise[min(k, len(speed_noise) - 1)]
        cur = (look - np.interp(s, s_path, path_yaw) + np.pi) % (2 * np.pi) - np.pi
        v = v_pref * np.clip(np.cos(err), 0.15, 1.0) * (1.0 / (1.0 + 1.5 * abs(cur)))
        ts.append(t); ss.append(s); yaws.append(yaw)
        s += v * dt
        t += dt
        k += 1
    ts, ss, yaws = np.array(ts), np.array(ss), np.array(yaws)
    tf = np.arange(0, ts[-1], 1.0 / fps)
    sf = np.interp(tf, ts, ss)
    body = np.interp(tf, ts, yaws)
    n = len(tf)
    xy = np.stack([np.interp(sf, s_path, path[:, 0]), np.interp(sf, s_path, path[:, 1])], 1)
    head = np.radians(style.head_yaw) * _smooth_series(n, style.head_timescale * fps / 2, rng)
    pitch = np.radians(style.pitch + style.pitch_jitter * _smooth_series(n, 0.8 * fps, rng))
    roll = np.radians(style.roll_jitter * _smooth_series(n, 0.8 * fps, rng))
    phase = rng.uniform(0, 2 * np.pi)
    z = style.eye_height + style.bob * np.sin(2 * np.pi * style.step_hz * tf + phase)
    x = np.column_stack([xy, z])
    q = camera_rotation(body + head, pitch, roll)
    return Walk(name=name, t=tf, x=x, q=np.asarray(q), route=nodes)
