"""Extra training views around the training walks: denser coverage for pose regression.

A network that regresses an absolute pose learns the training images' poses; a test walk that passes
half a metre to the side of them, or looks the other way down a corridor, shows it views it never saw
(chapter 07 measures how much that costs). LENS (Moreau et al., 2022) closes that gap by rendering
new views near the training cameras from a neural radiance field of the mapped scene. On the book's
stand-in floor the renderer draws them exactly, so :func:`sample_views` draws poses near the
training walks and :func:`render_views` renders them into an ordinary sequence with true poses.
On a real building the same poses would be rendered from a NeRF or a Gaussian splat of the SfM map.

Poses are camera-to-world in the building frame (metres; quaternion w, x, y, z), as everywhere.
The views are *unordered*: the sequence's ``meta["ordered"]`` is False, so MapNet's windows and
MeNet's pairs (which need neighbouring frames of a walk) never use them, and
:func:`campose.train.split_validation` keeps them all for training.

MeNet gets rendered **pairs** instead (:func:`sample_pairs`, :func:`render_pairs`): a view drawn as
above and a partner that stepped forwards or backwards along its heading, turning a little, as a
walker between two frames of a video. Trained on the walks' own pairs alone, MeNet memorised which
place shows which motion and did no better than a constant answer (chapter 06); the rendered pairs
show every place moved through both ways. The pair sequence is unordered too, with
``meta["paired"]`` True: frames 2m and 2m + 1 are pair m, and only those are paired
(:class:`campose.dataset.PairDataset`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from campose.geometry import camera_rotation, camera_yaw_pitch_roll


def _check_non_negative(sampler) -> None:
    """Every field of a sampler dataclass must be a finite number >= 0."""
    for name, v in asdict(sampler).items():
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{type(sampler).__name__}.{name} must be a finite number >= 0, got {v}")


@dataclass(frozen=True)
class ViewSampler:
    """How far a new view strays from the walk pose it is drawn around (standard deviations).

    ``sideways_m``: horizontal offset, metres (each of x, y); ``height_m``: camera height offset,
    metres; ``yaw_deg``, ``pitch_deg``, ``roll_deg``: angle offsets, degrees; ``reverse``: the chance
    of looking back along the walk (heading + 180 deg), so corridors are seen both ways;
    ``margin_m``: a view is kept only if the points ``margin_m`` east, west, north and south of it
    are inside the floor's spaces too (no camera in a wall)."""

    sideways_m: float = 0.35
    height_m: float = 0.05
    yaw_deg: float = 25.0
    pitch_deg: float = 3.0
    roll_deg: float = 2.0
    reverse: float = 0.5
    margin_m: float = 0.3

    def __post_init__(self):
        _check_non_negative(self)
        if self.reverse > 1:
            raise ValueError(f"ViewSampler.reverse is a probability, got {self.reverse}")

    def to_dict(self) -> dict:
        return asdict(self)


