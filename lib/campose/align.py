"""Similarity transforms that move a structure-from-motion (SfM) frame onto the building frame.

An SfM reconstruction lives in an arbitrary frame (unknown scale, rotation and origin). A few
surveyed control points, known both in the SfM frame ("source") and in the building frame
("target": metres, x east, y north, z up), fix the 7-parameter similarity

    p_target = s * R @ p_source + t        (s > 0, R a proper rotation, t in metres)

estimated in closed form by Umeyama (1991), or robustly by RANSAC when some correspondences
are wrong. Poses are camera-to-world: centre x (3,) and unit quaternion q = (w, x, y, z), w >= 0,
rotating camera axes (x right, y down, z forward) into the world. Only numpy and scipy are used;
note that scipy's ``Rotation`` stores quaternions as (x, y, z, w).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "AlignmentError",
    "AlignmentWarning",
    "NoConsensusError",
    "Similarity",
    "SimilaritySteps",
    "AlignmentReport",
    "umeyama",
    "ransac_similarity",
    "residuals",
    "align_with_control_points",
    "control_point_study",
    "study_table",
    "pick_control_points",
    "landmark_frames",
    "implausible_jumps",
]

# Relative tolerance on singular values of the centred point cloud: below it the points count as
# collinear (second singular value) or coincident (first one, relative to their distance from 0).
_DEGENERATE_RTOL = 1e-9


class AlignmentError(ValueError):
    """Control points or a transform are unusable (wrong shape, non-finite, degenerate)."""


class AlignmentWarning(UserWarning):
    """The control points allow a fit but a poor one (e.g. nearly collinear points)."""


#: Below this ratio of the second to the first singular value of the centred control points, they
#: are nearly on one line and the rotation about that line is poorly determined: warn.
COLLINEAR_WARN_RATIO = 0.1


class NoConsensusError(AlignmentError):
    """RANSAC found no transform supported by enough control points."""


# ----------------------------------------------------------------------------------------------
# quaternion helpers (local; w-first, w >= 0)


def _quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if q.shape[-1] != 4 or not np.all(np.isfinite(q)) or np.any(n < 1e-12):
        raise AlignmentError(f"quaternions must be finite, non-zero (..., 4) arrays (w, x, y, z), got shape {q.shape}")
    return Rotation.from_quat((q / n)[..., [1, 2, 3, 0]]).as_matrix()


def _matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    q = Rotation.from_matrix(R).as_quat()[..., [3, 0, 1, 2]]
    return np.where(q[..., :1] < 0, -q, q)


# ----------------------------------------------------------------------------------------------
# the transform


@dataclass(frozen=True, eq=False)
class Similarity:
    """p_target = scale * rotation @ p_source + translation (translation in target metres).

    ``scale`` converts source units to metres, ``rotation`` is a proper 3x3 rotation from the
    source axes to the target axes. Arrays are stored read-only; compare with :meth:`allclose`.
    """

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self):
        s = float(self.scale)
        R = np.array(self.rotation, dtype=float)
        t = np.array(self.translation, dtype=float).reshape(-1)
        if not math.isfinite(s) or s <= 0:
            raise AlignmentError(f"similarity scale must be finite and > 0, got {self.scale!r}")
        if R.shape != (3, 3) or not np.all(np.isfinite(R)):
            raise AlignmentError(f"similarity rotation must be a finite 3x3 matrix, got shape {R.shape}")
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
            raise AlignmentError("similarity rotation must be a proper rotation (orthonormal, det +1)")
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise AlignmentError(f"similarity translation must be 3 finite numbers, got shape {t.shape}")
        R.flags.writeable = False
        t.flags.writeable = False
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "rotation", R)
        object.__setattr__(self, "translation", t)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def identity(cls) -> "Similarity":
        return cls()

    @classmethod
    def from_matrix(cls, M: np.ndarray) -> "Similarity":
        """From a 4x4 (or 3x4) matrix [[s R, t], [0, 1]]."""
        M = np.asarray(M, dtype=float)
        if M.shape not in ((4, 4), (3, 4)):
            raise AlignmentError(f"similarity matrix must be 4x4 or 3x4, got shape {M.shape}")
        A = M[:3, :3]
        det = np.linalg.det(A)
        if not det > 0:
            raise AlignmentError("similarity matrix has a non-positive determinant (reflection or singular)")
        s = det ** (1.0 / 3.0)
        return cls(s, A / s, M[:3, 3])

    # -- application -----------------------------------------------------------------------
    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Map source points (N, 3) or (3,) to target metres, same shape."""
        P = np.asarray(points, dtype=float)
        if P.shape[-1] != 3:
            raise AlignmentError(f"points must have shape (N, 3) or (3,), got {P.shape}")
        return self.scale * P @ self.rotation.T + self.translation

    __call__ = apply_points

    def apply_poses(self, x: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map camera-to-world poses from the source to the target frame.

        x: camera centres (N, 3) or (3,), source units -> target metres (as points).
        q: orientations (N, 4) or (4,), (w, x, y, z); returns R @ R_cam_to_world as unit
        quaternions with w >= 0. Scale does not affect orientation.
        """
        x_new = self.apply_points(x)
        R_cam = _quat_wxyz_to_matrix(q)
        if R_cam.shape[:-2] != np.shape(x)[:-1]:
            raise AlignmentError(f"pose centres {np.shape(x)} and quaternions {np.shape(q)} do not match")
        return x_new, _matrix_to_quat_wxyz(self.rotation @ R_cam)

    # -- algebra ---------------------------------------------------------------------------
    def inverse(self) -> "Similarity":
        """The target -> source transform."""
        Rt = self.rotation.T
        return Similarity(1.0 / self.scale, Rt, -(Rt @ self.translation) / self.scale)

    def compose(self, other: "Similarity") -> "Similarity":
        """``self`` after ``other``: p -> self(other(p)); matrix = self.matrix() @ other.matrix()."""
        return Similarity(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * self.rotation @ other.translation + self.translation,
        )

    __matmul__ = compose

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix [[s R, t], [0, 0, 0, 1]]."""
        M = np.eye(4)
        M[:3, :3] = self.scale * self.rotation
        M[:3, 3] = self.translation
        return M

    def decompose(self) -> "SimilaritySteps":
        """The three steps in application order: scale (about the source origin), then rotate,
        then translate; ``steps.compose()`` (= translate @ rotate @ scale) equals ``self``."""
        return SimilaritySteps(
            Similarity(self.scale),
            Similarity(1.0, self.rotation),
            Similarity(1.0, np.eye(3), self.translation),
        )

    def allclose(self, other: "Similarity", rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        return (
            math.isclose(self.scale, other.scale, rel_tol=rtol, abs_tol=atol)
            and np.allclose(self.rotation, other.rotation, rtol=rtol, atol=atol)
            and np.allclose(self.translation, other.translation, rtol=rtol, atol=atol)
        )

    # -- description -----------------------------------------------------------------------
    @property
    def quaternion(self) -> np.ndarray:
        """Rotation as a unit quaternion (w, x, y, z), w >= 0."""
        return _matrix_to_quat_wxyz(self.rotation)

    @property
    def rotation_angle_deg(self) -> float:
        """Angle of the rotation (degrees, 0..180)."""
        c = np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0)
        return float(np.degrees(np.arccos(c)))

    def to_dict(self) -> dict:
        """JSON-ready dict; ``rotation`` (3x3 rows) is authoritative, the quaternion is informative."""
        return {
            "convention": "p_target = scale * rotation @ p_source + translation",
            "scale": self.scale,
            "rotation": self.rotation.tolist(),
            "quaternion_wxyz": self.quaternion.tolist(),
            "translation": self.translation.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Similarity":
        """Inverse of :meth:`to_dict`; accepts ``rotation`` (3x3) or ``quaternion_wxyz``."""
        try:
            if "rotation" in d:
                R = np.asarray(d["rotation"], dtype=float)
            else:
                R = _quat_wxyz_to_matrix(d["quaternion_wxyz"])
            return cls(float(d["scale"]), R, d["translation"])
        except KeyError as e:
            raise AlignmentError(f"similarity dict is missing key {e.args[0]!r}") from None


class SimilaritySteps(NamedTuple):
    """A similarity split into its steps, applied in field order: scale, rotate, translate."""

    scale: Similarity
    rotate: Similarity
    translate: Similarity

    def compose(self) -> Similarity:
        return self.translate.compose(self.rotate).compose(self.scale)


# ----------------------------------------------------------------------------------------------
# estimation


def _check_points(P, name: str) -> np.ndarray:
    try:
        P = np.asarray(P, dtype=float)
    except (TypeError, ValueError):
        raise AlignmentError(f"{name} must be an (N, 3) array of numbers") from None
    if P.ndim != 2 or P.shape[1] != 3:
        raise AlignmentError(f"{name} must have shape (N, 3), got {P.shape}")
    if not np.all(np.isfinite(P)):
        bad = np.flatnonzero(~np.all(np.isfinite(P), axis=1))
        raise AlignmentError(f"{name} contain NaN or infinite coordinates (rows {bad.tolist()[:10]})")
    return P


def _check_spread(P: np.ndarray, name: str) -> None:
    """Raise unless the points span at least a plane (needed for a unique rotation)."""
    sv = np.linalg.svd(P - P.mean(axis=0), compute_uv=False)
    size = max(np.abs(P).max(), 1e-300)
    if sv[0] <= _DEGENERATE_RTOL * size:
        raise AlignmentError(f"{name} are all coincident: need at least 3 non-collinear points")
    if sv[1] <= _DEGENERATE_RTOL * sv[0]:
        raise AlignmentError(f"{name} are collinear: need at least 3 non-collinear points")


def _check_pair(source, target) -> tuple[np.ndarray, np.ndarray]:
    X = _check_points(source, "source points")
    Y = _check_points(target, "target points")
    if X.shape != Y.shape:
        raise AlignmentError(f"source and target points differ in shape: {X.shape} vs {Y.shape}")
    if len(X) < 3:
        raise AlignmentError(f"need at least 3 control points, got {len(X)}")
    return X, Y


def _umeyama_batch(X: np.ndarray, Y: np.ndarray, with_scale: bool = True):
    """Umeyama on K problems at once: X, Y (K, N, 3) -> s (K,), R (K, 3, 3), t (K, 3).

    No validation; degenerate inputs give meaningless (possibly non-finite) results.
    """
    mx, my = X.mean(axis=1), Y.mean(axis=1)
    Xc, Yc = X - mx[:, None], Y - my[:, None]
    n = X.shape[1]
    cov = np.einsum("kni,knj->kij", Yc, Xc) / n  # target-source cross-covariance
    U, D, Vt = np.linalg.svd(cov)
    # Reflection fix: flip the least significant axis when U V^T would be a reflection.
    d = np.where(np.linalg.det(U) * np.linalg.det(Vt) < 0, -1.0, 1.0)
    S = np.ones((len(X), 3))
    S[:, 2] = d
    R = (U * S[:, None, :]) @ Vt
    if with_scale:
        var_x = np.einsum("kni,kni->k", Xc, Xc) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.einsum("ki,ki->k", D, S) / var_x
    else:
        s = np.ones(len(X))
    t = my - s[:, None] * np.einsum("kij,kj->ki", R, mx)
    return s, R, t


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Similarity:
    """Least-squares similarity (Umeyama 1991) with target ~ s R source + t.

    source, target: (N, 3) corresponding points, N >= 3, not collinear; source in SfM units,
    target in metres. ``with_scale=False`` fixes s = 1 (rigid fit). Raises AlignmentError on
    bad input.
    """
    X, Y = _check_pair(source, target)
    _check_spread(X, "source points")
    _check_spread(Y, "target points")
    s, R, t = _umeyama_batch(X[None], Y[None], with_scale)
    if not (np.isfinite(s[0]) and s[0] > 0):
        raise AlignmentError("degenerate control points: estimated scale is not positive")
    return Similarity(s[0], R[0], t[0])


def residuals(sim: Similarity, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-point distance (N,) in target metres between sim(source) and target."""
    X, Y = _check_points(source, "source points"), _check_points(target, "target points")
    if X.shape != Y.shape:
        raise AlignmentError(f"source and target points differ in shape: {X.shape} vs {Y.shape}")
    return np.linalg.norm(sim.apply_points(X) - Y, axis=1)


def _sample_triples(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k random triples of distinct indices in [0, n), (k, 3)."""
    i = rng.integers(0, n, k)
    j = rng.integers(0, n - 1, k)
    j += j >= i
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    m = rng.integers(0, n - 2, k)
    m += m >= lo
    m += m >= hi
    return np.stack([i, j, m], axis=1)


def _triangle_ok(T: np.ndarray) -> np.ndarray:
    """(K, 3, 3) triangles -> (K,) True where not (nearly) collinear: sin(min angle) > 1e-3."""
    a, b, c = T[:, 0], T[:, 1], T[:, 2]
    area2 = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    longest2 = np.max(np.stack([((b - a) ** 2).sum(1), ((c - a) ** 2).sum(1), ((c - b) ** 2).sum(1)]), axis=0)
    return area2 > 1e-3 * longest2


def ransac_similarity(
    source: np.ndarray,
    target: np.ndarray,
    threshold: float,
    max_iterations: int = 1000,
    min_inliers: int = 3,
    seed: int | None = 0,
    confidence: float = 0.999,
    with_scale: bool = True,
) -> tuple[Similarity, np.ndarray]:
    """Robust similarity from control points containing gross errors.

    Hypotheses come from minimal samples of 3 non-collinear correspondences; a point is an inlier
    when its residual is < ``threshold`` (metres, target frame). The hypothesis with most inliers
    (ties: lowest truncated squared error) is refitted with Umeyama on its inliers, repeated until
    the inlier set is stable. Stops after the adaptive count log(1-confidence)/log(1-w^3)
    (w = best inlier ratio) or ``max_iterations``. Returns (transform, inlier mask (N,) bool);
    raises NoConsensusError if fewer than ``min_inliers`` (at least 3) points agree.
    """
    X, Y = _check_pair(source, target)
    if not (math.isfinite(threshold) and threshold > 0):
        raise AlignmentError(f"RANSAC threshold must be a positive number of metres, got {threshold!r}")
    if not 0 < confidence < 1:
        raise AlignmentError(f"RANSAC confidence must be in (0, 1), got {confidence!r}")
    if max_iterations < 1:
        raise AlignmentError(f"max_iterations must be >= 1, got {max_iterations!r}")
    _check_spread(X, "source points")
    _check_spread(Y, "target points")
    min_inliers = max(int(min_inliers), 3)
    rng = np.random.default_rng(seed)
    n = len(X)
    best = (-1, np.inf, None)  # (inlier count, truncated cost, inlier mask)
    needed, done, batch = max_iterations, 0, 64
    while done < min(needed, max_iterations):
        k = min(batch, max_iterations - done)
        idx = _sample_triples(rng, n, k)
        done += k
        Xs, Ys = X[idx], Y[idx]
        ok = _triangle_ok(Xs) & _triangle_ok(Ys)
        if not ok.any():
            continue
        s, R, t = _umeyama_batch(Xs[ok], Ys[ok], with_scale)
        good = np.isfinite(s) & (s > 0)
        if not good.any():
            continue
        s, R, t = s[good], R[good], t[good]
        r2 = (((s[:, None, None] * X @ R.transpose(0, 2, 1) + t[:, None]) - Y) ** 2).sum(-1)  # (K, N)
        inl = r2 < threshold**2
        counts = inl.sum(1)
        cost = np.minimum(r2, threshold**2).sum(1)
        h = np.lexsort((cost, -counts))[0]  # most inliers, then lowest truncated cost
        if (counts[h], -cost[h]) > (best[0], -best[1]):
            best = (int(counts[h]), float(cost[h]), inl[h])
        w = best[0] / n
        if w >= 1:
            needed = 0
        elif w > 0:
            needed = math.ceil(math.log(1 - confidence) / math.log(1 - w**3)) if w**3 > 1e-12 else max_iterations
    if best[0] < min_inliers:
        raise NoConsensusError(
            f"RANSAC found no consensus: best of {done} hypotheses has {max(best[0], 0)} inliers "
            f"(< min_inliers={min_inliers}) within {threshold} m; check the control-point "
            f"correspondences or raise the threshold"
        )
    mask = best[2]
    sim = _fit_subset(X, Y, mask, with_scale)
    for _ in range(20):  # local optimisation: refit until the inlier set is stable
        new = residuals(sim, X, Y) < threshold
        if np.array_equal(new, mask) or new.sum() < max(min_inliers, mask.sum()):
            break
        try:
            sim_new = _fit_subset(X, Y, new, with_scale)
        except AlignmentError:
            break
        sim, mask = sim_new, new
    return sim, mask.copy()


def _fit_subset(X, Y, mask, with_scale):
    return umeyama(X[mask], Y[mask], with_scale)


# ----------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True, eq=False)
class AlignmentReport:
    """Result of aligning control points: transform (source -> target), per-point residuals
    (N,) in metres, RMS over the inliers (metres), inlier mask (N,) and point names."""

    transform: Similarity
    residuals: np.ndarray
    rms: float
    inlier_mask: np.ndarray
    names: list[str]
    method: str
    threshold: float | None = None

    @property
    def rms_all(self) -> float:
        """RMS residual over all control points, outliers included (metres)."""
        return float(np.sqrt(np.mean(self.residuals**2)))

    def summary(self) -> str:
        """Human-readable table: the transform steps, then one line per control point."""
        T = self.transform
        lines = [
            f"method {self.method}: scale {T.scale:.6g}, rotation {T.rotation_angle_deg:.3f} deg, "
            f"translation {np.array2string(T.translation, precision=3)} m",
            f"RMS {self.rms:.4f} m over {int(self.inlier_mask.sum())}/{len(self.names)} inliers",
        ]
        for name, r, ok in zip(self.names, self.residuals, self.inlier_mask):
            lines.append(f"  {name:<16s} {r:9.4f} m{'' if ok else '  OUTLIER'}")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> "AlignmentReport":
        """Inverse of :meth:`to_dict`."""
        pts = d["points"]
        return cls(Similarity.from_dict(d["transform"]), np.array([p["residual_m"] for p in pts], float),
                   float(d["rms_m"]), np.array([p["inlier"] for p in pts], bool), [p["name"] for p in pts],
                   d["method"], d["threshold"])

    def to_dict(self) -> dict:
        return {
            "transform": self.transform.to_dict(),
            "method": self.method,
            "threshold": self.threshold,
            "rms_m": self.rms,
            "points": [
                {"name": n, "residual_m": float(r), "inlier": bool(i)}
                for n, r, i in zip(self.names, self.residuals, self.inlier_mask)
            ],
        }


def align_with_control_points(
    source_points: np.ndarray,
    target_points: np.ndarray,
    names: Sequence[str] | None = None,
    method: str = "umeyama",
    threshold: float | None = None,
    with_scale: bool = True,
    **ransac_kwargs,
) -> AlignmentReport:
    """Fit the SfM -> building similarity from control points and report residuals.

    source_points: (N, 3) SfM coordinates; target_points: (N, 3) surveyed metres. ``method``
    is "umeyama" (all points are inliers) or "ransac" (needs ``threshold`` in metres; extra
    keyword arguments go to :func:`ransac_similarity`).
    """
    X, Y = _check_pair(source_points, target_points)
    sv = np.linalg.svd(Y - Y.mean(0), compute_uv=False)
    if sv[1] < COLLINEAR_WARN_RATIO * sv[0]:
        warnings.warn(f"the control points lie nearly on one line (spread across it {sv[1] / sv[0]:.1%} of the spread "
                      "along it): the rotation about that line is poorly determined; survey points off the line",
                      AlignmentWarning, stacklevel=2)
    names = [f"P{i}" for i in range(len(X))] if names is None else [str(n) for n in names]
    if len(names) != len(X):
        raise AlignmentError(f"got {len(names)} names for {len(X)} control points")
    if method == "umeyama":
        if ransac_kwargs:
            raise AlignmentError(f"unexpected arguments for umeyama: {sorted(ransac_kwargs)}")
        sim = umeyama(X, Y, with_scale)
        mask = np.ones(len(X), dtype=bool)
    elif method == "ransac":
        if threshold is None:
            raise AlignmentError("method='ransac' needs a threshold in metres")
        sim, mask = ransac_similarity(X, Y, threshold, with_scale=with_scale, **ransac_kwargs)
    else:
        raise AlignmentError(f"method must be 'umeyama' or 'ransac', got {method!r}")
    res = residuals(sim, X, Y)
    rms = float(np.sqrt(np.mean(res[mask] ** 2)))
    return AlignmentReport(sim, res, rms, mask, names, method, threshold)


# ----------------------------------------------------------------------------------------------
# control-point study


def control_point_study(
    source: np.ndarray,
    target: np.ndarray,
    counts: Sequence[int],
    noise_levels: Sequence[float],
    trials: int,
    seed: int | None = 0,
    evaluate_points: np.ndarray | None = None,
    evaluate_truth: np.ndarray | None = None,
    with_scale: bool = True,
) -> dict[str, np.ndarray]:
    """How alignment accuracy depends on the number of control points and the survey noise.

    source: (N, 3) candidate control points in the SfM frame; target: (N, 3) their true building
    coordinates (metres). For each count n and noise sigma (metres, i.i.d. Gaussian per
    coordinate added to the target), ``trials`` random subsets of n non-collinear points are
    fitted with Umeyama, and ``evaluate_points`` (M, 3; SfM frame; default: all of ``source``)
    are mapped and compared with ``evaluate_truth`` (M, 3; metres; default: ``target``).

    Returns a long-format dict of equal-length arrays, one entry per (count, noise, trial):
    ``count``, ``noise`` (m), ``trial``, ``median_error`` (m, median over the evaluation points)
    and ``fit_rms`` (m, RMS residual on the noisy control points used).
    """
    X, Y = _check_pair(source, target)
    E = X if evaluate_points is None else _check_points(evaluate_points, "evaluate_points")
    G = Y if evaluate_truth is None else _check_points(evaluate_truth, "evaluate_truth")
    if E.shape != G.shape:
        raise AlignmentError(f"evaluate_points and evaluate_truth differ in shape: {E.shape} vs {G.shape}")
    if trials < 1:
        raise AlignmentError(f"trials must be >= 1, got {trials}")
    for n in counts:
        if not 3 <= n <= len(X):
            raise AlignmentError(f"each count must be in 3..{len(X)} (available control points), got {n}")
    for sigma in noise_levels:
        if not (math.isfinite(sigma) and sigma >= 0):
            raise AlignmentError(f"noise levels must be finite and >= 0 metres, got {sigma}")
    _check_spread(X, "source points")
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("count", "noise", "trial", "median_error", "fit_rms")}
    for n in counts:
        for sigma in noise_levels:
            idx = _random_subsets(rng, X, n, trials)
            Xs = X[idx]
            Ys = Y[idx] + rng.normal(0.0, sigma, size=(trials, n, 3)) if sigma > 0 else Y[idx]
            s, R, t = _umeyama_batch(Xs, Ys, with_scale)
            mapped = s[:, None, None] * E @ R.transpose(0, 2, 1) + t[:, None]  # (T, M, 3)
            err = np.median(np.linalg.norm(mapped - G, axis=-1), axis=1)
            fit = s[:, None, None] * Xs @ R.transpose(0, 2, 1) + t[:, None] - Ys
            rows["count"].append(np.full(trials, n))
            rows["noise"].append(np.full(trials, float(sigma)))
            rows["trial"].append(np.arange(trials))
            rows["median_error"].append(err)
            rows["fit_rms"].append(np.sqrt((fit**2).sum(-1).mean(-1)))
    return {k: np.concatenate(v) for k, v in rows.items()}


def _random_subsets(rng: np.random.Generator, X: np.ndarray, n: int, trials: int) -> np.ndarray:
    """(trials, n) indices of random subsets whose points are not collinear (redrawn if so)."""
    idx = np.argsort(rng.random((trials, len(X))), axis=1)[:, :n]
    for _ in range(100):
        P = X[idx]
        sv = np.linalg.svd(P - P.mean(axis=1, keepdims=True), compute_uv=False)
        bad = sv[:, 1] <= 1e-6 * sv[:, 0]
        if not bad.any():
            return idx
        idx[bad] = np.argsort(rng.random((int(bad.sum()), len(X))), axis=1)[:, :n]
    raise AlignmentError(f"could not draw {n} non-collinear control points: the points are (nearly) collinear")


def study_table(study: dict[str, np.ndarray], stat=np.median) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summarise :func:`control_point_study` over trials: (counts (C,), noise (L,), table (C, L))
    with ``stat`` (default median) of ``median_error`` in metres for each count and noise."""
    counts, noise = np.unique(study["count"]), np.unique(study["noise"])
    table = np.empty((len(counts), len(noise)))
    for i, c in enumerate(counts):
        for j, z in enumerate(noise):
            table[i, j] = stat(study["median_error"][(study["count"] == c) & (study["noise"] == z)])
    return counts, noise, table


# ----------------------------------------------------------------------------------------------
# choosing control points


def pick_control_points(
    landmarks: np.ndarray,
    landmark_names: Sequence[str],
    frame_positions: np.ndarray,
    n: int,
    radius: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``n`` control points the way a surveyor would: frames taken standing at a
    recognisable, measurable spot (a corridor corner, a doorway), spread over the whole site.

    landmarks: (L, 2) or (L, 3) landmark positions in the building frame (metres; only x, y are
    used); frame_positions: (N, 3) camera centres in the same frame (where each frame was taken).
    A landmark is usable when some frame stands within ``radius`` metres of it (horizontally); its
    frame is the nearest one. From the usable landmarks, ``n`` are taken spread out the way a good
    survey network is, which keeps the fit well conditioned: the two farthest apart, then the one
    farthest off the line through them, then farthest-point sampling.

    Returns (frame indices (n,), landmark indices (n,)), in the order picked.
    A frame standing at two landmarks is one control point: it is never picked twice.
    Raises :class:`AlignmentError` when fewer than ``n`` usable landmarks have distinct frames (see
    :func:`landmark_frames`) or n < 3.
    """
    if len(landmarks) != len(landmark_names):
        raise AlignmentError(f"got {len(landmark_names)} names for {len(landmarks)} landmarks")
    if n < 3:
        raise AlignmentError(f"a similarity needs at least 3 control points, got n={n}")
    frame, mark = landmark_frames(landmarks, frame_positions, radius)
    if len(frame) < n:
        raise AlignmentError(f"only {len(frame)} landmark(s) have a frame of their own within {radius} m, {n} were "
                             "asked for; walk past more corners and doors or lower n")
    P = np.asarray(frame_positions, dtype=float)[frame, :2]
    a = int(np.argmax(np.linalg.norm(P - P.mean(0), axis=1)))
    b = int(np.argmax(np.linalg.norm(P - P[a], axis=1)))
    u = (P[b] - P[a]) / max(float(np.linalg.norm(P[b] - P[a])), 1e-12)
    off_line = np.abs((P[:, 0] - P[a, 0]) * u[1] - (P[:, 1] - P[a, 1]) * u[0])
    chosen = [a, b, int(np.argmax(np.where(np.isin(np.arange(len(P)), [a, b]), -np.inf, off_line)))]
    gap = np.min(np.linalg.norm(P[:, None] - P[chosen][None], axis=-1), axis=1)
    while len(chosen) < n:  # farthest-point sampling over the frames not taken yet
        gap[chosen] = -np.inf
        k = int(np.argmax(gap))
        chosen.append(k)
        gap = np.minimum(gap, np.linalg.norm(P - P[k], axis=1))
    return frame[chosen], mark[chosen]


def landmark_frames(landmarks: np.ndarray, frame_positions: np.ndarray,
                    radius: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Every frame that can serve as a control point: for each landmark with a frame within
    ``radius`` metres (horizontally), its nearest frame; a frame nearest to several landmarks
    counts once (with the first of them). Same arguments as :func:`pick_control_points`.

    Returns (frame indices (K,), landmark indices (K,)) in landmark order; K is the largest ``n``
    that :func:`pick_control_points` accepts.
    """
    L = np.asarray(landmarks, dtype=float)
    F = np.asarray(frame_positions, dtype=float)
    if L.ndim != 2 or L.shape[1] not in (2, 3):
        raise AlignmentError(f"landmarks must be (L, 2) or (L, 3), got {L.shape}")
    if F.ndim != 2 or F.shape[1] != 3 or not np.all(np.isfinite(F)):
        raise AlignmentError(f"frame_positions must be finite (N, 3), got {F.shape}")
    if not len(L) or not len(F):
        return np.zeros(0, int), np.zeros(0, int)
    d = np.linalg.norm(L[:, None, :2] - F[None, :, :2], axis=-1)
    nearest = np.argmin(d, axis=1)
    usable = np.nonzero(d[np.arange(len(L)), nearest] <= radius)[0]
    _, first = np.unique(nearest[usable], return_index=True)
    keep = usable[np.sort(first)]
    return nearest[keep], keep


def implausible_jumps(t, x, max_speed_mps: float = 3.0) -> np.ndarray:
    """Frames of one walk whose position jumps away and back: the speed from the previous frame and
    to the next one both exceed ``max_speed_mps`` (metres per second; a walker holding a phone
    stays well under 3). ``t`` (N,) seconds, increasing; ``x`` (N, 3) positions in metres, e.g.
    the aligned SfM labels of the registered frames in walk order. The first and last frames need
    only their one neighbour, and only when that neighbour is not itself flagged from its other
    side. Needs no truth: it finds a frame SfM placed far from its neighbours (a "flyaway"), not a
    stretch placed wrong as a whole. Returns a boolean mask (N,).
    """
    t = np.asarray(t, float)
    if len(t) < 2:
        return np.zeros(len(t), bool)
    x = np.asarray(x, float).reshape(len(t), -1)
    dt = np.diff(t)
    if np.any(dt <= 0) or not np.all(np.isfinite(t)):
        raise AlignmentError("frame times must be finite and increasing")
    fast = np.linalg.norm(np.diff(x, axis=0), axis=1) / dt > max_speed_mps  # step i -> i+1
    out = np.zeros(len(t), bool)
    out[1:-1] = fast[:-1] & fast[1:]
    if len(t) >= 3:
        out[0] = fast[0] and not fast[1]
        out[-1] = fast[-1] and not fast[-2]
    return out

