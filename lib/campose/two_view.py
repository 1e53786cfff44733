"""Relative pose of two images by multiple-view geometry: the baseline a practitioner would pick
before training MeNet.

SIFT features (COLMAP's, on the CPU), mutual nearest neighbours that pass Lowe's ratio test, the
essential matrix by the five-point solver in LO-RANSAC (``pycolmap.estimate_essential_matrix``)
and its decomposition with the cheirality check. One camera, calibrated (the sequence's
:class:`campose.camera.Intrinsics`).

The answer follows MeNet's convention (:func:`campose.geometry.relative_pose`): camera j's pose in
camera i's axes (x right, y down, z forward), ``t_rel`` and ``q_rel = q_i^-1 q_j``. Two views fix
the translation only up to scale, so ``t_rel`` is a **unit vector**: its direction is comparable
with MeNet's, its length is not. A pair with fewer than ``min_inliers`` inliers is *not estimated*;
:func:`evaluate` then answers the fallback a practitioner would (straight ahead, no rotation) and
counts it, so the medians cover every pair.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from campose.camera import Intrinsics
from campose.dataset import PairDataset, PoseDataset, read_rgb

#: the answer for a pair that cannot be estimated: straight ahead (camera z), no rotation
FALLBACK_DIRECTION = np.array([0.0, 0.0, 1.0])
FALLBACK_Q = np.array([1.0, 0.0, 0.0, 0.0])


@dataclass
class TwoViewPose:
    """One pair's estimate: ``direction`` (3,) unit t_rel in camera i's axes, ``q`` (4,) unit q_rel,
    w >= 0 (the fallback where not ``ok``), ``matches`` (putative), ``inliers`` and ``seconds``
    (matching and estimation; the features' extraction is counted per image by the caller)."""

    direction: np.ndarray
    q: np.ndarray
    ok: bool
    matches: int
    inliers: int
    seconds: float


class EssentialMatrixEstimator:
    """Relative pose from two images of one calibrated camera.

    ``max_num_features``: SIFT features per image; ``ratio``: Lowe's ratio test; ``max_error_px``:
    RANSAC's inlier threshold (pixels, the epipolar error); ``min_inliers``: fewest inliers that count
    as estimated (COLMAP's verified pairs need 15); ``seed``: RANSAC's random seed."""

    name = "essential matrix (SIFT, 5-point RANSAC)"

    def __init__(self, intrinsics: Intrinsics, max_num_features: int = 4096, ratio: float = 0.8,
                 max_error_px: float = 2.0, min_inliers: int = 15, seed: int = 0):
        import pycolmap

        from campose.localize import _Sift

        if not isinstance(intrinsics, Intrinsics):
            raise TypeError(f"intrinsics must be campose.camera.Intrinsics, got {type(intrinsics).__name__}")
        if int(max_num_features) < 8:
            raise ValueError(f"max_num_features must be >= 8, got {max_num_features}")
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if not max_error_px > 0:
            raise ValueError(f"max_error_px must be > 0 pixels, got {max_error_px}")
        if int(min_inliers) < 5:
            raise ValueError(f"min_inliers must be >= 5 (the five-point solver's sample), got {min_inliers}")
        self.intrinsics = intrinsics
        self.ratio, self.min_inliers = float(ratio), int(min_inliers)
        K = intrinsics
        self._camera = pycolmap.Camera(model="PINHOLE", width=K.width, height=K.height,
                                       params=[K.fx, K.fy, K.cx, K.cy])
        self._ransac = pycolmap.RANSACOptions()
        self._ransac.max_error = float(max_error_px)
        self._ransac.random_seed = int(seed)
        self._sift = _Sift(int(max_num_features))

    def features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints (N, 2) pixels, unit descriptors (N, 128)) of a uint8 (H, W, 3) image of the
        estimator's camera."""
        from campose.localize import _unit_rows

        image = np.asarray(image)
        K = self.intrinsics
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[:2] != (K.height, K.width):
            raise ValueError(f"expected a uint8 image of {K.height} x {K.width} x 3 (the camera's size), "
                             f"got {image.dtype} {image.shape}")
        xy, desc = self._sift(image)
        return xy, _unit_rows(desc)

    def estimate_features(self, fi: tuple[np.ndarray, np.ndarray], fj: tuple[np.ndarray, np.ndarray]) -> TwoViewPose:
        """The relative pose from two images' :meth:`features`."""
        import pycolmap

        from campose.localize import _match
        from campose.sfm import pose_from_cam_from_world

        t0 = time.perf_counter()
        a, b = _match(fi[1], fj[1], self.ratio)
        ret = None
        if len(a) >= self.min_inliers:
            ret = pycolmap.estimate_essential_matrix(fi[0][a], fj[0][b], self._camera, self._camera, self._ransac)
        inliers = int(ret["num_inliers"]) if ret is not None else 0
        if inliers < self.min_inliers:
            return TwoViewPose(FALLBACK_DIRECTION.copy(), FALLBACK_Q.copy(), False, len(a), inliers,
                               time.perf_counter() - t0)
        # cam2_from_cam1 maps camera i's axes to camera j's: read as a world-to-camera transform with
        # camera i as the world, our conversion gives camera j's centre and orientation in i's axes
        t, q = pose_from_cam_from_world(ret["cam2_from_cam1"])
        n = np.linalg.norm(t)
        direction = t / n if n > 0 else FALLBACK_DIRECTION.copy()
        return TwoViewPose(direction, q, True, len(a), inliers, time.perf_counter() - t0)

    def estimate(self, image_i: np.ndarray, image_j: np.ndarray) -> TwoViewPose:
        """The relative pose of two uint8 images (camera j in camera i's axes, unit t_rel)."""
        return self.estimate_features(self.features(image_i), self.features(image_j))


