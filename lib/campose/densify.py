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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from campose.geometry import camera_rotation, camera_yaw_pitch_roll


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
        for name, v in asdict(self).items():
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"ViewSampler.{name} must be a finite number >= 0, got {v}")
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
