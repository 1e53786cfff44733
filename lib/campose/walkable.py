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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["WalkableMap", "SnapResult"]


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

