"""Ray caster: floor plan + camera pose + intrinsics -> RGB image (and depth), on the CPU.

The world is 2.5D (vertical walls from floor to ceiling), so the wall a ray meets depends only on
the ray's horizontal direction. Each frame first casts a dense table of horizontal directions
against every wall segment (one table entry per fraction of a pixel), then every pixel looks its
wall up in the table, intersects that one wall exactly, and decides between wall, lintel (over an
open door), floor and ceiling by the height at which it meets the wall. Textures come from
:mod:`campose.textures`, packed into mip-mapped atlases and sampled bilinearly at the level that
matches the pixel's footprint. The kernels are compiled with numba (cached on disk) and run in
parallel over image rows.

Poses follow the project's convention: ``x`` camera centre (m, world), ``q`` camera-to-world unit
quaternion (w, x, y, z), camera axes x right, y down, z forward.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from campose.camera import Intrinsics
from campose.floorplan import DOOR_CLOSED, DOOR_OPEN, FloorPlan
from campose import textures

MIP_LEVELS = 5


class PoseOutsideBuildingError(ValueError):
    """The camera centre is not inside the building's spaces or not between floor and ceiling."""


# ---------------------------------------------------------------------------- texture atlases
def _downsample(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return 0.25 * (img[0:h:2, 0:w:2] + img[1:h:2, 0:w:2] + img[0:h:2, 1:w:2] + img[1:h:2, 1:w:2])


def build_pyramid(img: np.ndarray, levels: int = MIP_LEVELS):
    """Pack a float image (h, w, 3), h and w divisible by 2**(levels-1), into one uint8 array that
    holds all mip levels side by side. Returns (packed, level_col_start, level_width, level_height)."""
    h, w = img.shape[:2]
    assert h % (1 << (levels - 1)) == 0 and w % (1 << (levels - 1)) == 0
    lv = [img]
    for _ in range(levels - 1):
        lv.append(_downsample(lv[-1]))
    total = sum(x.shape[1] for x in lv)
    packed = np.zeros((h, total, 3), np.uint8)
    starts, widths, heights = [], [], []
    c = 0
    for x in lv:
        packed[: x.shape[0], c: c + x.shape[1]] = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
        starts.append(c); widths.append(x.shape[1]); heights.append(x.shape[0])
        c += x.shape[1]
    return packed, np.array(starts, np.int64), np.array(widths, np.int64), np.array(heights, np.int64)


def _pad_to(n: int, m: int) -> int:
    return ((n + m - 1) // m) * m


@dataclass
class SceneTextures:
    """All texture atlases of one plan and seed, ready for the kernels."""

    wall_res: float
    floor_res: float
    ceil_res: float
    wall: tuple  # pyramid tuple
    face_col: np.ndarray  # (2W,) level-0 column of each face (wall*2 + side)
    face_width: np.ndarray  # (2W,) level-0 width in px of each face
    face_ures: np.ndarray  # (2W,) px per metre along the face at level 0
    face_visible: np.ndarray  # (2W,) bool
    floor: tuple
    ceil: tuple
    origin: np.ndarray  # (xmin, ymin) of floor/ceiling images


def face_image(tex: "SceneTextures", wall: int, side: int = 1, level: int = 0) -> np.ndarray:
    """The painted texture of one wall face (side +1: left of the wall's from->to direction)
    as uint8 RGB, top row at the ceiling, one column per 1/``wall_res`` m along the wall."""
    f = 2 * wall + (0 if side > 0 else 1)
    packed, starts, widths, heights = tex.wall
    c0 = starts[level] + (tex.face_col[f] >> level)
    return packed[: heights[level], c0: c0 + (tex.face_width[f] >> level)]


def _face_visible(plan: FloorPlan, k: int, side: int) -> bool:
    a, b = plan.walls[k, :2], plan.walls[k, 2:]
    L = np.linalg.norm(b - a)
    t = (b - a) / L
    n = np.array([-t[1], t[0]]) * side
    s = np.arange(0.05, L, 0.25)
    pts = a + s[:, None] * t + 0.15 * n
    return bool(plan.is_walkable(pts).any())


def build_textures(plan: FloorPlan, seed: int = 0, wall_res: float = 96.0, floor_res: float = 64.0,
                   ceil_res: float = 32.0) -> SceneTextures:
    """Paint every visible wall face, the floor and the ceiling (deterministic for ``seed``)."""
    align = 1 << (MIP_LEVELS - 1)
    H = plan.wall_height
    rows = _pad_to(int(round(H * wall_res)), align)
    nW = len(plan.walls)
    face_col = np.zeros(2 * nW, np.int64)
    face_width = np.zeros(2 * nW, np.int64)
    face_ures = np.zeros(2 * nW, np.float64)
    face_vis = np.zeros(2 * nW, bool)
    images = []
    col = 0
    for k in range(nW):
        L = float(np.linalg.norm(plan.walls[k, 2:] - plan.walls[k, :2]))
        doors = [(d["at"] - d["width"] / 2, d["at"] + d["width"] / 2, d["state"] == "closed")
                 for d in plan.doors if d["wall"] == plan.wall_ids[k]]
        for si, side in enumerate((1, -1)):
            f = 2 * k + si
            rng = np.random.default_rng([seed, k, si])
            vis = _face_visible(plan, k, side)
            if vis:
                corridor = any(s.kind == "corridor" and s.contains(
                    (plan.walls[k, :2] + plan.walls[k, 2:]) / 2 + 0.15 * side * np.array(
                        [-(plan.walls[k, 3] - plan.walls[k, 1]), plan.walls[k, 2] - plan.walls[k, 0]]) / L)[0]
                    for s in plan.spaces)
                w = _pad_to(int(math.ceil(L * wall_res)) + 2, align)
                img = textures.paint_wall((rows, w), rng, wall_res, doors, plan.door_height, busy=1.0 if corridor else 0.6)
                ures = wall_res
            else:  # never seen from the walkable floor: a plain strip
                w = align
                img = np.empty((rows, w, 3), np.float32)
                img[:] = textures.WALL_PALETTE[rng.integers(len(textures.WALL_PALETTE))]
                ures = 0.0
            images.append(img)
            face_col[f], face_width[f], face_ures[f], face_vis[f] = col, w, ures, vis
            col += w
    wall_img = np.concatenate(images, axis=1)
    wall_pyr = build_pyramid(wall_img)

    (x0, y0), (x1, y1) = plan.bounds
    fw, fh = _pad_to(int(math.ceil((x1 - x0) * floor_res)), align), _pad_to(int(math.ceil((y1 - y0) * floor_res)), align)
    rng = np.random.default_rng([seed, 10_001])
    ys = y0 + (np.arange(fh) + 0.5) / floor_res
    xs = x0 + (np.arange(fw) + 0.5) / floor_res
    regions = []
    for s in plan.spaces:
        mat = {"corridor": None, "open area": None, "stairwell": "tiles", "service": "tiles"}.get(s.kind, "linoleum")
        if mat is None:
            continue
        (sx0, sy0), (sx1, sy1) = s.polygon.min(0), s.polygon.max(0)
        mask = np.zeros((fh, fw), bool)
        r = (ys > sy0) & (ys < sy1)
        c = (xs > sx0) & (xs < sx1)
        if r.any() and c.any():
            sub = np.stack(np.meshgrid(xs[c], ys[r]), -1).reshape(-1, 2)
            mask[np.ix_(r, c)] = s.contains(sub).reshape(r.sum(), c.sum())
            regions.append((mask, mat))
    floor_pyr = build_pyramid(textures.paint_floor((fh, fw), rng, floor_res, regions))
    cw, ch = _pad_to(int(math.ceil((x1 - x0) * ceil_res)), align), _pad_to(int(math.ceil((y1 - y0) * ceil_res)), align)
    ceil_pyr = build_pyramid(textures.paint_ceiling((ch, cw), np.random.default_rng([seed, 10_002]), ceil_res))
    return SceneTextures(wall_res, floor_res, ceil_res, wall_pyr, face_col, face_width, face_ures, face_vis,
                         floor_pyr, ceil_pyr, np.array([x0, y0], float))


# ---------------------------------------------------------------------------- kernels
@njit(cache=True, parallel=True, fastmath=True)
def _direction_table(cx, cy, segs, kinds, nbins):
    """Nearest solid segment and nearest open doorway (closer than it) per horizontal direction."""
    solid = np.full(nbins, -1, np.int64)
    opening = np.full(nbins, -1, np.int64)
    for b in prange(nbins):
        a = -math.pi + (b + 0.5) * 2 * math.pi / nbins
        dx, dy = math.cos(a), math.sin(a)
        best, best_o, tb, to = -1, -1, 1e30, 1e30
        for s in range(segs.shape[0]):
            ax, ay = segs[s, 0], segs[s, 1]
            ex, ey = segs[s, 2] - ax, segs[s, 3] - ay
            den = dx * ey - dy * ex
            if abs(den) < 1e-12:
                continue
            wx, wy = ax - cx, ay - cy
            t = (wx * ey - wy * ex) / den
            u = (wx * dy - wy * dx) / den
            if t > 1e-6 and -1e-9 <= u <= 1 + 1e-9:
                if kinds[s] == 2:
                    if t < to:
                        to, best_o = t, s
                elif t < tb:
                    tb, best = t, s
        solid[b] = best
        opening[b] = best_o if to < tb else -1
    return solid, opening


@njit(inline="always", fastmath=True)
def _bilinear(pyr, col0, width, height, uu, vv, out):
    """Bilinear sample of a packed pyramid level at continuous pixel coords; accumulates into out."""
    x = uu - 0.5
    y = vv - 0.5
    x0 = int(math.floor(x))
    y0 = int(math.floor(y))
    fx = x - x0
    fy = y - y0
    xa = min(max(x0, 0), width - 1)
    xb = min(max(x0 + 1, 0), width - 1)
    ya = min(max(y0, 0), height - 1)
    yb = min(max(y0 + 1, 0), height - 1)
    for ch in range(3):
        v = ((pyr[ya, col0 + xa, ch] * (1 - fx) + pyr[ya, col0 + xb, ch] * fx) * (1 - fy)
             + (pyr[yb, col0 + xa, ch] * (1 - fx) + pyr[yb, col0 + xb, ch] * fx) * fy)
        out[ch] = v


@njit(inline="always", fastmath=True)
def _ray_line_t(segs, s, camx, camy, dx, dy):
    """Ray parameter t > 0 where the ray (cam + t d) meets the line of segment s, else 1e30."""
    ax, ay = segs[s, 0], segs[s, 1]
    ex, ey = segs[s, 2] - ax, segs[s, 3] - ay
    den = dx * ey - dy * ex
    if abs(den) > 1e-12:
        t = ((ax - camx) * ey - (ay - camy) * ex) / den
        if t > 0:
            return t
    return 1e30


@njit(inline="always")
def _mip_level(foot, nlev):
    """Mip level whose texels best match a pixel footprint of ``foot`` level-0 texels."""
    if foot <= 1.0:
        return 0
    return min(int(math.log2(foot) + 0.5), nlev - 1)


@njit(inline="always", fastmath=True)
def _add_grain(px, foot, u, v, salt):
    """Add the procedural fine grain to a sampled colour, fading out as the footprint grows."""
    if foot < 2.0:
        dn = 40.0 * (1.0 - 0.5 * foot) * _detail(u, v, salt)
        px[0] += dn
        px[1] += dn
        px[2] += dn


@njit(inline="always")
def _hash_noise(ix, iy, salt):
    h = (ix * 374761393 + iy * 668265263 + salt * 2246822519) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 0xFFFF) / 65535.0 - 0.5


@njit(inline="always", fastmath=True)
def _detail(u, v, salt):
    """Fine value noise (about 4 mm cells) so surfaces keep texture right up close."""
    x = u * 250.0
    y = v * 250.0
    x0 = int(math.floor(x))
    y0 = int(math.floor(y))
    fx = x - x0
    fy = y - y0
    a = _hash_noise(x0, y0, salt)
    b = _hash_noise(x0 + 1, y0, salt)
    c = _hash_noise(x0, y0 + 1, salt)
    d = _hash_noise(x0 + 1, y0 + 1, salt)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


@njit(cache=True, parallel=True, fastmath=True)
def _render_kernel(R, C, fx, fy, pcx, pcy, width, height, nbins, solid, opening,
                   segs, seg_wall, seg_off, H, Hd,
                   wpyr, wstart, wwidth, wheight, face_col, face_width, face_ures, wres,
                   fpyr, fstart, fwidth, fheight, fres, cpyr, cstart, cwidth, cheight, cres, ox, oy,
                   image, depth):
    nlev = wstart.shape[0]
    camx, camy, camz = C[0], C[1], C[2]
    for v in prange(height):
        px = np.empty(3)
        for u in range(width):
            xc = (u + 0.5 - pcx) / fx
            yc = (v + 0.5 - pcy) / fy
            dx = R[0, 0] * xc + R[0, 1] * yc + R[0, 2]
            dy = R[1, 0] * xc + R[1, 1] * yc + R[1, 2]
            dz = R[2, 0] * xc + R[2, 1] * yc + R[2, 2]
            dnorm = math.sqrt(dx * dx + dy * dy + dz * dz)
            hn = math.sqrt(dx * dx + dy * dy)
            surf = 0  # 0 wall, 1 floor, 2 ceiling
            t = 1e30
            seg = -1
            if hn > 1e-9:
                ang = math.atan2(dy, dx)
                b = int((ang + math.pi) * nbins / (2 * math.pi))
                if b >= nbins:
                    b = nbins - 1
                if b < 0:
                    b = 0
                seg = solid[b]
                if seg >= 0:
                    t = _ray_line_t(segs, seg, camx, camy, dx, dy)
                op = opening[b]
                if op >= 0:
                    to = _ray_line_t(segs, op, camx, camy, dx, dy)
                    if to < t:
                        zo = camz + to * dz
                        if Hd < zo < H:
                            t = to
                            seg = op
            z = camz + t * dz
            if seg < 0 or z < 0 or z > H:
                if dz < 0:
                    surf = 1
                    t = -camz / dz
                elif dz > 0:
                    surf = 2
                    t = (H - camz) / dz
                else:
                    surf = 1
                    t = 1e3
            dist = t * dnorm
            shade = 1.0 / (1.0 + 0.012 * dist)
            if surf == 0:
                ax, ay = segs[seg, 0], segs[seg, 1]
                ex, ey = segs[seg, 2] - ax, segs[seg, 3] - ay
                L = math.sqrt(ex * ex + ey * ey)
                hx = camx + t * dx
                hy = camy + t * dy
                s = ((hx - ax) * ex + (hy - ay) * ey) / L
                if s < 0:
                    s = 0.0
                if s > L:
                    s = L
                s += seg_off[seg]
                side = 0 if (ex * (camy - ay) - ey * (camx - ax)) > 0 else 1
                face = seg_wall[seg] * 2 + side
                cosi = abs(ex * dy - ey * dx) / (L * dnorm)  # |cos| between ray and wall normal
                if cosi < 0.2:
                    cosi = 0.2
                ures = face_ures[face]
                vrow = (H - z) * wres
                foot = dist / fx / cosi * wres
                lev = _mip_level(foot, nlev)
                scale = 1.0 / (1 << lev)
                fw = face_width[face] >> lev
                c0 = wstart[lev] + (face_col[face] >> lev)
                _bilinear(wpyr, c0, fw, wheight[lev], (s * ures + 1.0) * scale, vrow * scale, px)
                nx, ny = -ey / L, ex / L
                shade *= 0.86 + 0.14 * abs(0.6 * nx + 0.8 * ny)
                shade *= 1.0 - 0.18 * math.exp(-z / 0.25) - 0.12 * math.exp(-(H - z) / 0.25)
                if ures > 0:
                    _add_grain(px, foot, s, z, face)
            else:
                hx = camx + t * dx
                hy = camy + t * dy
                cosi = abs(dz) / dnorm
                if cosi < 0.05:
                    cosi = 0.05
                if surf == 1:
                    res, pyr, st, wd, ht = fres, fpyr, fstart, fwidth, fheight
                else:
                    res, pyr, st, wd, ht = cres, cpyr, cstart, cwidth, cheight
                foot = dist / fx / cosi * res
                lev = _mip_level(foot, nlev)
                scale = 1.0 / (1 << lev)
                _bilinear(pyr, st[lev], wd[lev], ht[lev], (hx - ox) * res * scale, (hy - oy) * res * scale, px)
                if surf == 1:
                    _add_grain(px, foot, hx, hy, 7)
                if surf == 2:
                    shade *= 0.95
            for ch in range(3):
                val = px[ch] * shade
                if val < 0:
                    val = 0.0
                if val > 255:
                    val = 255.0
                image[v, u, ch] = np.uint8(val + 0.5)
            depth[v, u] = t * 1.0  # z-depth: the ray's camera-frame z component is 1 per unit t
    return image


# ---------------------------------------------------------------------------- texture cache
def texture_cache_dir() -> Path | None:
    """Where painted textures are kept between processes: ``$CAMPOSE_CACHE`` if set (``off``: no
    cache), else ``~/.cache/campose``. Painting takes seconds per process; loading takes a fraction
    of a second (the default floor's atlases are about 160 MB)."""
    v = os.environ.get("CAMPOSE_CACHE")
    if v is not None and v.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    return Path(v) if v else Path.home() / ".cache" / "campose"


def texture_key(plan: FloorPlan, seed: int, wall_res: float, floor_res: float, ceil_res: float) -> str:
    """What painted textures depend on: the plan's geometry (walls, doors, spaces, heights), the
    seed, the resolutions and the painting code itself (this module and :mod:`campose.textures`),
    so a change to any of them paints afresh."""
    h = hashlib.sha256()
    for a in (plan.walls, plan.bounds):
        h.update(np.ascontiguousarray(a, np.float64).tobytes())
    for sp in plan.spaces:
        h.update(f"{sp.name}|{sp.kind}|{sp.walkable}|".encode())
        h.update(np.ascontiguousarray(sp.polygon, np.float64).tobytes())
    h.update(json.dumps([list(plan.wall_ids), list(plan.doors), plan.wall_height, plan.door_height, int(seed),
                         float(wall_res), float(floor_res), float(ceil_res), MIP_LEVELS], sort_keys=True,
                        default=str).encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(textures.__file__).read_bytes())
    return h.hexdigest()[:20]


def _save_textures(tex: SceneTextures, path: Path) -> None:
    arrays = {}
    for f in fields(tex):
        v = getattr(tex, f.name)
        if isinstance(v, tuple):
            arrays.update({f"{f.name}.{i}": np.asarray(e) for i, e in enumerate(v)})
        else:
            arrays[f.name] = np.asarray(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_textures(path: Path) -> SceneTextures:
    with np.load(path, allow_pickle=False) as z:
        kw = {}
        for f in fields(SceneTextures):
            if f.name in z.files:
                v = z[f.name]
                kw[f.name] = v.item() if v.ndim == 0 else v
            else:
                parts, i = [], 0
                while f"{f.name}.{i}" in z.files:
                    parts.append(z[f"{f.name}.{i}"])
                    i += 1
                if not parts:
                    raise KeyError(f.name)
                kw[f.name] = tuple(parts)
    return SceneTextures(**kw)


def cached_textures(plan: FloorPlan, seed: int = 0, wall_res: float = 96.0, floor_res: float = 64.0,
                    ceil_res: float = 32.0, cache_dir: Path | None | str = "default") -> SceneTextures:
    """:func:`build_textures`, kept on disk (``cache_dir``, default :func:`texture_cache_dir`; None:
    no cache) under :func:`texture_key`, so a later process loads them instead of painting. An
    unreadable file is painted again; a cache folder that cannot be written is skipped."""
    folder = texture_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    if folder is None:
        return build_textures(plan, seed, wall_res, floor_res, ceil_res)
    path = folder / "textures" / f"{texture_key(plan, seed, wall_res, floor_res, ceil_res)}.npz"
    if path.is_file():
        try:
            return _load_textures(path)
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a broken or foreign file: paint again below and replace it
    tex = build_textures(plan, seed, wall_res, floor_res, ceil_res)
    try:
        _save_textures(tex, path)
    except OSError:
        pass  # read-only or full disk: the textures are still right, only not kept
    return tex


# ---------------------------------------------------------------------------- public API
class Renderer:
    """Render views of a floor plan. Construction paints the textures (seconds; kept on disk by
    :func:`cached_textures`, so later processes load them, unless ``texture_cache=False``); each
    :meth:`render` call then costs milliseconds.

    >>> r = Renderer(load_floorplan(), seed=0)
    >>> img = r.render(x, q, Intrinsics.from_fov(320, 240))   # (240, 320, 3) uint8 RGB
    """

    def __init__(self, plan: FloorPlan, seed: int = 0, wall_res: float = 96.0, floor_res: float = 64.0,
                 ceil_res: float = 32.0, bins_per_pixel: float = 4.0, texture_cache: bool = True):
        self.plan = plan
        self.seed = int(seed)
        self.bins_per_pixel = float(bins_per_pixel)
        self.tex = (cached_textures(plan, seed, wall_res, floor_res, ceil_res) if texture_cache
                    else build_textures(plan, seed, wall_res, floor_res, ceil_res))
        self._segs = np.ascontiguousarray(plan.segments, np.float64)
        self._kinds = np.ascontiguousarray(plan.kinds, np.int64)
        self._seg_wall = np.ascontiguousarray(plan.segment_wall, np.int64)
        self._seg_off = np.ascontiguousarray(plan.segment_offset, np.float64)

    def check_pose(self, x, q) -> tuple[np.ndarray, np.ndarray]:
        """Validate a pose; returns (centre (3,), rotation matrix (3, 3)) or raises ValueError."""
        from campose.geometry import check_unit_quaternion, quat_to_matrix

        x = np.asarray(x, float).reshape(-1)
        if x.shape != (3,) or not np.all(np.isfinite(x)):
            raise ValueError(f"camera position must be 3 finite numbers (metres), got {x.tolist()}")
        q = check_unit_quaternion(np.asarray(q, float).reshape(4))
        H = self.plan.wall_height
        if not (0.02 < x[2] < H - 0.02) or not self.plan.inside(x[:2])[0]:
            raise PoseOutsideBuildingError(
                f"camera position ({x[0]:.2f}, {x[1]:.2f}, {x[2]:.2f}) m is outside the building "
                f"(plan {self.plan.name!r}: inside a space and 0 < z < {H} m required)")
        return x, quat_to_matrix(q)

    def _nbins(self, K: Intrinsics) -> int:
        pix_angle = math.atan(1.0 / max(K.fx, K.fy))
        return int(min(1 << 16, max(1024, math.ceil(2 * math.pi / pix_angle * self.bins_per_pixel))))

    def render(self, x, q, intrinsics: Intrinsics, return_depth: bool = False):
        """RGB uint8 image (height, width, 3) of the view from pose (x, q); with ``return_depth``
        also the z-depth in metres (height, width) float32."""
        C, R = self.check_pose(x, q)
        K = intrinsics
        nb = self._nbins(K)
        solid, opening = _direction_table(C[0], C[1], self._segs, self._kinds, nb)
        img = np.empty((K.height, K.width, 3), np.uint8)
        depth = np.empty((K.height, K.width), np.float32)
        t = self.tex
        _render_kernel(np.ascontiguousarray(R), C, K.fx, K.fy, K.cx, K.cy, K.width, K.height, nb, solid, opening,
                       self._segs, self._seg_wall, self._seg_off, self.plan.wall_height, self.plan.door_height,
                       t.wall[0], t.wall[1], t.wall[2], t.wall[3], t.face_col, t.face_width, t.face_ures, t.wall_res,
                       t.floor[0], t.floor[1], t.floor[2], t.floor[3], t.floor_res,
                       t.ceil[0], t.ceil[1], t.ceil[2], t.ceil[3], t.ceil_res, t.origin[0], t.origin[1],
                       img, depth)
        return (img, depth) if return_depth else img


def set_threads(n: int | None) -> None:
    """Limit numba's render threads (default: all cores)."""
    if n:
        numba.set_num_threads(int(n))
