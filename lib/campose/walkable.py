"""The walkable map of a floor and snapping predicted positions onto it.

A :class:`WalkableMap` is an occupancy grid in the world frame (metres, x east, y north): cell
``(row, col)`` covers ``x in [x0 + col r, x0 + (col + 1) r)`` and ``y in [y0 + row r, y0 + (row + 1) r)``
with ``r`` the resolution (default 5 cm). It is built from a floor plan (:meth:`WalkableMap.from_plan`:
the plan's walkable spaces and open doorways, optionally kept ``clearance`` metres away from walls)
or, for a building without a plan, from a camera trajectory (:meth:`WalkableMap.from_trajectory`:
every cell within ``radius`` of the path, e.g. the aligned SfM trajectory).

Snapping (:meth:`WalkableMap.snap`) moves a position that falls on a non-walkable cell to the nearest
walkable point (Euclidean, in the plane; z is left alone). The nearest walkable cell of every grid
cell is precomputed once by a Euclidean distance transform with nearest indices
(:func:`scipy.ndimage.distance_transform_edt`), so a query is one array lookup: constant time,
whatever the size of the floor. The snapped point is the point of that nearest walkable cell closest
to the query, so it lies on the walkable area's boundary to within one cell.

Scoring snapped predictions (chapter 09): :func:`snap_errors` gives the per-frame errors before and
after snapping, :func:`snap_evaluation` and :func:`snap_study` do it for a model's evaluation or
every run of the chapters' studies, :func:`snap_summary` tables them per test sequence (share off
the walkable area, errors before and after, share of frames made worse or better), and
:func:`plot_snapping` draws the prediction maps before and after. Since a true position is
walkable, snapping onto a plan's map at most doubles an error (up to the grid); it can also shrink it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["WalkableMap", "SnapResult", "map_overlap", "time_snap", "snap_errors", "snap_evaluation", "snap_study",
           "snap_stats", "snap_summary", "plot_snapping", "SNAP_TOL"]


@dataclass(frozen=True)
class SnapResult:
    """Output of :meth:`WalkableMap.snap` for N query positions.

    ``positions``: (N, D) snapped positions (metres; the same D = 2 or 3 as the query, z unchanged).
    ``moved``: (N,) bool, the query was off the walkable area and was moved.
    ``distance``: (N,) metres each position moved (0 where it did not move).
    """

    positions: np.ndarray
    moved: np.ndarray
    distance: np.ndarray

    @property
    def share_moved(self) -> float:
        """Fraction of the queries that were off the walkable area (0 for no queries)."""
        return float(self.moved.mean()) if len(self.moved) else 0.0


class WalkableMap:
    """A boolean occupancy grid of the walkable floor with its nearest-walkable-cell lookup.

    ``mask`` (H, W) bool, row index along y (north), column along x (east); ``origin`` (x0, y0) is the
    south-west corner of cell (0, 0), metres; ``resolution`` the cell size, metres. The grid should
    reach a little beyond the floor (:meth:`from_plan` adds ``margin``): a query outside the grid is
    first clamped to its border, so far outside it the snapped point is only approximately nearest.
    """

    def __init__(self, mask: np.ndarray, origin, resolution: float):
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.dtype != bool:
            raise ValueError(f"mask must be a 2-D boolean array, got {mask.dtype} with shape {mask.shape}")
        if not mask.any():
            raise ValueError("the walkable map has no walkable cell: nothing to snap to")
        resolution = float(resolution)
        if not np.isfinite(resolution) or resolution <= 0:
            raise ValueError(f"resolution must be a positive number of metres, got {resolution}")
        origin = np.asarray(origin, float).reshape(-1)
        if origin.shape != (2,) or not np.isfinite(origin).all():
            raise ValueError(f"origin must be two finite numbers (x0, y0) in metres, got {origin}")
        self.mask = mask
        self.origin = origin
        self.resolution = resolution
        # for every cell, the (row, col) of the nearest walkable cell and the distance to it (cells)
        dist, (rows, cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
        self._nearest_row = rows.astype(np.int32)
        self._nearest_col = cols.astype(np.int32)
        self.distance_m = dist.astype(np.float32) * resolution

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_plan(cls, plan=None, resolution: float = 0.05, clearance: float = 0.0,
                  margin: float = 2.0) -> "WalkableMap":
        """The walkable map of a floor plan (:class:`campose.floorplan.FloorPlan`, or None for the
        default floor): a cell is walkable when its centre is on the plan's walkable floor and at least
        ``clearance`` metres from every wall and closed door (:meth:`FloorPlan.is_walkable`). The grid
        covers the plan's bounds plus ``margin`` metres on each side."""
        from matplotlib.path import Path as MplPath

        from campose.floorplan import DOOR_OPEN, distance_to_segments, load_floorplan

        plan = load_floorplan() if plan is None else plan
        resolution = float(resolution)
        if not np.isfinite(resolution) or resolution <= 0:
            raise ValueError(f"resolution must be a positive number of metres, got {resolution}")
        if not 0 <= float(clearance) < 5:
            raise ValueError(f"clearance must be in [0, 5) metres, got {clearance}")
        (x0, y0), (x1, y1) = np.asarray(plan.bounds, float)
        origin = np.array([x0 - margin, y0 - margin])
        w = int(np.ceil((x1 - x0 + 2 * margin) / resolution))
        h = int(np.ceil((y1 - y0 + 2 * margin) / resolution))
        xs = origin[0] + (np.arange(w) + 0.5) * resolution
        ys = origin[1] + (np.arange(h) + 0.5) * resolution
        gx, gy = np.meshgrid(xs, ys)
        pts = np.column_stack([gx.ravel(), gy.ravel()])
        inside = np.zeros(len(pts), bool)
        for poly in plan.walkable_polygons():
            inside |= MplPath(poly).contains_points(pts)
        # clearance from walls and closed doors, as FloorPlan.is_walkable has it (at least 2.5 cm):
        # a distance transform of the rasterised walls finds the cells near a wall, and only those
        # get the exact point-to-segment distance
        keep = max(float(clearance), 0.025)
        solid = plan.segments[plan.kinds != DOOR_OPEN]
        near = np.zeros((h, w), bool)
        for x0_, y0_, x1_, y1_ in solid:
            n = max(int(np.ceil(np.hypot(x1_ - x0_, y1_ - y0_) / (resolution / 4))), 1)
            t = np.linspace(0, 1, n + 1)
            c = np.floor((np.column_stack([x0_ + t * (x1_ - x0_), y0_ + t * (y1_ - y0_)]) - origin) / resolution)
            c = c[(c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)].astype(int)
            near[c[:, 1], c[:, 0]] = True
        band = (ndimage.distance_transform_edt(~near) * resolution <= keep + 1.5 * resolution).ravel() & inside
        if band.any():
            inside[band] = distance_to_segments(pts[band], solid) >= keep
        mask = inside.reshape(h, w)
        return cls(mask, origin, resolution)

    @classmethod
    def from_trajectory(cls, positions, radius: float = 0.5, resolution: float = 0.05,
                        margin: float = 2.0, max_step: float | None = 2.0) -> "WalkableMap":
        """A walkable map for a building without a plan: every cell within ``radius`` metres of the
        camera path. ``positions``: (N, 2 or 3) camera centres in walking order (world frame, metres),
        e.g. the aligned SfM trajectory; consecutive positions are joined by straight segments unless
        they are more than ``max_step`` metres apart (a jump between sequences; None joins all)."""
        p = np.asarray(positions, float)
        if p.ndim != 2 or p.shape[1] not in (2, 3) or len(p) == 0:
            raise ValueError(f"positions must be (N, 2) or (N, 3) with N >= 1, got shape {p.shape}")
        p = p[:, :2]
        if not np.isfinite(p).all():
            raise ValueError("positions contain NaN or infinite values")
        resolution, radius = float(resolution), float(radius)
        if not np.isfinite(resolution) or resolution <= 0:
            raise ValueError(f"resolution must be a positive number of metres, got {resolution}")
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"radius must be a positive number of metres, got {radius}")
        lo, hi = p.min(0) - radius - margin, p.max(0) + radius + margin
        w, h = (np.ceil((hi - lo) / resolution).astype(int))
        # sample every segment at half a cell, then mark the cells the samples fall in
        pts = [p[:1]]
        for a, b in zip(p[:-1], p[1:]):
            d = float(np.linalg.norm(b - a))
            if max_step is not None and d > max_step:
                pts.append(b[None])
                continue
            n = max(int(np.ceil(d / (resolution / 2))), 1)
            pts.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
        pts = np.concatenate(pts)
        path = np.zeros((h, w), bool)
        cols = np.clip(((pts[:, 0] - lo[0]) / resolution).astype(int), 0, w - 1)
        rows = np.clip(((pts[:, 1] - lo[1]) / resolution).astype(int), 0, h - 1)
        path[rows, cols] = True
        mask = ndimage.distance_transform_edt(~path) * resolution <= radius
        return cls(mask, lo, resolution)

    # ------------------------------------------------------------------ queries
    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        return self.mask.shape

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the grid, metres (for ``imshow(..., extent=...)``)."""
        h, w = self.mask.shape
        x0, y0 = self.origin
        return (float(x0), float(x0 + w * self.resolution), float(y0), float(y0 + h * self.resolution))

    @property
    def walkable_area_m2(self) -> float:
        """Area of the walkable cells, square metres."""
        return float(self.mask.sum()) * self.resolution ** 2

    @property
    def nbytes(self) -> int:
        """Memory held by the map: the mask and the precomputed lookup (nearest walkable row and
        column of every cell, and its distance), bytes."""
        return int(self.mask.nbytes + self._nearest_row.nbytes + self._nearest_col.nbytes + self.distance_m.nbytes)

    def cell_centres(self, walkable: bool = True) -> np.ndarray:
        """(K, 2) centres of the walkable cells (or, with ``walkable=False``, of the others), metres,
        row by row from the south-west corner."""
        rows, cols = np.nonzero(self.mask if walkable else ~self.mask)
        return self.origin + (np.column_stack([cols, rows]) + 0.5) * self.resolution

    def _points(self, points) -> tuple[np.ndarray, bool]:
        p = np.asarray(points, float)
        single = p.ndim == 1
        p = p.reshape(1, -1) if single else p
        if p.ndim != 2 or p.shape[1] not in (2, 3):
            raise ValueError(f"points must be (N, 2) or (N, 3) positions in metres, got shape {np.shape(points)}")
        if not np.isfinite(p[:, :2]).all():
            raise ValueError("points contain NaN or infinite coordinates")
        return p, single

    def _cells(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols) of the cells holding xy, clamped to the grid, and whether xy is on the grid."""
        h, w = self.mask.shape
        c = np.floor((xy - self.origin) / self.resolution)
        on = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)
        cols = np.clip(c[:, 0], 0, w - 1).astype(np.intp)
        rows = np.clip(c[:, 1], 0, h - 1).astype(np.intp)
        return rows, cols, on

    def is_walkable(self, points) -> np.ndarray:
        """Boolean mask: which (N, 2 or 3) positions fall on a walkable cell (False off the grid)."""
        p, single = self._points(points)
        rows, cols, on = self._cells(p[:, :2])
        ok = on & self.mask[rows, cols]
        return ok[0] if single else ok

    def snap(self, points) -> SnapResult:
        """Move each off-walkable position to the nearest walkable point; walkable ones stay put.

        ``points``: (N, 2) or (N, 3) metres (one point of shape (2,) or (3,) also works). Constant
        time per point: one lookup of the precomputed nearest walkable cell, then the point of that
        cell's square closest to the query. z, when given, is unchanged."""
        p, single = self._points(points)
        xy = p[:, :2]
        rows, cols, on = self._cells(xy)
        moved = ~(on & self.mask[rows, cols])
        out = p.copy()
        if moved.any():
            nr, nc = self._nearest_row[rows[moved], cols[moved]], self._nearest_col[rows[moved], cols[moved]]
            lo = self.origin + np.column_stack([nc, nr]) * self.resolution
            # the closest point of the walkable cell, kept a hair inside so it tests as walkable
            eps = self.resolution * 1e-3
            out[moved, :2] = np.clip(xy[moved], lo + eps, lo + self.resolution - eps)
        distance = np.linalg.norm(out[:, :2] - xy, axis=1)
        if single:
            return SnapResult(out[0], moved[:1], distance[:1])
        return SnapResult(out, moved, distance)

    # ------------------------------------------------------------------ drawing
    def plot(self, ax=None, color: str = "#b7e4c7", alpha: float = 0.6, **kw):
        """Draw the walkable cells on a matplotlib axis (metres, north up) and return the axis."""
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        if ax is None:
            _, ax = plt.subplots(figsize=(10, 10 * self.mask.shape[0] / self.mask.shape[1] + 0.5))
        img = np.where(self.mask, 1.0, np.nan)
        ax.imshow(img, origin="lower", extent=self.extent, cmap=ListedColormap([color]), alpha=alpha,
                  interpolation="nearest", zorder=0.5, **kw)
        ax.set_aspect("equal")
        return ax