def sample_views(plan, x, q, n: int, sampler: ViewSampler | None = None, seed: int = 0,
                 max_tries: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` camera poses near the walk poses ``x`` (N, 3) metres and ``q`` (N, 4), on ``plan``.

    Each view picks a walk pose at random, offsets its position and angles by the ``sampler``'s
    normal noise (heading reversed with probability ``sampler.reverse``), and is kept only if it
    stands inside the plan's spaces with the sampler's margin. Returns (positions (n, 3), unit
    quaternions (n, 4), index of the walk pose each was drawn around (n,)). Deterministic in
    ``seed``. Raises ValueError when fewer than ``n`` views are found in ``max_tries`` draws of n
    (the walk poses lie outside the plan, or the margin is wider than the corridors)."""
    sampler = sampler or ViewSampler()
    x = np.asarray(x, float).reshape(-1, 3)
    q = np.asarray(q, float).reshape(-1, 4)
    n = int(n)
    if n < 1:
        raise ValueError(f"need n >= 1 views, got {n}")
    if len(x) == 0 or len(x) != len(q):
        raise ValueError(f"need as many walk positions as orientations (at least one), got {len(x)} and {len(q)}")
    yaw, pitch, roll = camera_yaw_pitch_roll(q)
    rng = np.random.default_rng(seed)
    m = sampler.margin_m
    probes = np.array([[0, 0], [m, 0], [-m, 0], [0, m], [0, -m]], float)
    xs, qs, src, tries = [], [], [], 0
    while sum(len(a) for a in xs) < n:
        if tries >= max_tries:
            got = sum(len(a) for a in xs)
            raise ValueError(f"found {got} of {n} views inside the plan in {max_tries * n} draws: are the walk poses "
                             f"on this plan, and is margin_m={m} narrower than its corridors?")
        tries += 1
        i = rng.integers(len(x), size=n)
        pos = x[i] + np.column_stack([rng.normal(0, sampler.sideways_m, (n, 2)), rng.normal(0, sampler.height_m, n)])
        turn = np.where(rng.random(n) < sampler.reverse, np.pi, 0.0)
        y = yaw[i] + turn + rng.normal(0, np.radians(sampler.yaw_deg), n)
        p = pitch[i] + rng.normal(0, np.radians(sampler.pitch_deg), n)
        r = roll[i] + rng.normal(0, np.radians(sampler.roll_deg), n)
        ok = plan.inside((pos[:, None, :2] + probes[None]).reshape(-1, 2)).reshape(n, len(probes)).all(1)
        xs.append(pos[ok])
        qs.append(camera_rotation(y[ok], p[ok], r[ok]).reshape(-1, 4))
        src.append(i[ok])
    return np.concatenate(xs)[:n], np.concatenate(qs)[:n], np.concatenate(src)[:n]


def render_views(renderer, x, q, intrinsics, root, size: tuple[int, int] | None = None, meta: dict | None = None,
                 progress: bool = False):
    """Render the poses ``x`` (n, 3), ``q`` (n, 4) with ``intrinsics`` and write them to ``root`` as an
    unordered training sequence (:func:`campose.dataset.write_sequence`, atomically).

    ``size`` = (width, height): store the images downscaled to it (the networks' input size) with
    the same resampling as training (:func:`campose.dataset.resize_rgb`), so thousands of views
    take megabytes, not gigabytes; the stored intrinsics are scaled to match."""
    from campose.dataset import resize_rgb, write_sequence

    x, q = np.asarray(x, float), np.asarray(q, float)
    K = intrinsics
    if size is not None and tuple(size) != (K.width, K.height):
        w, h = (int(v) for v in size)
        frames = (resize_rgb(renderer.render(x[j], q[j], K), (w, h)) for j in range(len(x)))
        K_out = K.scaled(w, h)
    else:
        frames = (renderer.render(x[j], q[j], K) for j in range(len(x)))
        K_out = K
    m = {"split": "train", "ordered": False, "source": "dense views", **(meta or {})}
    return write_sequence(root, frames, x, q, K_out, m, progress=progress)


@dataclass(frozen=True)
class PairSampler:
    """How the second view of a rendered MeNet pair moves from the first (a walker between two frames).

    The partner steps ``d`` metres along the first view's horizontal heading, ``|d|`` uniform in
    [``min_step_m``, ``max_step_m``] and forwards or backwards with equal chance, plus a sideways
    offset (normal, ``sideways_m``); its yaw, pitch and roll change by normal noise (``yaw_deg``,
    ``pitch_deg``, ``roll_deg``, degrees); the camera height is kept. A pair is kept only if the
    whole step, from the first view to the partner, keeps ``margin_m`` clear of the walls, so the
    two views never stand on opposite sides of a wall."""

    min_step_m: float = 0.15
    max_step_m: float = 3.0
    sideways_m: float = 0.1
    yaw_deg: float = 6.0
    pitch_deg: float = 1.0
    roll_deg: float = 1.0
    margin_m: float = 0.3

    def __post_init__(self):
        _check_non_negative(self)
        if not 0 < self.min_step_m <= self.max_step_m:
            raise ValueError(f"PairSampler needs 0 < min_step_m <= max_step_m, got {self.min_step_m} and "
                             f"{self.max_step_m}")

    def to_dict(self) -> dict:
        return asdict(self)


def sample_pairs(plan, x, q, n: int, sampler: PairSampler | None = None, views: ViewSampler | None = None,
                 seed: int = 0, max_tries: int = 50):
    """``n`` pairs of camera poses near the walk poses ``x`` (N, 3) metres and ``q`` (N, 4), on ``plan``.

    The first view of each pair is drawn by :func:`sample_views` (``views``); the second moves from
    it as ``sampler`` says (:class:`PairSampler`). Returns (x_a (n, 3), q_a (n, 4), x_b (n, 3),
    q_b (n, 4)), camera-to-world, deterministic in ``seed``. Raises ValueError when fewer than ``n``
    pairs fit in ``max_tries`` rounds (the steps are longer than the floor's corridors)."""
    sampler = sampler or PairSampler()
    n = int(n)
    if n < 1:
        raise ValueError(f"need n >= 1 pairs, got {n}")
    rng = np.random.default_rng(seed)
    m = sampler.margin_m
    probes = np.array([[0, 0], [m, 0], [-m, 0], [0, m], [0, -m]], float)
    along = np.linspace(0.0, 1.0, 9)  # points on the step checked against the walls
    out: list[tuple] = []
    got, tries = 0, 0
    while got < n:
        if tries >= max_tries:
            raise ValueError(f"found {got} of {n} pairs inside the plan in {max_tries} rounds: are the steps "
                             f"(up to max_step_m={sampler.max_step_m}) longer than the corridors?")
        tries += 1
        xa, qa, _ = sample_views(plan, x, q, n, views, seed=int(rng.integers(2**31)), max_tries=max_tries)
        yaw, pitch, roll = camera_yaw_pitch_roll(qa)
        fwd = np.column_stack([np.cos(yaw), np.sin(yaw), np.zeros(n)])
        right = np.column_stack([np.sin(yaw), -np.cos(yaw), np.zeros(n)])
        d = rng.uniform(sampler.min_step_m, sampler.max_step_m, n) * rng.choice([-1.0, 1.0], n)
        xb = xa + d[:, None] * fwd + rng.normal(0, sampler.sideways_m, n)[:, None] * right
        path = xa[:, None, :2] + along[None, :, None] * (xb - xa)[:, None, :2]  # (n, 9, 2)
        ok = plan.inside((path[:, :, None, :] + probes[None, None]).reshape(-1, 2)).reshape(n, -1).all(1)
        qb = camera_rotation(yaw + rng.normal(0, np.radians(sampler.yaw_deg), n),
                             pitch + rng.normal(0, np.radians(sampler.pitch_deg), n),
                             roll + rng.normal(0, np.radians(sampler.roll_deg), n)).reshape(-1, 4)
        out.append((xa[ok], qa[ok], xb[ok], qb[ok]))
        got += int(ok.sum())
    return tuple(np.concatenate([o[k] for o in out])[:n] for k in range(4))


def render_pairs(renderer, x_a, q_a, x_b, q_b, intrinsics, root, size: tuple[int, int] | None = None,
                 meta: dict | None = None, progress: bool = False):
    """Render pairs of poses (:func:`sample_pairs`) into one unordered, *paired* sequence at ``root``:
    frames 2m and 2m + 1 are pair m (``meta["paired"]`` True), stored as :func:`render_views` stores
    its views. :class:`campose.dataset.PairDataset` pairs only those two frames, in either order."""
    x_a, q_a, x_b, q_b = (np.asarray(a, float) for a in (x_a, q_a, x_b, q_b))
    if not (len(x_a) == len(q_a) == len(x_b) == len(q_b)) or len(x_a) == 0:
        raise ValueError(f"need as many first and second poses (at least one pair), got {len(x_a)}, {len(q_a)}, "
                         f"{len(x_b)} and {len(q_b)}")
    x = np.stack([x_a, x_b], 1).reshape(-1, 3)
    q = np.stack([q_a, q_b], 1).reshape(-1, 4)
    m = {"source": "dense pairs", **(meta or {}), "paired": True}
    return render_views(renderer, x, q, intrinsics, root, size=size, meta=m, progress=progress)
