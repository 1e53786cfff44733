"""Tests for campose.align: Umeyama / RANSAC similarity fits from control points."""

import json
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from campose.align import (
    AlignmentError,
    AlignmentWarning,
    NoConsensusError,
    Similarity,
    align_with_control_points,
    control_point_study,
    implausible_jumps,
    landmark_frames,
    pick_control_points,
    ransac_similarity,
    residuals,
    study_table,
    umeyama,
)


def random_similarity(rng, log_scale=(-2, 2), t_range=100.0) -> Similarity:
    return Similarity(
        10.0 ** rng.uniform(*log_scale),
        Rotation.random(random_state=rng).as_matrix(),
        rng.uniform(-t_range, t_range, 3),
    )


def building_points(rng, n) -> np.ndarray:
    """n points inside a 60 x 40 x 12 m building (metres, z up)."""
    return rng.uniform([0, 0, 0], [60, 40, 12], size=(n, 3))


def noisy_correspondences(seed, n, noise):
    """A random true similarity, n building points Y, their source points X, and Y with noise."""
    rng = np.random.default_rng(seed)
    true = random_similarity(rng)
    Y = building_points(rng, n)
    X = true.inverse().apply_points(Y)
    return true, X, Y, Y + rng.normal(0, noise, Y.shape)


def rotation_error_deg(Ra, Rb) -> float:
    c = np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1)
    return float(np.degrees(np.arccos(c)))


# ---------------------------------------------------------------------------------------------
# umeyama


@settings(deadline=None, max_examples=60)
@given(
    log_s=st.floats(-2, 2),
    quat=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1),
    t=st.lists(st.floats(-1000, 1000), min_size=3, max_size=3),
    n=st.integers(3, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_umeyama_recovers_exact_similarity(log_s, quat, t, n, seed):
    true = Similarity(10.0**log_s, Rotation.from_quat(quat).as_matrix(), t)
    X = np.random.default_rng(seed).normal(0, 10, size=(n, 3))
    est = umeyama(X, true.apply_points(X))
    assert est.scale == pytest.approx(true.scale, rel=1e-9)
    assert np.allclose(est.rotation, true.rotation, atol=1e-9)
    assert np.allclose(est.translation, true.translation, atol=1e-9 * max(1.0, np.abs(t).max()))
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)


def test_umeyama_error_shrinks_with_more_points():
    rng = np.random.default_rng(1)
    true = random_similarity(rng)
    eval_pts = building_points(rng, 200)
    src_eval = true.inverse().apply_points(eval_pts)
    errors = []
    for n in (4, 16, 64, 256, 1024):
        e = []
        for _ in range(30):
            Y = building_points(rng, n)
            X = true.inverse().apply_points(Y)
            est = umeyama(X, Y + rng.normal(0, 0.05, Y.shape))
            e.append(np.median(np.linalg.norm(est.apply_points(src_eval) - eval_pts, axis=1)))
        errors.append(np.mean(e))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.01


def test_umeyama_reflection_gives_proper_rotation():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 3))
    Y = X * [1, 1, -1]  # a mirror image: the best orthogonal fit would be a reflection
    U, _, Vt = np.linalg.svd((Y - Y.mean(0)).T @ (X - X.mean(0)))
    assert np.linalg.det(U @ Vt) < 0  # naive Kabsch without the fix returns a reflection
    est = umeyama(X, Y)
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)
    assert np.allclose(est.rotation.T @ est.rotation, np.eye(3), atol=1e-12)
    assert est.scale > 0


def test_umeyama_planar_control_points():
    """All control points on the floor (rank-2 covariance): still exact, still det +1."""
    rng = np.random.default_rng(3)
    Y = building_points(rng, 8)
    Y[:, 2] = 0.0
    for _ in range(20):
        true = random_similarity(rng)
        X = true.inverse().apply_points(Y)
        est = umeyama(X, Y)
        assert est.allclose(true, rtol=1e-8, atol=1e-8)
        assert np.linalg.det(est.rotation) == pytest.approx(1.0)


def test_umeyama_without_scale_is_rigid():
    rng = np.random.default_rng(4)
    true = Similarity(1.0, Rotation.random(random_state=rng).as_matrix(), [5, -3, 2])
    X = rng.normal(size=(10, 3))
    est = umeyama(X, true.apply_points(X) + rng.normal(0, 0.01, (10, 3)), with_scale=False)
    assert est.scale == 1.0
    assert rotation_error_deg(est.rotation, true.rotation) < 1.0