# ---------------------------------------------------------------------------- comparing maps
def map_overlap(reference: WalkableMap, other: WalkableMap) -> dict:
    """How two walkable maps of the same floor agree (e.g. the plan's and one built from a
    trajectory), each judged at its own cell centres: ``reference_m2`` and ``other_m2`` (walkable
    areas, square metres), ``coverage`` (share of the reference's walkable cells that ``other``
    calls walkable) and ``precision`` (share of ``other``'s walkable cells that the reference calls
    walkable). Shares are fractions in [0, 1]."""
    return {"reference_m2": reference.walkable_area_m2, "other_m2": other.walkable_area_m2,
            "coverage": float(other.is_walkable(reference.cell_centres()).mean()),
            "precision": float(reference.is_walkable(other.cell_centres()).mean())}


def time_snap(walkable: WalkableMap, points, repeat: int = 3, brute_force: int = 0) -> dict:
    """Time :meth:`WalkableMap.snap` on (N, 2 or 3) ``points``: ``single_us`` (microseconds per call
    with one point, the best of ``repeat`` passes over up to 200 points), ``batch_us`` (microseconds
    per point of one call with all N) and, with ``brute_force`` > 0, ``brute_us``: microseconds per
    point of a search over every walkable cell centre for that many points (what the precomputed
    lookup avoids; it grows with the floor's area). Also ``points`` and ``walkable_cells``."""
    p = np.asarray(points, float)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"points must be (N, 2) or (N, 3) with N >= 1, got shape {p.shape}")
    repeat = max(int(repeat), 1)
    few = p[: min(len(p), 200)]
    single, batch = np.inf, np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for q in few:
            walkable.snap(q)
        single = min(single, (time.perf_counter() - t0) / len(few))
        t0 = time.perf_counter()
        walkable.snap(p)
        batch = min(batch, (time.perf_counter() - t0) / len(p))
    out = {"points": int(len(p)), "walkable_cells": int(walkable.mask.sum()), "single_us": 1e6 * single,
           "batch_us": 1e6 * batch}
    if brute_force:
        centres = walkable.cell_centres()
        sub = p[: int(brute_force), :2]
        t0 = time.perf_counter()
        for q in sub:
            int(np.argmin(((centres - q) ** 2).sum(1)))
        out["brute_us"] = 1e6 * (time.perf_counter() - t0) / len(sub)
    return out


