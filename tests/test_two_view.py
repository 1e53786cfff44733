"""campose.two_view: the essential-matrix baseline for MeNet. Its convention against exact
synthetic correspondences, rendered pairs of the default floor, a featureless pair, bad inputs, and
the pairs it scores (the ones MeNet is scored on)."""

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from campose import geometry, pipeline, two_view  # noqa: E402
from campose.camera import Intrinsics  # noqa: E402
from campose.dataset import PairDataset, write_sequence, load_sequence  # noqa: E402

K = Intrinsics(320, 240, 250.0, 250.0, 160.0, 120.0)


def _project(x, q, points):
    R, t = geometry.world_to_camera(x, q)
    p = points @ R.T + t
    return np.c_[K.fx * p[:, 0] / p[:, 2] + K.cx, K.fy * p[:, 1] / p[:, 2] + K.cy], p[:, 2]


@pytest.mark.parametrize("seed", range(4))
def test_exact_correspondences_give_the_true_relative_pose(seed):
    """Points seen by two cameras, matched through identical descriptors: the estimate is the
    true t_rel direction and q_rel of :func:`geometry.relative_pose` (our convention, not COLMAP's)."""
    rng = np.random.default_rng(seed)
    x_i = np.array([10.0, 7.0, 1.6])
    q_i = geometry.camera_rotation(rng.uniform(-np.pi, np.pi), rng.uniform(-0.1, 0.1))
    step = rng.normal(size=3) * [0.5, 0.1, 0.5] + geometry.quat_rotate(q_i, [0.0, 0.0, 1.0])  # mostly ahead
    x_j = x_i + step
    q_j = geometry.quat_multiply(q_i, geometry.rotvec_to_quat(rng.normal(scale=0.1, size=3)))
    pts = x_i + geometry.quat_rotate(q_i, np.c_[rng.uniform(-4, 4, (400, 2)), rng.uniform(3, 10, 400)])
    uv_i, z_i = _project(x_i, q_i, pts)
    uv_j, z_j = _project(x_j, q_j, pts)
    seen = (z_i > 0) & (z_j > 0)
    desc = rng.normal(size=(seen.sum(), 128))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    est = two_view.EssentialMatrixEstimator(K, max_error_px=1.0)
    got = est.estimate_features((uv_i[seen], desc), (uv_j[seen][::-1], desc[::-1]))  # order must not matter
    t_true, q_true = geometry.relative_pose(x_i, q_i, x_j, q_j)
    assert got.ok and got.inliers >= 0.95 * seen.sum()
    assert np.isclose(np.linalg.norm(got.direction), 1.0)
    cos = np.dot(got.direction, t_true) / np.linalg.norm(t_true)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 0.05
    assert geometry.rotation_error_deg(got.q, q_true) < 0.05


def _render_pair(x_i, yaw_i, x_j, yaw_j):
    prof = pipeline.get_profile("quick")
    renderer = pipeline.get_renderer(prof)
    q_i, q_j = geometry.camera_rotation(yaw_i, -0.05), geometry.camera_rotation(yaw_j, -0.05)
    return (renderer.render(np.asarray(x_i, float), q_i, K), renderer.render(np.asarray(x_j, float), q_j, K),
            geometry.relative_pose(np.asarray(x_i, float), q_i, np.asarray(x_j, float), q_j))


def test_rendered_step_along_a_corridor_both_ways():
    """A 1 m step east along the default floor's south corridor, turning 8 degrees: the direction
    within 3 degrees and the rotation within 1; swapping the images reads the step backwards."""
    a, b, (t_true, q_true) = _render_pair([15.0, 7.25, 1.6], 0.05, [16.0, 7.3, 1.6], 0.19)
    est = two_view.EssentialMatrixEstimator(K)
    fwd, back = est.estimate(a, b), est.estimate(b, a)
    assert fwd.ok and back.ok
    err = np.degrees(np.arccos(np.clip(fwd.direction @ t_true / np.linalg.norm(t_true), -1, 1)))
    assert err < 3.0
    assert geometry.rotation_error_deg(fwd.q, q_true) < 1.0
    assert fwd.direction[2] > 0.9 and back.direction[2] < -0.9  # ahead, then behind


def test_a_featureless_pair_falls_back_to_straight_ahead():
    est = two_view.EssentialMatrixEstimator(K)
    flat = np.full((K.height, K.width, 3), 128, np.uint8)
    got = est.estimate(flat, flat)
    assert not got.ok and got.inliers == 0
    assert np.array_equal(got.direction, two_view.FALLBACK_DIRECTION)
    assert np.array_equal(got.q, two_view.FALLBACK_Q)


def test_bad_inputs():
    with pytest.raises(TypeError, match="Intrinsics"):
        two_view.EssentialMatrixEstimator((320, 240))
    for bad in ({"ratio": 0}, {"ratio": 1.5}, {"max_error_px": 0}, {"min_inliers": 4}, {"max_num_features": 2}):
        with pytest.raises(ValueError):
            two_view.EssentialMatrixEstimator(K, **bad)
    est = two_view.EssentialMatrixEstimator(K)
    with pytest.raises(ValueError, match="240 x 320"):
        est.estimate(np.zeros((100, 100, 3), np.uint8), np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        est.features(np.zeros((240, 320, 3), float))


def test_evaluate_scores_the_pairs_menet_is_scored_on(tmp_path):
    """Six frames stepping along the corridor: the pairs are :class:`PairDataset`'s with the same
    ``max_gap`` and seed, the errors are small, and the frame says which pairs were estimated."""
    prof = pipeline.get_profile("quick")
    renderer = pipeline.get_renderer(prof)
    xs = np.c_[np.linspace(14.0, 17.0, 6), np.full(6, 7.25), np.full(6, 1.6)]
    q = geometry.camera_rotation(np.linspace(0.0, 0.2, 6), np.full(6, -0.05))
    write_sequence(tmp_path / "walk", (renderer.render(xs[k], q[k], K) for k in range(6)), xs, q, K, {"split": "test"})
    seq = load_sequence(tmp_path / "walk")
    f = two_view.evaluate(two_view.EssentialMatrixEstimator(K), {"walk": seq}, max_gap=3, seed=4, progress=False)
    ref = PairDataset([seq], (32, 24), max_gap=3, seed=4)
    assert np.array_equal(f[["i", "j"]].to_numpy(), ref.pairs[:, :2])
    assert set(f.columns) >= {"sequence", "gap", "step_m", "direction_deg", "rotation_deg", "ok", "inliers"}
    assert np.allclose(f["step_m"], np.linalg.norm(ref.t_rel, axis=1))
    assert f["ok"].all() and f["direction_deg"].max() < 5 and f["rotation_deg"].max() < 1
    assert f.attrs["seconds_per_pair"] > 0
    with pytest.raises(ValueError, match="no sequences"):
        two_view.evaluate(two_view.EssentialMatrixEstimator(K), {})
