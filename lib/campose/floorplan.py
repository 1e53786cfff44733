"""The building: walls, doors, rooms, the walkable area and a route graph, in the world frame.

A floor plan is a JSON file (see ``data/floorplans/povo1_floor2.json``). Coordinates are metres in
the world frame of the whole project: x east, y north, floor at z = 0, ceiling at ``wall_height``.

* ``walls``: straight segments ``{"id", "from": [x, y], "to": [x, y]}`` from floor to ceiling.
* ``doors``: intervals on a wall ``{"wall", "at", "width", "state"}``; ``at`` is the distance (m) of
  the door's centre from the wall's ``from`` end. ``"open"`` doors are passable gaps with a lintel
  above ``door_height``; ``"closed"`` doors are drawn as door leaves and block the way.
* ``spaces``: named polygons (rooms, corridors, open areas) with a ``walkable`` flag.
* ``routes``: a graph of named nodes on corridor centre lines, the paths that walk-throughs follow.

:func:`load_floorplan` validates everything and raises :class:`FloorPlanError` naming the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_PLAN = Path(__file__).resolve().parents[2] / "data" / "floorplans" / "povo1_floor2.json"

# segment kinds in FloorPlan.segments
WALL, DOOR_CLOSED, DOOR_OPEN = 0, 1, 2


class FloorPlanError(ValueError):
    """A floor plan file or object is malformed; the message names the offending entry."""


@dataclass(frozen=True)
class Space:
    """A named region of the floor (metres, world frame)."""

    name: str
    kind: str
    polygon: np.ndarray  # (K, 2)
    walkable: bool

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask: which of the (N, 2) points lie inside the polygon (even-odd rule)."""
        return points_in_polygon(np.asarray(points, float).reshape(-1, 2), self.polygon)