# ---------------------------------------------------------------------------- snapping predictions
#: A frame's error counts as changed by snapping when it moves by more than this (metres).
SNAP_TOL = 1e-6


def snap_errors(walkable: WalkableMap, predicted, true, sequences=None, rotation_deg=None):
    """Snap predicted positions onto ``walkable`` and score them before and after, per frame.

    ``predicted``, ``true``: (N, 2 or 3) positions in metres (world frame; z is kept, so it counts
    in the errors the same before and after); ``sequences``: N sequence names (default ``"all"``);
    ``rotation_deg``: N rotation errors to carry along (snapping does not change them). A
    non-finite prediction (a diverged model) is not snapped: its errors stay NaN.

    Returns a DataFrame with one row per frame: ``sequence``, ``x, y, z`` (prediction),
    ``x_ref, y_ref, z_ref`` (truth), ``x_snap, y_snap, z_snap``, ``off_walkable`` (the prediction
    was off the walkable area and moved), ``snap_m`` (how far it moved), ``position_m`` and
    ``snapped_m`` (position error before and after), ``change_m`` (after minus before: positive is
    worse) and ``rotation_deg`` when given.

    Since a true position is walkable, the snapped point is at most about as far from the
    prediction as the truth is, so ``snapped_m <= 2 position_m + 1.5 cell diagonals``: snapping
    can at most double an error (and can also shrink it to nothing)."""
    import pandas as pd

    p, t = np.asarray(predicted, float), np.asarray(true, float)
    if p.ndim != 2 or p.shape[1] not in (2, 3) or t.shape != p.shape:
        raise ValueError(f"predicted and true must be equal (N, 2) or (N, 3) arrays, got {p.shape} and {t.shape}")
    n = len(p)
    seq = np.full(n, "all", dtype=object) if sequences is None else np.asarray(list(sequences), dtype=object)
    if seq.shape != (n,):
        raise ValueError(f"sequences must give one name per frame ({n}), got {seq.shape[0]}")
    ok = np.isfinite(p).all(1)
    snapped = np.full_like(p, np.nan)
    moved = np.zeros(n, bool)
    dist = np.full(n, np.nan)
    if ok.any():
        res = walkable.snap(p[ok])
        snapped[ok], moved[ok], dist[ok] = res.positions, res.moved, res.distance
    before = np.linalg.norm(p - t, axis=1)
    after = np.linalg.norm(snapped - t, axis=1)
    cols = {"sequence": seq}
    for k, name in enumerate("xyz"[: p.shape[1]]):
        cols[name] = p[:, k]
    for k, name in enumerate("xyz"[: p.shape[1]]):
        cols[f"{name}_ref"] = t[:, k]
    for k, name in enumerate("xyz"[: p.shape[1]]):
        cols[f"{name}_snap"] = snapped[:, k]
    cols.update({"off_walkable": moved, "snap_m": dist, "position_m": before, "snapped_m": after,
                 "change_m": after - before})
    if rotation_deg is not None:
        r = np.asarray(rotation_deg, float)
        if r.shape != (n,):
            raise ValueError(f"rotation_deg must give one error per frame ({n}), got shape {r.shape}")
        cols["rotation_deg"] = r
    return pd.DataFrame(cols)


