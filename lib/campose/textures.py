"""Seeded procedural textures for the rendered building: walls, doors, floor and ceiling.

Designed for structure from motion: dense, high-contrast, non-repeating detail at several scales
(posters, notice boards with papers, signs, door leaves, terrazzo chips, ceiling-tile pits), so that
SIFT finds well over a thousand features per frame and no two walls look alike.

All painters work on float32 RGB images in [0, 1] whose pixel grid maps to metres on the surface:
``res`` pixels per metre, row 0 at the top (ceiling) for walls, row 0 at ``ymin`` for the floor.
Everything is deterministic for a seed (numpy ``Generator``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

WALL_PALETTE = np.array([
    [0.93, 0.92, 0.88], [0.90, 0.90, 0.90], [0.95, 0.92, 0.80], [0.85, 0.90, 0.85],
    [0.84, 0.88, 0.93], [0.93, 0.87, 0.82], [0.80, 0.82, 0.80], [0.96, 0.95, 0.93],
], np.float32)
DADO_PALETTE = np.array([
    [0.55, 0.62, 0.66], [0.62, 0.55, 0.45], [0.45, 0.55, 0.45], [0.68, 0.68, 0.70],
    [0.50, 0.45, 0.55], [0.70, 0.60, 0.50],
], np.float32)


def value_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about ``cell`` pixels across (smoothstep lattice)."""
    h, w = shape
    cell = max(float(cell), 1.0)
    g = rng.uniform(-1, 1, (int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2)).astype(np.float32)
    return _lattice_interp(g, h, w, np.float32(1.0 / cell))


@njit(cache=True, fastmath=True)
def _lattice_interp(g, h, w, inv):
    out = np.empty((h, w), np.float32)
    for i in range(h):
        y = i * inv
        y0 = int(y)
        fy = y - y0
        fy = fy * fy * (3 - 2 * fy)
        for j in range(w):
            x = j * inv
            x0 = int(x)
            fx = x - x0
            fx = fx * fx * (3 - 2 * fx)
            out[i, j] = ((g[y0, x0] * (1 - fx) + g[y0, x0 + 1] * fx) * (1 - fy)
                         + (g[y0 + 1, x0] * (1 - fx) + g[y0 + 1, x0 + 1] * fx) * fy)
    return out


def fractal_noise(shape, cells, amps, rng) -> np.ndarray:
    """Sum of value-noise octaves with the given cell sizes (pixels) and amplitudes."""
    out = np.zeros(shape, np.float32)
    for c, a in zip(cells, amps):
        out += a * value_noise(shape, c, rng)
    return out


def _rand_colour(rng, sat=1.0) -> np.ndarray:
    c = rng.uniform(0, 1, 3).astype(np.float32)
    grey = c.mean()
    return np.clip(grey + sat * (c - grey), 0, 1)


def _box(img, r0, r1, c0, c1):
    h, w = img.shape[:2]
    r0, r1, c0, c1 = max(0, int(r0)), min(h, int(r1)), max(0, int(c0)), min(w, int(c1))
    return (slice(r0, r1), slice(c0, c1)) if r1 > r0 and c1 > c0 else None


def fill_rect(img, r0, r1, c0, c1, colour):
    s = _box(img, r0, r1, c0, c1)
    if s is not None:
        img[s] = colour


def fill_ellipse(img, rc, cc, rr, cr, colour):
    s = _box(img, rc - rr, rc + rr + 1, cc - cr, cc + cr + 1)
    if s is None:
        return
    yy = np.arange(s[0].start, s[0].stop)[:, None]
    xx = np.arange(s[1].start, s[1].stop)[None, :]
    m = ((yy - rc) / max(rr, 0.5)) ** 2 + ((xx - cc) / max(cr, 0.5)) ** 2 <= 1
    img[s][m] = colour