@dataclass(frozen=True)
class FloorPlan:
    """A validated floor plan.

    ``segments`` (S, 4) holds every drawable piece of wall as ``x0, y0, x1, y1`` (metres); walls are
    split at doors, so each row is plain wall (``kinds == WALL``), a closed door leaf
    (``DOOR_CLOSED``) or the lintel over an open door (``DOOR_OPEN``). ``segment_wall`` gives the
    index of the wall each segment belongs to and ``segment_offset`` the distance (m) of its start
    from the wall's ``from`` end, so textures run continuously along a wall.
    """

    name: str
    description: str
    wall_height: float
    door_height: float
    bounds: np.ndarray  # [[xmin, ymin], [xmax, ymax]]
    wall_ids: tuple[str, ...]
    walls: np.ndarray  # (W, 4)
    doors: tuple[dict, ...]
    segments: np.ndarray  # (S, 4)
    kinds: np.ndarray  # (S,) int
    segment_wall: np.ndarray  # (S,) int
    segment_offset: np.ndarray  # (S,) float, metres
    spaces: tuple[Space, ...]
    route_nodes: dict[str, np.ndarray] = field(default_factory=dict)
    route_edges: tuple[tuple[str, str], ...] = ()
    source: str = ""

    # ------------------------------------------------------------------ queries
    @property
    def size(self) -> tuple[float, float]:
        """Width (x) and depth (y) of the bounding box, metres."""
        (x0, y0), (x1, y1) = self.bounds
        return float(x1 - x0), float(y1 - y0)

    def space_at(self, points: np.ndarray) -> np.ndarray:
        """Index into ``spaces`` of the space containing each (N, 2) point, or -1 if none."""
        pts = np.asarray(points, float).reshape(-1, 2)
        out = np.full(len(pts), -1, int)
        for i, s in enumerate(self.spaces):
            m = (out < 0) & s.contains(pts)
            out[m] = i
        return out

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask: points inside the building's bounds and inside some space."""
        pts = np.asarray(points, float).reshape(-1, 2)
        (x0, y0), (x1, y1) = self.bounds
        inb = (pts[:, 0] > x0) & (pts[:, 0] < x1) & (pts[:, 1] > y0) & (pts[:, 1] < y1)
        return inb & (self.space_at(pts) >= 0)

    def walkable_polygons(self) -> list[np.ndarray]:
        """Polygons whose union is the walkable floor: walkable spaces plus the open doorways
        that join two walkable spaces (a doorway rectangle 0.3 m deep on each side)."""
        polys = [s.polygon for s in self.spaces if s.walkable]
        walk = [s for s in self.spaces if s.walkable]
        for d in self.doors:
            if d["state"] != "open":
                continue
            a, b = np.array(d["a"]), np.array(d["b"])
            t = (b - a) / np.linalg.norm(b - a)
            n = np.array([-t[1], t[0]]) * 0.3
            mid = (a + b) / 2
            sides = [any(s.contains(mid + sgn * n)[0] for s in walk) for sgn in (1, -1)]
            if all(sides):
                polys.append(np.array([a + n, b + n, b - n, a - n]))
        return polys

    def is_walkable(self, points: np.ndarray, clearance: float = 0.0) -> np.ndarray:
        """Boolean mask: (N, 2) points on the walkable floor and at least ``clearance`` metres
        from every wall and closed door (walls count as 5 cm thick whatever the clearance)."""
        pts = np.asarray(points, float).reshape(-1, 2)
        ok = np.zeros(len(pts), bool)
        for poly in self.walkable_polygons():
            ok |= points_in_polygon(pts, poly)
        clearance = max(float(clearance), 0.025)
        if ok.any():
            solid = self.segments[self.kinds != DOOR_OPEN]
            ok[ok] = distance_to_segments(pts[ok], solid) >= clearance
        return ok

    def route_graph(self) -> dict[str, list[str]]:
        """Adjacency lists of the route graph."""
        adj: dict[str, list[str]] = {k: [] for k in self.route_nodes}
        for a, b in self.route_edges:
            adj[a].append(b)
            adj[b].append(a)
        return adj

    # ------------------------------------------------------------------ drawing
    def plot(self, ax=None, spaces: bool = True, routes: bool = False, labels: bool = False):
        """Draw the plan on a matplotlib axis (metres, north up) and return the axis."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Polygon

        if ax is None:
            w, h = self.size
            _, ax = plt.subplots(figsize=(12, 12 * h / w + 0.6))
        colours = {"corridor": "#f2e8cf", "open area": "#e9f5db", "classroom": "#dde7f0",
                   "lab": "#e8def8", "office": "#eeeeee", "open office": "#e0eee0",
                   "stairwell": "#fde2e4", "service": "#e5e5e5"}
        if spaces:
            for s in self.spaces:
                fc = colours.get(s.kind, "#eeeeee") if s.walkable else "#d9d9d9"
                ax.add_patch(Polygon(s.polygon, closed=True, fc=fc, ec="none", zorder=0))
                if labels:
                    c = s.polygon.mean(0)
                    ax.text(c[0], c[1], s.name, ha="center", va="center", fontsize=6, color="#555")
        for seg, kind in zip(self.segments, self.kinds):
            style = {WALL: dict(color="k", lw=2.0), DOOR_CLOSED: dict(color="#8b5a2b", lw=3.0),
                     DOOR_OPEN: dict(color="#8b5a2b", lw=0.8, ls=":")}[int(kind)]
            ax.plot(seg[[0, 2]], seg[[1, 3]], solid_capstyle="butt", zorder=2, **style)
        if routes:
            for a, b in self.route_edges:
                pa, pb = self.route_nodes[a], self.route_nodes[b]
                ax.plot([pa[0], pb[0]], [pa[1], pb[1]], color="#4477aa", lw=0.8, ls="--", zorder=1)
        (x0, y0), (x1, y1) = self.bounds
        ax.set_xlim(x0 - 1, x1 + 1)
        ax.set_ylim(y0 - 1, y1 + 1)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m, east)")
        ax.set_ylabel("y (m, north)")
        return ax


# ---------------------------------------------------------------------- geometry helpers
def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over (N, 2) points."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    px, py = polygon[:, 0], polygon[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    crosses = (py > y) != (qy > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = px + (y - py) * (qx - px) / (qy - py)
    return (np.count_nonzero(crosses & (x < xint), axis=1) % 2) == 1


def distance_to_segments(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Distance (m) from each (N, 2) point to the nearest of the (S, 4) segments."""
    p = points[:, None, :]
    a, b = segments[None, :, :2], segments[None, :, 2:]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    d = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
    return d.min(axis=1)