def snap_evaluation(walkable: WalkableMap, frames, reference: str = "truth"):
    """:func:`snap_errors` over the per-frame table of a model's evaluation
    (:func:`campose.evaluate.frame_errors`, e.g. ``Evaluation.frames`` or ``Study.frames``) against
    one ``reference`` (``truth``: the true camera positions, which are walkable; ``labels`` would
    compare with the SfM labels, which need not be). The ``image`` and ``frame`` columns are kept."""
    f = frames[frames["reference"] == reference] if "reference" in frames.columns else frames
    if f.empty:
        raise ValueError(f"no frame is scored against the reference {reference!r}")
    out = snap_errors(walkable, f[["x", "y", "z"]].to_numpy(float), f[["x_ref", "y_ref", "z_ref"]].to_numpy(float),
                      f["sequence"].to_numpy(), f["rotation_deg"].to_numpy(float) if "rotation_deg" in f else None)
    for k, c in enumerate(c for c in ("image", "frame") if c in f.columns):
        out.insert(1 + k, c, f[c].to_numpy())
    return out


def snap_study(walkable: WalkableMap, studies, reference: str = "truth"):
    """:func:`snap_evaluation` for every absolute run (PoseNet, MapNet) of one or more
    :class:`campose.study.Study` objects: one per-frame table with ``model`` (the study's name) and
    ``run`` (the run's label) in front. Summarise it with ``snap_summary(frames, by=["model", "run"])``."""
    import pandas as pd

    from campose.study import Study

    studies = [studies] if isinstance(studies, Study) else list(studies)
    parts = []
    for st in studies:
        for label, run in st.runs.items():
            if run.relative:
                continue
            f = snap_evaluation(walkable, st.frames(label, reference), reference)
            f.insert(0, "run", label)
            f.insert(0, "model", st.name)
            parts.append(f)
    if not parts:
        raise ValueError("no absolute (PoseNet or MapNet) run to snap")
    return pd.concat(parts, ignore_index=True)