def fill_triangle(img, pts, colour):
    pts = np.asarray(pts, float)
    s = _box(img, pts[:, 0].min(), pts[:, 0].max() + 1, pts[:, 1].min(), pts[:, 1].max() + 1)
    if s is None:
        return
    yy = np.arange(s[0].start, s[0].stop)[:, None] + 0.5
    xx = np.arange(s[1].start, s[1].stop)[None, :] + 0.5
    signs = []
    for i in range(3):
        (y0, x0), (y1, x1) = pts[i], pts[(i + 1) % 3]
        signs.append((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0)
    m = (signs[0] == signs[1]) & (signs[1] == signs[2])
    img[s][m] = colour


def paint_text(img, r0, c0, h, w, rng, colour=None, line_h=None):
    """Rows of dark word-like bars, like printed text seen from a distance."""
    colour = np.array([0.1, 0.1, 0.12], np.float32) if colour is None else colour
    lh = line_h or max(2, int(rng.uniform(0.035, 0.07) * h / max(h / 40, 1)))
    lh = max(2, min(lh, max(2, h // 4)))
    gap = max(1, lh // 2)
    r = r0
    while r + lh <= r0 + h:
        c = c0
        end = c0 + int(w * rng.uniform(0.6, 1.0))
        while c < end:
            ww = int(rng.integers(max(2, lh), max(3, 5 * lh)))
            fill_rect(img, r, r + lh, c, min(c + ww, end), colour)
            c += ww + max(1, lh // 2 + int(rng.integers(0, lh + 1)))
        r += lh + gap


def paint_poster(img, r0, c0, h, w, rng):
    """A poster: coloured ground, bold shapes, a title bar and body text."""
    bg = _rand_colour(rng, 0.6) * 0.5 + 0.5 * rng.uniform(0.3, 1.0)
    fill_rect(img, r0, r0 + h, c0, c0 + w, bg)
    for _ in range(int(rng.integers(6, 20))):
        col = _rand_colour(rng, 1.2)
        kind = rng.integers(0, 3)
        rc, cc = r0 + rng.uniform(0, h), c0 + rng.uniform(0, w)
        size = rng.uniform(0.05, 0.35) * min(h, w)
        if kind == 0:
            fill_ellipse(img, rc, cc, size * rng.uniform(0.5, 1), size * rng.uniform(0.5, 1), col)
        elif kind == 1:
            fill_rect(img, rc - size / 2, rc + size / 2, cc - size * rng.uniform(0.3, 1), cc + size, col)
        else:
            fill_triangle(img, [(rc + rng.uniform(-size, size), cc + rng.uniform(-size, size)) for _ in range(3)], col)
    # keep shapes inside the poster
    tb = int(h * rng.uniform(0.1, 0.18))
    fill_rect(img, r0 + int(0.05 * h), r0 + int(0.05 * h) + tb, c0 + int(0.06 * w), c0 + int(0.94 * w), _rand_colour(rng) * 0.4)
    paint_text(img, r0 + int(0.62 * h), c0 + int(0.08 * w), int(0.32 * h), int(0.84 * w), rng)


def paint_notice_board(img, r0, c0, h, w, rng):
    """Cork board crowded with overlapping sheets of paper, each with its own content."""
    cork = np.array([0.62, 0.45, 0.28], np.float32) * rng.uniform(0.85, 1.1)
    s = _box(img, r0, r0 + h, c0, c0 + w)
    if s is None:
        return
    img[s] = cork
    img[s] += 0.12 * fractal_noise(img[s].shape[:2], [2, 5], [0.6, 0.4], rng)[..., None]
    frame = max(2, h // 40)
    for r_, c_ in [(slice(r0, r0 + frame), slice(c0, c0 + w)), (slice(r0 + h - frame, r0 + h), slice(c0, c0 + w)),
                   (slice(r0, r0 + h), slice(c0, c0 + frame)), (slice(r0, r0 + h), slice(c0 + w - frame, c0 + w))]:
        b = _box(img, r_.start, r_.stop, c_.start, c_.stop)
        if b is not None:
            img[b] = 0.3
    for _ in range(int(rng.integers(8, 9 + w * h // 900))):
        ph, pw = int(rng.uniform(0.12, 0.35) * h), int(rng.uniform(0.08, 0.25) * w)
        pr, pc = r0 + rng.integers(frame, max(frame + 1, h - ph)), c0 + rng.integers(frame, max(frame + 1, w - pw))
        paper = np.array([0.97, 0.97, 0.95], np.float32) if rng.uniform() < 0.6 else _rand_colour(rng, 0.5) * 0.4 + 0.6
        fill_rect(img, pr, pr + ph, pc, pc + pw, paper)
        if rng.uniform() < 0.4:
            paint_poster(img, pr + 1, pc + 1, ph - 2, pw - 2, rng)
        else:
            paint_text(img, pr + max(1, ph // 10), pc + max(1, pw // 10), int(ph * 0.8), int(pw * 0.8), rng,
                       line_h=max(2, ph // 14))
        fill_ellipse(img, pr + 2, pc + pw // 2, 1.5, 1.5, _rand_colour(rng, 1.5))  # pin


def paint_door(img, r0, c0, h, w, rng, res):
    """A door leaf with frame, wood grain, kick plate, handle and a room plate beside it."""
    res = int(res)
    wood = np.array([0.55, 0.36, 0.20], np.float32) * rng.uniform(0.7, 1.3)
    if rng.uniform() < 0.3:
        wood = _rand_colour(rng, 0.5) * 0.6 + 0.2
    s = _box(img, r0, r0 + h, c0, c0 + w)
    if s is None:
        return
    sh = img[s].shape[:2]
    streaks = np.repeat(value_noise(((sh[0] + 24) // 25, sh[1]), 1.5, rng), 25, axis=0)[: sh[0]]
    grain = 0.12 * streaks + 0.06 * (value_noise(sh, 3, rng) + value_noise(sh, 12, rng)) / 2
    img[s] = wood + grain[..., None]
    f = max(2, int(0.06 * res))
    for a, b, c, d in [(r0, r0 + f, c0, c0 + w), (r0, r0 + h, c0, c0 + f), (r0, r0 + h, c0 + w - f, c0 + w)]:
        fill_rect(img, a, b, c, d, np.array([0.25, 0.25, 0.27], np.float32))
    fill_rect(img, r0 + h - int(0.25 * res), r0 + h, c0 + f, c0 + w - f, np.array([0.7, 0.7, 0.72], np.float32))
    hr = r0 + h - int(1.0 * res)
    side = c0 + w - f - int(0.12 * res) if rng.uniform() < 0.5 else c0 + f + int(0.05 * res)
    fill_rect(img, hr - int(0.1 * res), hr + int(0.1 * res), side, side + int(0.05 * res), np.array([0.8, 0.8, 0.82], np.float32))
    fill_rect(img, hr, hr + int(0.03 * res), side - int(0.08 * res), side + int(0.13 * res), np.array([0.85, 0.85, 0.85], np.float32))
    if rng.uniform() < 0.5:  # vision panel
        fill_rect(img, r0 + int(0.3 * res), r0 + int(0.9 * res), c0 + w // 2 - int(0.1 * res), c0 + w // 2 + int(0.1 * res),
                  np.array([0.2, 0.25, 0.3], np.float32))
    if rng.uniform() < 0.6:  # a sheet taped to the door
        pr, pc = r0 + int(rng.uniform(0.5, 0.8) * res), c0 + int(rng.uniform(0.1, 0.4) * w)
        paint_poster(img, pr, pc, int(0.3 * res), int(0.21 * res), rng)


def paint_wall(shape, rng, res, doors=(), door_height=2.1, busy=1.0) -> np.ndarray:
    """One face of a wall: ``shape`` (rows, cols) at ``res`` px/m, top row at the ceiling.

    ``doors`` lists ``(u0, u1, closed)`` intervals in metres along the face; closed ones get a door
    leaf, open ones are left plain (the renderer never shows them below the lintel). ``busy``
    scales how many objects hang on the wall (corridors 1, rooms less).
    """
    h, w = shape
    res = int(res)
    base = WALL_PALETTE[rng.integers(len(WALL_PALETTE))] * rng.uniform(0.9, 1.05)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    img += fractal_noise((h, w), [1.5, 6, 30], [0.05, 0.05, 0.06], rng)[..., None]
    if rng.uniform() < 0.6:  # painted dado band
        top = h - int(rng.uniform(0.9, 1.3) * res)
        img[top:] = DADO_PALETTE[rng.integers(len(DADO_PALETTE))] + 0.06 * fractal_noise((h - top, w), [2, 10], [0.5, 0.5], rng)[..., None]
        img[top: top + max(1, res // 40)] *= 0.6
    img[h - int(0.1 * res):] *= 0.45  # skirting
    blocked = [(u0 - 0.15, u1 + 0.15) for u0, u1, _ in doors]
    for u0, u1, closed in doors:
        if closed:
            paint_door(img, h - int(door_height * res), int(u0 * res), int(door_height * res), int((u1 - u0) * res), rng, res)
        plate_c = int((u1 + 0.12) * res)
        fill_rect(img, h - int(1.75 * res), h - int(1.55 * res), plate_c, plate_c + int(0.3 * res), _rand_colour(rng) * 0.5)
        paint_text(img, h - int(1.72 * res), plate_c + 2, int(0.15 * res), int(0.3 * res) - 4, rng,
                   colour=np.array([0.95, 0.95, 0.95], np.float32), line_h=max(2, res // 40))
    u = rng.uniform(0.1, 0.6)
    W = w / res
    while u < W - 0.3:
        kind = rng.choice(["poster", "board", "frame", "sign", "switch", "extinguisher", "gap"],
                          p=np.array([0.32, 0.18, 0.12, 0.14, 0.08, 0.04, 0.12]))
        width = {"poster": rng.uniform(0.4, 0.9), "board": rng.uniform(1.0, 2.4), "frame": rng.uniform(0.4, 1.0),
                 "sign": rng.uniform(0.2, 0.4), "switch": 0.1, "extinguisher": 0.25, "gap": rng.uniform(0.3, 1.5) / busy}[kind]
        if u + width > W - 0.05 or any(u < b and a < u + width for a, b in blocked):
            u += 0.3
            continue
        c0, cw = int(u * res), int(width * res)
        if kind == "poster":
            ph = rng.uniform(0.6, 1.2)
            bottom = rng.uniform(0.95, 1.4)
            paint_poster(img, h - int((bottom + ph) * res), c0, int(ph * res), cw, rng)
        elif kind == "board":
            bh = rng.uniform(0.8, 1.2)
            paint_notice_board(img, h - int((0.95 + bh) * res), c0, int(bh * res), cw, rng)
        elif kind == "frame":
            fh = rng.uniform(0.4, 0.8)
            r0 = h - int((1.4 + fh) * res)
            fill_rect(img, r0 - 3, r0 + int(fh * res) + 3, c0 - 3, c0 + cw + 3, np.array([0.15, 0.12, 0.1], np.float32))
            s = _box(img, r0, r0 + int(fh * res), c0, c0 + cw)
            if s is not None:
                sub = img[s]
                for ch in range(3):
                    sub[..., ch] = 0.5 + 0.45 * fractal_noise(sub.shape[:2], [3, 10, 25], [0.3, 0.4, 0.3], rng)
        elif kind == "sign":
            r0 = h - int(rng.uniform(1.6, 2.3) * res)
            col = np.array([[0.1, 0.55, 0.25], [0.8, 0.1, 0.1], [0.1, 0.3, 0.7], [0.95, 0.75, 0.1]], np.float32)[rng.integers(4)]
            fill_rect(img, r0, r0 + int(width * 0.6 * res), c0, c0 + cw, col)
            fill_triangle(img, [(r0 + 3, c0 + cw // 2), (r0 + int(width * 0.5 * res), c0 + 3),
                                (r0 + int(width * 0.5 * res), c0 + cw - 3)], np.array([0.97, 0.97, 0.97], np.float32))
        elif kind == "switch":
            r0 = h - int(rng.choice([1.1, 0.3]) * res)
            fill_rect(img, r0, r0 + int(0.09 * res), c0, c0 + int(0.09 * res), np.array([0.97, 0.97, 0.95], np.float32))
            fill_rect(img, r0 + 2, r0 + int(0.05 * res), c0 + 2, c0 + int(0.04 * res), np.array([0.3, 0.3, 0.3], np.float32))
        elif kind == "extinguisher":
            r0 = h - int(1.0 * res)
            fill_rect(img, r0, h - int(0.3 * res), c0, c0 + int(0.16 * res), np.array([0.8, 0.05, 0.05], np.float32))
            fill_rect(img, r0 - int(0.35 * res), r0 - int(0.05 * res), c0 - 2, c0 + int(0.2 * res), np.array([0.85, 0.1, 0.1], np.float32))
            fill_rect(img, r0 - int(0.3 * res), r0 - int(0.1 * res), c0 + 3, c0 + int(0.17 * res), np.array([0.97, 0.97, 0.97], np.float32))
        u += width + rng.uniform(0.15, 0.7) / busy
    # fine grain everywhere, so even plain paint has texture up close
    img += 0.04 * value_noise((h, w), 1.2, rng)[..., None]
    return np.clip(img, 0, 1)


def paint_floor(shape, rng, res, regions=()) -> np.ndarray:
    """Floor image (rows = y from ymin, cols = x from xmin) at ``res`` px/m.

    ``regions`` is a list of ``(mask, material)`` with boolean (rows, cols) masks; materials are
    ``"terrazzo"`` (corridors: chips of stone in cement, 40 cm tiles), ``"linoleum"`` (rooms) and
    ``"tiles"`` (services). Everything outside the masks is terrazzo.
    """
    h, w = shape
    img = np.empty((h, w, 3), np.float32)
    # terrazzo: warm grey ground, mottling, dense multicoloured chips
    img[:] = np.array([0.62, 0.58, 0.52], np.float32)
    img += fractal_noise((h, w), [3, 12, 60], [0.05, 0.06, 0.05], rng)[..., None]
    chips = rng.uniform(0, 1, (h, w)).astype(np.float32)
    chip_cols = np.array([[0.15, 0.15, 0.15], [0.9, 0.88, 0.85], [0.55, 0.25, 0.2], [0.3, 0.35, 0.4], [0.8, 0.7, 0.5]], np.float32)
    pick = rng.integers(0, len(chip_cols), (h, w))
    m = chips < 0.10
    img[m] = chip_cols[pick[m]]
    big = value_noise((h, w), 2.0, rng) > 0.55
    img[big] = chip_cols[pick[big] % 3] * 0.9 + 0.05
    tile = int(0.4 * res)
    img[::tile] *= 0.75
    img[:, ::tile] *= 0.75
    for mask, material in regions:
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        if len(rows) == 0:
            continue
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        m = mask[box]
        sh = m.shape
        if material == "linoleum":
            tone = _rand_colour(rng, 0.4) * 0.4 + 0.35
            lin = tone + 0.07 * fractal_noise(sh, [4, 20, 80], [0.3, 0.4, 0.3], rng)[..., None]
            lin[value_noise(sh, 1.5, rng) > 0.6] *= 0.8  # scuffs
            img[box][m] = lin[m]
        elif material == "tiles":
            t = int(0.3 * res)
            tiles = np.array([0.85, 0.86, 0.88], np.float32) + 0.05 * fractal_noise(sh, [2, 8], [0.5, 0.5], rng)[..., None]
            tiles[(np.arange(sh[0]) + box[0].start) % t == 0] *= 0.6
            tiles[:, (np.arange(sh[1]) + box[1].start) % t == 0] *= 0.6
            img[box][m] = tiles[m]
    return np.clip(img, 0, 1)


def paint_ceiling(shape, rng, res) -> np.ndarray:
    """Suspended ceiling: 60 cm mineral tiles with random pits, light panels, vents and detectors."""
    h, w = shape
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.array([0.86, 0.86, 0.84], np.float32)
    img += 0.05 * fractal_noise((h, w), [2, 10], [0.6, 0.4], rng)[..., None]
    pits = rng.uniform(0, 1, (h, w)) < 0.06
    img[pits] *= 0.55
    t = int(0.6 * res)
    img[::t] = 0.55
    img[:, ::t] = 0.55
    ny, nx = h // t, w // t
    for i in range(ny):
        for j in range(nx):
            u = rng.uniform()
            r0, c0 = i * t + 1, j * t + 1
            if u < 0.12:  # light panel with louvres
                fill_rect(img, r0, r0 + t - 2, c0, c0 + t - 2, np.array([1.0, 1.0, 0.97], np.float32))
                for k in range(1, 4):
                    fill_rect(img, r0 + k * t // 4, r0 + k * t // 4 + 1, c0, c0 + t - 2, np.array([0.75, 0.75, 0.75], np.float32))
            elif u < 0.16:  # vent grille
                fill_rect(img, r0 + 2, r0 + t - 4, c0 + 2, c0 + t - 4, np.array([0.7, 0.7, 0.72], np.float32))
                for k in range(r0 + 4, r0 + t - 5, 3):
                    fill_rect(img, k, k + 1, c0 + 3, c0 + t - 5, np.array([0.35, 0.35, 0.37], np.float32))
            elif u < 0.2:  # smoke detector / sprinkler
                fill_ellipse(img, r0 + t // 2, c0 + t // 2, t // 8, t // 8, np.array([0.97, 0.97, 0.97], np.float32))
                fill_ellipse(img, r0 + t // 2, c0 + t // 2, 1.5, 1.5, np.array([0.8, 0.1, 0.1], np.float32))
            elif u < 0.3:  # a stained or darker tile
                s = _box(img, r0, r0 + t - 1, c0, c0 + t - 1)
                img[s] *= rng.uniform(0.8, 0.95)
    return np.clip(img, 0, 1)