# ---------------------------------------------------------------------------------------------
# agreement with pycolmap


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("planar", [False, True])
def test_umeyama_matches_pycolmap(seed, planar):
    pycolmap = pytest.importorskip("pycolmap")
    rng = np.random.default_rng(100 + seed)
    true = random_similarity(rng)
    Y = building_points(rng, 12)
    if planar:
        Y[:, 2] = 0.0
    X = true.inverse().apply_points(Y)
    Yn = Y + rng.normal(0, 0.1, Y.shape)
    ours = umeyama(X, Yn)
    theirs = pycolmap.estimate_sim3d(X, Yn)  # tgt_from_src; Sim3d | None
    assert theirs is not None
    R_theirs = theirs.rotation.matrix()
    assert np.allclose(theirs.rotation.quat[[3, 0, 1, 2]] * np.sign(theirs.rotation.quat[3]), ours.quaternion, atol=1e-6)
    assert ours.scale == pytest.approx(float(theirs.scale), rel=1e-6)
    assert np.allclose(ours.rotation, R_theirs, atol=1e-6)
    assert np.allclose(ours.translation, np.asarray(theirs.translation), atol=1e-6)
    assert np.allclose(ours.matrix()[:3], theirs.matrix(), atol=1e-6)  # pycolmap's matrix() is 3x4


# ---------------------------------------------------------------------------------------------
# RANSAC


def _outlier_scene(seed=5, n=40, frac=0.3, noise=0.01):
    rng = np.random.default_rng(seed)
    true = random_similarity(rng)
    Y = building_points(rng, n)
    X = true.inverse().apply_points(Y)
    Yobs = Y + rng.normal(0, noise, Y.shape)
    out = np.zeros(n, bool)
    out[rng.choice(n, int(frac * n), replace=False)] = True
    Yobs[out] += rng.uniform(3, 20, (out.sum(), 3)) * rng.choice([-1, 1], (out.sum(), 3))
    return true, X, Y, Yobs, out


def test_ransac_rejects_gross_outliers():
    true, X, Y, Yobs, out = _outlier_scene()
    sim, mask = ransac_similarity(X, Yobs, threshold=0.1)
    assert np.array_equal(mask, ~out)
    err = np.linalg.norm(sim.apply_points(X) - Y, axis=1)
    assert err.max() < 0.03
    assert rotation_error_deg(sim.rotation, true.rotation) < 0.05
    # plain least squares is dragged metres away by the same outliers
    naive = umeyama(X, Yobs)
    assert np.median(np.linalg.norm(naive.apply_points(X[~out]) - Y[~out], axis=1)) > 1.0


def test_ransac_is_seeded_and_reports():
    _, X, _, Yobs, out = _outlier_scene(seed=6)
    names = [f"cp{i:02d}" for i in range(len(X))]
    a = align_with_control_points(X, Yobs, names=names, method="ransac", threshold=0.1, seed=3)
    b = align_with_control_points(X, Yobs, names=names, method="ransac", threshold=0.1, seed=3)
    assert a.transform.allclose(b.transform, rtol=0, atol=0)
    assert np.array_equal(a.inlier_mask, ~out)
    assert a.rms < 0.03 < a.rms_all
    assert np.all(a.residuals[out] > 1.0)
    assert a.names == names and "OUTLIER" in a.summary()
    json.dumps(a.to_dict())


def test_ransac_no_consensus():
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    with pytest.raises(NoConsensusError, match="no consensus"):
        ransac_similarity(X, Y, threshold=1e-6, max_iterations=200)