def snap_stats(frames, tol: float = SNAP_TOL) -> dict:
    """Before/after numbers of one group of :func:`snap_errors` frames: ``frames``; ``off walkable
    (%)`` (of the finite predictions); ``mean snap (m)`` (over the moved ones; 0 when none moved);
    median and mean position error before and after (m) and their change (after minus before);
    ``median rotation (deg)`` when the frames carry rotation errors (unchanged by snapping);
    ``worse (%)`` and ``better (%)``: frames whose error grew or shrank by more than ``tol``
    metres (of all frames); ``worse by > 1 m (%)`` and ``largest increase (m)``."""
    before, after = frames["position_m"].to_numpy(float), frames["snapped_m"].to_numpy(float)
    change, moved = after - before, frames["off_walkable"].to_numpy(bool)
    finite = np.isfinite(frames["snap_m"].to_numpy(float))
    n = len(frames)
    nan = float("nan")
    out = {"frames": n,
           "off walkable (%)": 100.0 * float(moved[finite].mean()) if finite.any() else nan,
           "mean snap (m)": float(frames["snap_m"].to_numpy(float)[moved].mean()) if moved.any() else 0.0}
    if not n:
        return {**out, **{k: nan for k in ("median position (m)", "median snapped (m)", "median change (m)",
                                             "mean position (m)", "mean snapped (m)", "mean change (m)",
                                             "worse (%)", "better (%)", "worse by > 1 m (%)",
                                             "largest increase (m)")}}
    out.update({"median position (m)": float(np.median(before)), "median snapped (m)": float(np.median(after)),
                "median change (m)": float(np.median(after) - np.median(before)),
                "mean position (m)": float(np.mean(before)), "mean snapped (m)": float(np.mean(after)),
                "mean change (m)": float(np.mean(after) - np.mean(before))})
    if "rotation_deg" in frames.columns:
        out["median rotation (deg)"] = float(np.median(frames["rotation_deg"].to_numpy(float)))
    with np.errstate(invalid="ignore"):
        out.update({"worse (%)": 100.0 * float(np.mean(change > tol)),
                    "better (%)": 100.0 * float(np.mean(change < -tol)),
                    "worse by > 1 m (%)": 100.0 * float(np.mean(change > 1.0)),
                    "largest increase (m)": float(max(np.nanmax(change), 0.0)) if np.isfinite(change).any() else nan})
    return out