@dataclass
class TwoViewResult:
    """:func:`predict_pairs`' answer for one sequence: the pairs (P, 2) of frame indices, unit
    ``direction`` (P, 3), ``q`` (P, 4), ``ok`` (P,), ``inliers`` (P,), and the mean seconds per pair
    (reading the images and extracting their features, once per frame, then matching and
    estimation)."""

    pairs: np.ndarray
    direction: np.ndarray
    q: np.ndarray
    ok: np.ndarray
    inliers: np.ndarray
    seconds_per_pair: float


def predict_pairs(estimator: EssentialMatrixEstimator, sequence, max_gap: int = 10, seed: int = 0,
                  progress: bool | None = None) -> TwoViewResult:
    """The estimator on the pairs :func:`campose.evaluate.predict_pairs` scores MeNet on (one
    partner per frame up to ``max_gap`` frames ahead or behind, drawn with ``seed``), reading the
    sequence's full-size images. Each image's features are extracted once."""
    from tqdm.auto import tqdm

    from campose.pipeline import show_progress

    K = sequence.intrinsics
    frames = PoseDataset([sequence], (K.width, K.height), cache=False)  # pairs only: no image is read here
    pairs = PairDataset(frames, max_gap=max_gap, seed=seed, stacked=True).pairs[:, :2]
    feats: dict[int, tuple] = {}
    out = []
    t0 = time.perf_counter()
    for i, j in tqdm(pairs, desc=f"two-view {sequence.name}", disable=not (show_progress() if progress is None
                                                                            else progress)):
        for k in (int(i), int(j)):
            if k not in feats:
                feats[k] = estimator.features(read_rgb(sequence.image_path(k)))
        out.append(estimator.estimate_features(feats[int(i)], feats[int(j)]))
    seconds = (time.perf_counter() - t0) / max(len(pairs), 1)
    return TwoViewResult(np.asarray(pairs, int), np.array([p.direction for p in out]).reshape(-1, 3),
                         np.array([p.q for p in out]).reshape(-1, 4), np.array([p.ok for p in out], bool),
                         np.array([p.inliers for p in out], int), seconds)


def evaluate(estimator: EssentialMatrixEstimator, sequences: Mapping, max_gap: int = 10, seed: int = 0,
             progress: bool | None = None):
    """Direction (deg) and relative rotation (deg) errors of the estimator on each sequence's pairs
    against the sequence's own poses (pass the true poses). Returns a DataFrame per pair:
    ``sequence``, ``i``, ``j``, ``gap`` (frames), ``step_m`` (true |t_rel|), ``direction_deg``,
    ``rotation_deg``, ``ok``, ``inliers``; ``attrs["seconds_per_pair"]``."""
    import pandas as pd

    from campose.evaluate import relative_errors
    from campose.geometry import relative_pose

    rows, seconds, n = [], 0.0, 0
    for name, s in sequences.items():
        r = predict_pairs(estimator, s, max_gap, seed, progress)
        i, j = r.pairs[:, 0], r.pairs[:, 1]
        t_true, q_true = relative_pose(s.x[i], s.q[i], s.x[j], s.q[j])
        e = relative_errors(r.direction, r.q, t_true, q_true)
        rows.append(pd.DataFrame({"sequence": name, "i": i, "j": j, "gap": np.abs(j - i),
                                  "step_m": np.linalg.norm(t_true, axis=1), "direction_deg": e["direction_deg"],
                                  "rotation_deg": e["rotation_deg"], "ok": r.ok, "inliers": r.inliers}))
        seconds += r.seconds_per_pair * len(i)
        n += len(i)
    if not rows:
        raise ValueError("no sequences to evaluate")
    frame = pd.concat(rows, ignore_index=True)
    frame.attrs["seconds_per_pair"] = seconds / max(n, 1)
    return frame