def test_ransac_without_outliers_equals_umeyama():
    true, X, Y, Yn = noisy_correspondences(8, 15, 0.01)
    sim, mask = ransac_similarity(X, Yn, threshold=0.1)
    assert mask.all()
    assert sim.allclose(umeyama(X, Yn), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# the Similarity type


def look_at(centre, target, up=(0, 0, 1)):
    """Camera-to-world rotation (x right, y down, z forward) looking from centre at target."""
    z = np.asarray(target, float) - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


def wxyz(R):
    q = Rotation.from_matrix(R).as_quat()[[3, 0, 1, 2]]
    return q if q[0] >= 0 else -q


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1))
def test_apply_poses_preserves_what_the_camera_sees(seed):
    rng = np.random.default_rng(seed)
    sim = random_similarity(rng)
    c, p, other = rng.normal(0, 5, (3, 3))
    R = look_at(c, p)
    c2, q2 = sim.apply_poses(c, wxyz(R))
    R2 = Rotation.from_quat(q2[[1, 2, 3, 0]]).as_matrix()
    assert q2[0] >= 0 and np.linalg.norm(q2) == pytest.approx(1.0)
    assert np.allclose(c2, sim.apply_points(c))
    d = sim.apply_points(p) - c2
    assert np.allclose(R2[:, 2], d / np.linalg.norm(d), atol=1e-9)  # still looks at the point
    # any point projects to the same pixel direction (camera coords scale by s)
    before = R.T @ (other - c)
    after = R2.T @ (sim.apply_points(other) - c2)
    assert np.allclose(after, sim.scale * before, atol=1e-9 * max(1, sim.scale) * 10)


def test_apply_poses_batch_shapes():
    rng = np.random.default_rng(9)
    sim = random_similarity(rng)
    x = rng.normal(size=(5, 3))
    q = Rotation.random(5, random_state=rng).as_quat()[:, [3, 0, 1, 2]]
    x2, q2 = sim.apply_poses(x, q)
    assert x2.shape == (5, 3) and q2.shape == (5, 4) and np.all(q2[:, 0] >= 0)
    with pytest.raises(AlignmentError):
        sim.apply_poses(x, q[:4])


def test_inverse_compose_decompose_roundtrip():
    rng = np.random.default_rng(10)
    a, b = random_similarity(rng), random_similarity(rng)
    P = rng.normal(size=(7, 3))
    assert np.allclose(a.inverse().apply_points(a.apply_points(P)), P)
    assert a.compose(a.inverse()).allclose(Similarity.identity(), atol=1e-12)
    ab = a.compose(b)
    assert np.allclose(ab.apply_points(P), a.apply_points(b.apply_points(P)))
    assert np.allclose(ab.matrix(), a.matrix() @ b.matrix())
    assert Similarity.from_matrix(ab.matrix()).allclose(ab)
    steps = a.decompose()
    assert steps.compose().allclose(a, rtol=0, atol=1e-12)
    manual = steps.translate.apply_points(steps.rotate.apply_points(steps.scale.apply_points(P)))
    assert np.allclose(manual, a.apply_points(P))
    assert steps.scale.scale == a.scale and np.array_equal(steps.translate.translation, a.translation)


def test_to_dict_from_dict_roundtrip():
    sim = random_similarity(np.random.default_rng(11))
    d = json.loads(json.dumps(sim.to_dict()))
    assert Similarity.from_dict(d).allclose(sim, rtol=0, atol=0)
    del d["rotation"]  # the quaternion alone also suffices
    assert Similarity.from_dict(d).allclose(sim, rtol=1e-12, atol=1e-12)
    with pytest.raises(AlignmentError, match="missing key"):
        Similarity.from_dict({"scale": 1.0})


def test_similarity_validation():
    with pytest.raises(AlignmentError, match="scale"):
        Similarity(-1.0)
    with pytest.raises(AlignmentError, match="proper rotation"):
        Similarity(1.0, np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(AlignmentError, match="translation"):
        Similarity(1.0, np.eye(3), [1.0, 2.0])
    sim = Similarity()
    with pytest.raises(ValueError):
        sim.rotation[0, 0] = 2.0  # read-only


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "src, tgt, message",
    [
        (np.eye(3)[:2], np.eye(3)[:2], "at least 3 control points"),
        (np.eye(3), np.eye(4)[:, :3], "differ in shape"),
        (np.eye(3)[:, :2], np.eye(3)[:, :2], r"shape \(N, 3\)"),
        (np.array([[0, 0, 0], [1, 0, 0], [0, 1, np.nan]]), np.eye(3), "NaN"),
        (np.eye(3), np.array([[0, 0, 0], [1, 0, 0], [0, np.inf, 0]]), "NaN or infinite"),
        (np.outer(np.arange(5.0), [1, 2, 3]), np.random.default_rng(0).normal(size=(5, 3)), "collinear"),
        (np.random.default_rng(0).normal(size=(5, 3)), np.outer(np.arange(5.0), [1, 2, 3]), "target points are collinear"),
        (np.ones((4, 3)), np.random.default_rng(0).normal(size=(4, 3)), "coincident"),
    ],
)
def test_bad_input(src, tgt, message):
    with pytest.raises(AlignmentError, match=message):
        umeyama(src, tgt)