def snap_summary(frames, by=None, overall: bool = True, tol: float = SNAP_TOL):
    """One row of :func:`snap_stats` per test sequence of :func:`snap_errors` frames, within each
    group of the ``by`` columns (e.g. ``["model", "run"]`` for :func:`snap_study`); with ``overall``
    an ``all`` row per group pooling its frames when it has several sequences. Indexed by ``by``
    and ``sequence``."""
    import pandas as pd

    by = [] if by is None else [by] if isinstance(by, str) else list(by)
    rows = []
    groups = frames.groupby(by, sort=False) if by else [((), frames)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        seqs = list(g.groupby("sequence", sort=False))
        if overall and len(seqs) > 1:
            seqs.append(("all", g))
        for seq, s in seqs:
            rows.append({**dict(zip(by, key)), "sequence": seq, **snap_stats(s, tol)})
    if not rows:
        raise ValueError("no frames to summarise")
    return pd.DataFrame(rows).set_index([*by, "sequence"])


def plot_snapping(plan, walkable: WalkableMap, frames, title: str = "", vmax: float | None = None):
    """The prediction maps before and after snapping (the report's figure): one row per test walk
    of :func:`snap_errors` frames (one run), left the predictions as made, right the snapped ones,
    on the plan with the walkable cells shaded; predictions are joined to their true positions and
    coloured by their error (m, one scale for both), and on the right short red lines show how far
    each moved prediction was snapped. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from campose.evaluate import plot_prediction_map

    walks = list(dict.fromkeys(frames["sequence"]))
    if vmax is None:
        e = np.r_[frames["position_m"].to_numpy(float), frames["snapped_m"].to_numpy(float)]
        vmax = float(np.nanpercentile(e, 95)) if np.isfinite(e).any() else 1.0
    fig, axes = plt.subplots(len(walks), 2, figsize=(17, 4.4 * len(walks)), squeeze=False)
    ref = ["x_ref", "y_ref"]
    for row, walk in zip(axes, walks):
        g = frames[frames["sequence"] == walk]
        moved = g["off_walkable"].to_numpy(bool)
        for ax, cols, err, what in ((row[0], ["x", "y"], "position_m", "before"),
                                    (row[1], ["x_snap", "y_snap"], "snapped_m", "after")):
            walkable.plot(ax=ax)
            plot_prediction_map(plan, g[ref].to_numpy(float), g[cols].to_numpy(float), g[err].to_numpy(float),
                                ax=ax, vmax=vmax)
            ax.set_title(f"{walk}, {what} snapping: median {g[err].median():.2f} m"
                         + (f", {100 * moved.mean():.0f} % moved" if what == "after" else ""), fontsize=10)
        if moved.any():
            seg = np.stack([g.loc[moved, ["x", "y"]].to_numpy(float),
                            g.loc[moved, ["x_snap", "y_snap"]].to_numpy(float)], 1)
            row[1].add_collection(LineCollection(seg, colors="#d62728", linewidths=1.2, zorder=5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