# ---------------------------------------------------------------------- loading
def _num(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FloorPlanError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _point(v, what: str) -> np.ndarray:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise FloorPlanError(f"{what} must be a point [x, y], got {v!r}")
    return np.array([_num(v[0], what + "[0]"), _num(v[1], what + "[1]")])


def _require(d: dict, key: str, where: str):
    if not isinstance(d, dict):
        raise FloorPlanError(f"{where} must be an object, got {type(d).__name__}")
    if key not in d:
        raise FloorPlanError(f"{where} is missing the key {key!r}")
    return d[key]


def floorplan_from_dict(data: dict, source: str = "<dict>") -> FloorPlan:
    """Validate a plan given as a dict (the JSON structure) and build a :class:`FloorPlan`."""
    where = f"floor plan {source}"
    name = str(_require(data, "name", where))
    H = _num(_require(data, "wall_height", where), "wall_height")
    Hd = _num(data.get("door_height", min(2.1, 0.7 * H)), "door_height")
    if not 1.5 <= H <= 20:
        raise FloorPlanError(f"wall_height {H} m is not plausible (expected 1.5..20 m)")
    if not 0 < Hd < H:
        raise FloorPlanError(f"door_height {Hd} m must lie between 0 and wall_height {H} m")
    b = _require(data, "bounds", where)
    if not isinstance(b, list) or len(b) != 2:
        raise FloorPlanError("bounds must be [[xmin, ymin], [xmax, ymax]]")
    bounds = np.stack([_point(b[0], "bounds[0]"), _point(b[1], "bounds[1]")])
    if np.any(bounds[1] <= bounds[0]):
        raise FloorPlanError(f"bounds {bounds.tolist()} are empty: max must exceed min")
    eps = 1e-6

    walls_in = _require(data, "walls", where)
    if not isinstance(walls_in, list) or not walls_in:
        raise FloorPlanError("walls must be a non-empty list")
    ids, walls = [], []
    for i, w in enumerate(walls_in):
        wid = str(_require(w, "id", f"walls[{i}]"))
        if wid in ids:
            raise FloorPlanError(f"wall id {wid!r} is used twice")
        a = _point(_require(w, "from", f"wall {wid!r}"), f"wall {wid!r} from")
        c = _point(_require(w, "to", f"wall {wid!r}"), f"wall {wid!r} to")
        if np.linalg.norm(c - a) < 0.05:
            raise FloorPlanError(f"wall {wid!r} is shorter than 5 cm (from {a.tolist()} to {c.tolist()})")
        for p in (a, c):
            if np.any(p < bounds[0] - eps) or np.any(p > bounds[1] + eps):
                raise FloorPlanError(f"wall {wid!r} end {p.tolist()} lies outside the bounds {bounds.tolist()}")
        ids.append(wid)
        walls.append(np.concatenate([a, c]))
    walls_arr = np.array(walls)

    # doors: cut walls into pieces
    cuts: dict[int, list[tuple[float, float, int]]] = {i: [] for i in range(len(ids))}
    doors = []
    for i, d in enumerate(data.get("doors", [])):
        wid = str(_require(d, "wall", f"doors[{i}]"))
        if wid not in ids:
            raise FloorPlanError(f"doors[{i}] refers to unknown wall {wid!r}")
        k = ids.index(wid)
        L = float(np.linalg.norm(walls_arr[k, 2:] - walls_arr[k, :2]))
        at = _num(_require(d, "at", f"doors[{i}]"), f"doors[{i}].at")
        width = _num(d.get("width", 1.0), f"doors[{i}].width")
        state = d.get("state", "closed")
        if state not in ("open", "closed"):
            raise FloorPlanError(f"doors[{i}].state must be 'open' or 'closed', got {state!r}")
        if width < 0.5 or width > 10:
            raise FloorPlanError(f"doors[{i}] width {width} m is not plausible (0.5..10 m)")
        s0, s1 = at - width / 2, at + width / 2
        if s0 < 0.05 or s1 > L - 0.05:
            raise FloorPlanError(f"doors[{i}] ({s0:.2f}..{s1:.2f} m) does not fit on wall {wid!r} of length {L:.2f} m")
        for t0, t1, _ in cuts[k]:
            if s0 < t1 and t0 < s1:
                raise FloorPlanError(f"doors[{i}] overlaps another door on wall {wid!r}")
        kind = DOOR_OPEN if state == "open" else DOOR_CLOSED
        cuts[k].append((s0, s1, kind))
        a = walls_arr[k, :2]
        t = (walls_arr[k, 2:] - a) / L
        doors.append({"wall": wid, "at": at, "width": width, "state": state,
                      "a": (a + s0 * t).tolist(), "b": (a + s1 * t).tolist()})
    segs, kinds, owner, offs = [], [], [], []
    for k in range(len(ids)):
        a, c = walls_arr[k, :2], walls_arr[k, 2:]
        L = float(np.linalg.norm(c - a))
        t = (c - a) / L
        pos = 0.0
        for s0, s1, kind in sorted(cuts[k]) + [(L, L, None)]:
            if s0 - pos > 1e-9:
                segs.append(np.concatenate([a + pos * t, a + s0 * t])); kinds.append(WALL); owner.append(k); offs.append(pos)
            if kind is not None:
                segs.append(np.concatenate([a + s0 * t, a + s1 * t])); kinds.append(kind); owner.append(k); offs.append(s0)
            pos = s1

    spaces = []
    for i, s in enumerate(data.get("spaces", [])):
        nm = str(_require(s, "name", f"spaces[{i}]"))
        poly_in = _require(s, "polygon", f"space {nm!r}")
        if not isinstance(poly_in, list) or len(poly_in) < 3:
            raise FloorPlanError(f"space {nm!r} polygon needs at least 3 points")
        poly = np.stack([_point(p, f"space {nm!r} polygon[{j}]") for j, p in enumerate(poly_in)])
        area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], -1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], -1)))
        if area < 0.25:
            raise FloorPlanError(f"space {nm!r} has a degenerate polygon (area {area:.3f} m^2)")
        spaces.append(Space(nm, str(s.get("kind", "room")), poly, bool(s.get("walkable", False))))
    if not any(s.walkable for s in spaces):
        raise FloorPlanError("the plan has no walkable space")

    nodes, edges = {}, []
    routes = data.get("routes", {}) or {}
    for nm, p in (routes.get("nodes", {}) or {}).items():
        nodes[str(nm)] = _point(p, f"route node {nm!r}")
    for i, e in enumerate(routes.get("edges", []) or []):
        if not isinstance(e, (list, tuple)) or len(e) != 2 or e[0] not in nodes or e[1] not in nodes:
            raise FloorPlanError(f"route edge {i} {e!r} must join two known route nodes")
        edges.append((str(e[0]), str(e[1])))

    plan = FloorPlan(name=name, description=str(data.get("description", "")), wall_height=H, door_height=Hd,
                     bounds=bounds, wall_ids=tuple(ids), walls=walls_arr, doors=tuple(doors),
                     segments=np.array(segs), kinds=np.array(kinds, int), segment_wall=np.array(owner, int),
                     segment_offset=np.array(offs), spaces=tuple(spaces), route_nodes=nodes,
                     route_edges=tuple(edges), source=source)
    if nodes:
        names = list(nodes)
        pts = np.stack([nodes[n] for n in names])
        bad = ~plan.is_walkable(pts, clearance=0.2)
        if bad.any():
            raise FloorPlanError(f"route node(s) {[n for n, b in zip(names, bad) if b]} are not on the walkable floor "
                                 "(or closer than 0.2 m to a wall)")
        for a, c in edges:
            line = np.linspace(nodes[a], nodes[c], max(2, int(np.linalg.norm(nodes[c] - nodes[a]) / 0.1)))
            if not plan.is_walkable(line).all():
                raise FloorPlanError(f"route edge {a!r} -> {c!r} leaves the walkable floor (crosses a wall?)")
    return plan


def load_floorplan(path: str | Path | None = None) -> FloorPlan:
    """Load and validate a floor plan JSON file (default: the committed Povo 1 stand-in)."""
    path = Path(path) if path is not None else DEFAULT_PLAN
    if not path.is_file():
        raise FileNotFoundError(f"floor plan file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FloorPlanError(f"floor plan {path} is not valid JSON: {e}") from None
    return floorplan_from_dict(data, source=str(path))