def test_bad_arguments():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(6, 3))
    with pytest.raises(AlignmentError, match="threshold"):
        ransac_similarity(X, X, threshold=0)
    with pytest.raises(AlignmentError, match="needs a threshold"):
        align_with_control_points(X, X, method="ransac")
    with pytest.raises(AlignmentError, match="method"):
        align_with_control_points(X, X, method="icp")
    with pytest.raises(AlignmentError, match="names"):
        align_with_control_points(X, X, names=["a", "b"])
    with pytest.raises(AlignmentError, match="collinear"):
        ransac_similarity(np.outer(np.arange(6.0), [1, 0, 0]), X, threshold=0.1)


def test_residuals_and_report_umeyama():
    true, X, Y, Yn = noisy_correspondences(13, 6, 0.02)
    rep = align_with_control_points(X, Yn)
    assert rep.names == [f"P{i}" for i in range(6)] and rep.inlier_mask.all()
    assert np.allclose(rep.residuals, residuals(rep.transform, X, Yn))
    assert rep.rms == pytest.approx(np.sqrt(np.mean(rep.residuals**2)))
    assert 0 < rep.rms < 0.05


# ---------------------------------------------------------------------------------------------
# control-point study


def _study_scene(seed=14):
    rng = np.random.default_rng(seed)
    true = random_similarity(rng)
    Y = building_points(rng, 60)
    truth = building_points(rng, 500)
    inv = true.inverse()
    return inv.apply_points(Y), Y, inv.apply_points(truth), truth


def test_control_point_study_trends_and_speed():
    X, Y, E, G = _study_scene()
    counts, noise = [3, 4, 6, 10, 20, 40], [0.0, 0.01, 0.02, 0.05, 0.1]
    t0 = time.perf_counter()
    study = control_point_study(X, Y, counts, noise, trials=50, seed=0, evaluate_points=E, evaluate_truth=G)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0
    assert set(study) >= {"count", "noise", "trial", "median_error", "fit_rms"}
    assert all(len(v) == 6 * 5 * 50 for v in study.values())
    c, z, table = study_table(study)
    assert list(c) == counts and list(z) == noise
    assert np.all(table[:, 0] < 1e-9)  # noiseless survey: exact
    assert np.all(np.diff(table[:, 1:], axis=0) < 0), table  # more points -> smaller error
    assert np.all(np.diff(table, axis=1) > 0), table  # more noise -> larger error
    again = control_point_study(X, Y, counts[:2], noise[:2], trials=5, seed=0, evaluate_points=E, evaluate_truth=G)
    first = control_point_study(X, Y, counts[:2], noise[:2], trials=5, seed=0, evaluate_points=E, evaluate_truth=G)
    assert np.array_equal(again["median_error"], first["median_error"])


def test_control_point_study_validation():
    X, Y, E, G = _study_scene()
    with pytest.raises(AlignmentError, match="count"):
        control_point_study(X, Y, [2], [0.01], trials=3)
    with pytest.raises(AlignmentError, match="noise"):
        control_point_study(X, Y, [4], [-0.1], trials=3)
    with pytest.raises(AlignmentError, match="differ in shape"):
        control_point_study(X, Y, [4], [0.01], trials=3, evaluate_points=E, evaluate_truth=G[:10])


def test_nearly_collinear_control_points_warn():
    rng = np.random.default_rng(3)
    true = random_similarity(rng)
    # a corridor: 20 m long, 20 cm of sideways wander, all at camera height
    Y = np.column_stack([np.linspace(0, 20, 6), rng.normal(0, 0.2, 6), np.full(6, 1.6)])
    X = true.inverse().apply_points(Y)
    with pytest.warns(AlignmentWarning, match="nearly on one line"):
        align_with_control_points(X, Y)
    Y2 = Y.copy()
    Y2[::2, 1] += 6.0  # half of them across the corridor: a well-spread survey
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlignmentWarning)
        align_with_control_points(true.inverse().apply_points(Y2), Y2)


def test_pick_control_points_spread_and_radius():
    # frames along an L-shaped walk; landmarks at both ends, the corner, a door beside the walk, one far away
    walk = np.concatenate([np.column_stack([np.linspace(0, 20, 41), np.zeros(41)]),
                           np.column_stack([np.full(20, 20.0), np.linspace(0.5, 10, 20)])])
    frames = np.column_stack([walk, np.full(len(walk), 1.6)])
    landmarks = np.array([[0, 0.3], [20, 0], [20, 10], [10, 0.6], [5, 5], [14, -0.2]])
    names = ["end A", "corner", "end B", "door", "far", "mid"]
    fi, li = pick_control_points(landmarks, names, frames, 3, radius=0.75)
    assert sorted(names[j] for j in li) == ["corner", "end A", "end B"]  # the spread-out ones
    for f, j in zip(fi, li):  # each is the nearest frame to its landmark
        assert f == np.argmin(np.linalg.norm(frames[:, :2] - landmarks[j], axis=1))
    fi, li = pick_control_points(landmarks, names, frames, 5)
    assert "far" not in [names[j] for j in li] and len(set(li)) == 5
    with pytest.raises(AlignmentError, match="only 5 landmark"):
        pick_control_points(landmarks, names, frames, 6)
    with pytest.raises(AlignmentError, match="at least 3"):
        pick_control_points(landmarks, names, frames, 2)


def test_pick_control_points_never_repeats_a_frame():
    # two landmarks share their nearest frame (a door beside a corner): one control point, not two
    frames = np.array([[0, 0, 1.6], [10, 0, 1.6], [10, 8, 1.6], [0, 8, 1.6], [5, 4, 1.6]], float)
    landmarks = np.array([[0, 0], [10, 0], [10, 8], [0, 8], [5, 4], [10.3, 7.6], [0.2, 0.4]])
    names = ["SW", "SE", "NE", "NW", "centre", "door by NE", "door by SW"]
    fi, li = landmark_frames(landmarks, frames, radius=1.0)
    assert fi.tolist() == [0, 1, 2, 3, 4] and li.tolist() == [0, 1, 2, 3, 4]  # first landmark of a shared frame
    fi, li = pick_control_points(landmarks, names, frames, 5, radius=1.0)  # the most there are
    assert sorted(fi.tolist()) == [0, 1, 2, 3, 4] and len(set(li.tolist())) == 5
    with pytest.raises(AlignmentError, match="only 5 landmark.*a frame of their own"):
        pick_control_points(landmarks, names, frames, 6, radius=1.0)
    fi, li = landmark_frames(landmarks, frames[:0], radius=1.0)
    assert len(fi) == len(li) == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 59), st.floats(2.0, 50.0), st.integers(0, 2**31 - 1))
def test_implausible_jumps_find_exactly_the_flyaway_frame(k, away, seed):
    """A walk at 1.2 m/s with wander, 4 frames/s; one frame moved ``away`` metres is the only one flagged,
    wherever it is (first and last frame included)."""
    rng = np.random.default_rng(seed)
    t = np.arange(60) / 4.0
    x = np.c_[1.2 * t, 0.3 * np.sin(t), 1.6 + rng.normal(0, 0.01, 60)]
    assert not implausible_jumps(t, x).any()
    moved = x.copy()
    direction = rng.normal(size=3)
    moved[k] += away * direction / np.linalg.norm(direction)
    assert np.flatnonzero(implausible_jumps(t, moved)).tolist() == [k]


def test_implausible_jumps_leave_a_misplaced_stretch_and_check_times():
    t = np.arange(40) / 4.0
    x = np.c_[1.2 * t, np.zeros(40), np.full(40, 1.6)]
    x[10:30] += [0.0, 15.0, 0.0]  # a stretch placed wrong as a whole: two jumps, no single flyaway
    assert not implausible_jumps(t, x).any()
    assert not implausible_jumps(t[:1], x[:1]).any() and not implausible_jumps(t[:0], x[:0]).any()
    with pytest.raises(AlignmentError, match="increasing"):
        implausible_jumps(t[::-1], x)

