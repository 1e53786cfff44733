"""Quaternion and pose algebra against scipy's Rotation, by property tests (hypothesis)."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation, Slerp

from campose import geometry as g

prop = settings(deadline=None, max_examples=60)  # local: do not change other modules' hypothesis profile

quats = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 0.1).map(g.quat_normalize)
raw_quats = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 0.1)
vecs = arrays(np.float64, 3, elements=st.floats(-50, 50))
small_vecs = arrays(np.float64, 3, elements=st.floats(-1.5, 1.5))


def sp(q):  # ours (w, x, y, z) -> scipy Rotation (x, y, z, w)
    q = np.asarray(q, float)
    return Rotation.from_quat(np.concatenate([q[..., 1:], q[..., :1]], -1))


def ours(r):  # scipy Rotation -> ours (w, x, y, z), canonical sign
    xyzw = r.as_quat()
    return g.quat_normalize(np.concatenate([xyzw[..., 3:], xyzw[..., :3]], -1))


# ---------------------------------------------------------------------------- quaternions vs scipy
@prop
@given(raw_quats)
def test_normalize_is_unit_with_canonical_sign(q):
    n = g.quat_normalize(q)
    assert np.isclose(np.linalg.norm(n), 1) and n[0] >= 0
    assert np.allclose(g.quat_normalize(-q), n)  # q and -q: one canonical representative
    assert np.allclose(g.quat_to_matrix(q), sp(n).as_matrix(), atol=1e-9)  # to_matrix normalises


@prop
@given(quats)
def test_matrix_matches_scipy_and_round_trips(q):
    assert np.allclose(g.quat_to_matrix(q), sp(q).as_matrix(), atol=1e-9)
    assert np.allclose(g.matrix_to_quat(g.quat_to_matrix(q)), q, atol=1e-9)
    assert np.allclose(g.matrix_to_quat(sp(q).as_matrix()), ours(sp(q)), atol=1e-9)
    assert q[0] >= -1e-12 and np.isclose(np.linalg.norm(q), 1)


def test_matrix_to_quat_all_shepperd_branches_and_batches():
    # half turns about x, y, z (largest diagonal element picks the branch) and near-half turns
    axes = np.r_[np.eye(3), [[1, 1, 0], [0, 1, -1], [1, -2, 3]] / np.linalg.norm([[1, 1, 0], [0, 1, -1], [1, -2, 3]], axis=1)[:, None]]
    rv = np.concatenate([axes * np.pi, axes * (np.pi - 1e-6), axes * 0.3, np.zeros((1, 3))])
    R = Rotation.from_rotvec(rv).as_matrix()
    q = g.matrix_to_quat(R)
    assert q.shape == (len(rv), 4) and np.all(q[:, 0] >= 0)
    assert np.allclose(g.quat_to_matrix(q), R, atol=1e-9)
    assert g.matrix_to_quat(R.reshape(1, -1, 3, 3)).shape == (1, len(rv), 4)
    assert np.allclose(g.matrix_to_quat(np.eye(3)), [1, 0, 0, 0])
    assert np.allclose(g.matrix_to_quat(np.diag([1.0, -1, -1])), [0, 1, 0, 0])


@prop
@given(quats, quats)
def test_multiply_conjugate_inverse(a, b):
    assert np.allclose(g.quat_to_matrix(g.quat_multiply(a, b)), (sp(a) * sp(b)).as_matrix(), atol=1e-9)
    assert np.allclose(g.quat_multiply(a, g.quat_inverse(a)), [1, 0, 0, 0], atol=1e-9)
    assert np.allclose(g.quat_conjugate(a), g.quat_inverse(a), atol=1e-12)  # unit q
    assert np.allclose(g.quat_to_matrix(g.quat_conjugate(a)), sp(a).inv().as_matrix(), atol=1e-9)
    s = 3.0 * b  # non-unit: the multiplicative inverse still works
    assert np.allclose(g.quat_multiply(g.quat_inverse(s), s), [1, 0, 0, 0], atol=1e-9)


def test_quaternion_functions_broadcast():
    rng = np.random.default_rng(1)
    a, b = g.quat_normalize(rng.normal(size=(5, 4))), g.quat_normalize(rng.normal(size=(2, 1, 4)))
    assert g.quat_multiply(a, b).shape == (2, 5, 4)
    assert np.allclose(g.quat_multiply(a, b)[1, 3], g.quat_multiply(a[3], b[1, 0]))
    assert g.quat_to_matrix(b).shape == (2, 1, 3, 3)
    v = rng.normal(size=(7, 1, 3))
    assert g.quat_rotate(a, v).shape == (7, 5, 3)
    assert np.allclose(g.quat_rotate(a, v)[2, 4], sp(a[4]).apply(v[2, 0]))
    assert g.quat_log(b).shape == (2, 1, 3) and g.quat_exp(v).shape == (7, 1, 4)
    assert g.rotation_error_deg(a, b).shape == (2, 5) and g.position_error(v, np.zeros(3)).shape == (7, 1)
    assert g.slerp(a[0], a[1], np.linspace(0, 1, 6)).shape == (6, 4)


@prop
@given(quats, vecs)
def test_rotate_matches_scipy(q, v):
    assert np.allclose(g.quat_rotate(q, v), sp(q).apply(v), atol=1e-8)
    qv = np.r_[0.0, v]  # the sandwich product q v q*
    assert np.allclose(g.quat_multiply(g.quat_multiply(q, qv), g.quat_conjugate(q))[1:], g.quat_rotate(q, v), atol=1e-8)


@prop
@given(small_vecs)
def test_rotvec_and_log_exp(r):
    q = g.rotvec_to_quat(r)
    assert np.allclose(g.quat_to_matrix(q), Rotation.from_rotvec(r).as_matrix(), atol=1e-9)
    assert np.allclose(q, ours(Rotation.from_rotvec(r)), atol=1e-9)
    assert np.allclose(g.quat_log(q), r / 2, atol=1e-9)  # MapNet's log map is half the rotation vector
    assert np.allclose(g.quat_to_rotvec(q), r, atol=1e-9)
    assert np.allclose(g.quat_exp(g.quat_log(q)), q, atol=1e-9)


@prop
@given(quats.filter(lambda q: q[0] > 1e-3))
def test_quat_to_rotvec_matches_scipy(q):
    assert np.allclose(g.quat_to_rotvec(q), sp(q).as_rotvec(), atol=1e-8)
    assert np.allclose(g.quat_to_rotvec(-q), sp(q).as_rotvec(), atol=1e-8)  # sign-free
    assert np.allclose(g.rotvec_to_quat(g.quat_to_rotvec(q)), q, atol=1e-9)


def test_log_exp_at_identity():
    assert np.array_equal(g.quat_log([1.0, 0, 0, 0]), np.zeros(3))
    assert np.array_equal(g.quat_log([-1.0, 0, 0, 0]), np.zeros(3))
    assert np.array_equal(g.quat_exp(np.zeros(3)), [1.0, 0, 0, 0])
    assert np.allclose(g.quat_log([1.0, 1e-9, 0, 0]), [1e-9, 0, 0], rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------- errors and slerp
@prop
@given(quats, quats)
def test_rotation_error_matches_scipy_and_ignores_sign(a, b):
    expect = np.degrees((sp(a).inv() * sp(b)).magnitude())
    assert np.isclose(g.rotation_error_deg(a, b), expect, atol=1e-5)
    assert np.isclose(g.rotation_error_deg(a, -b), expect, atol=1e-5)
    assert np.isclose(g.rotation_error_deg(-a, b), expect, atol=1e-5)
    assert np.isclose(g.rotation_error_deg(b, a), expect, atol=1e-5)
    assert g.rotation_error_deg(a, a) < 1e-5 and 0 <= expect <= 180 + 1e-9


@prop
@given(quats, quats, st.floats(0, 1))
def test_slerp_matches_scipy(a, b, t):
    ref = Slerp([0, 1], Rotation.concatenate([sp(a), sp(b)]))([t])[0]
    q = g.slerp(a, b, t)
    assert g.rotation_error_deg(q, ours(ref)) < 1e-4
    # shortest path: the angle travelled is t times the angle between the ends, whatever the signs
    total = g.rotation_error_deg(a, b)
    assert np.isclose(g.rotation_error_deg(a, q), t * total, atol=1e-4)
    assert np.allclose(g.slerp(a, -b, t), q, atol=1e-9)


def test_slerp_ends_and_equal_inputs():
    a, b = g.camera_rotation(0.1, 0.2, 0.3), g.camera_rotation(2.0, -0.4, 0.1)
    assert np.allclose(g.slerp(a, b, 0.0), a) and np.allclose(g.slerp(a, b, 1.0), b)
    assert np.allclose(g.slerp(a, a, [0.0, 0.3, 1.0]), [a, a, a])
    assert np.isclose(g.rotation_error_deg(g.slerp(a, b, 0.5), a), g.rotation_error_deg(a, b) / 2)


def test_errors():
    assert np.isclose(g.position_error([0, 0, 0], [3, 4, 0]), 5)
    assert np.allclose(g.position_error([[0, 0, 0], [1, 1, 1]], [1, 2, 3]), [np.sqrt(14), np.sqrt(5)])
    assert np.isclose(g.rotation_error_deg(g.camera_rotation(0.0), g.camera_rotation(np.radians(30))), 30)
    assert np.isclose(g.rotation_error_deg([1, 0, 0, 0], [0, 0, 0, 1]), 180)


# ---------------------------------------------------------------------------- poses
@prop
@given(vecs, quats, vecs, quats)
def test_pose_algebra_round_trips(x1, q1, x2, q2):
    t, qr = g.relative_pose(x1, q1, x2, q2)
    xb, qb = g.apply_relative_pose(x1, q1, t, qr)
    assert np.allclose(xb, x2, atol=1e-7) and g.rotation_error_deg(qb, q2) < 1e-5
    assert np.allclose(t, g.quat_to_matrix(q1).T @ (x2 - x1), atol=1e-7)
    assert np.allclose(g.quat_to_matrix(qr), g.quat_to_matrix(q1).T @ g.quat_to_matrix(q2), atol=1e-9)
    xc, qc = g.compose_poses(x1, q1, x2, q2)
    assert np.allclose(g.pose_to_matrix(xc, qc), g.pose_to_matrix(x1, q1) @ g.pose_to_matrix(x2, q2), atol=1e-7)
    xi, qi = g.invert_pose(xc, qc)
    assert np.allclose(g.pose_to_matrix(xi, qi), np.linalg.inv(g.pose_to_matrix(xc, qc)), atol=1e-6)
    xe, qe = g.compose_poses(x1, q1, *g.invert_pose(x1, q1))  # T T^-1 = identity
    assert np.allclose(xe, 0, atol=1e-7) and g.rotation_error_deg(qe, [1, 0, 0, 0]) < 1e-5
    xm, qm = g.matrix_to_pose(g.pose_to_matrix(x1, q1))
    assert np.allclose(xm, x1) and g.rotation_error_deg(qm, q1) < 1e-5


def test_relative_pose_is_in_camera_i_frame_and_batches():
    # camera i at the origin looking east, camera j one metre east of it and turned to look north
    t, q = g.relative_pose(np.zeros(3), g.camera_rotation(0.0), [1.0, 0, 0], g.camera_rotation(np.pi / 2))
    assert np.allclose(t, [0, 0, 1])  # straight ahead: camera z
    assert np.isclose(g.rotation_error_deg(q, [1, 0, 0, 0]), 90)
    assert np.allclose(g.quat_rotate(q, [0, 0, 1]), [-1, 0, 0], atol=1e-12)  # j looks to i's left
    rng = np.random.default_rng(2)
    x, qs = rng.normal(size=(6, 3)), g.camera_rotation(rng.uniform(-3, 3, 6), rng.uniform(-1, 1, 6))
    t, q = g.relative_pose(x[:-1], qs[:-1], x[1:], qs[1:])
    assert t.shape == (5, 3) and q.shape == (5, 4)
    xb, qb = g.apply_relative_pose(x[:-1], qs[:-1], t, q)
    assert np.allclose(xb, x[1:]) and np.all(g.rotation_error_deg(qb, qs[1:]) < 1e-5)
    assert g.pose_to_matrix(x, qs).shape == (6, 4, 4)
    assert [a.shape for a in g.matrix_to_pose(g.pose_to_matrix(x, qs))] == [(6, 3), (6, 4)]


@prop
@given(vecs, quats, vecs)
def test_colmap_world_to_camera_round_trip(x, q, X):
    R_cw, t_cw = g.world_to_camera(x, q)
    assert np.allclose(R_cw @ x + t_cw, 0, atol=1e-7)  # the centre maps to the camera origin
    assert np.allclose(R_cw @ X + t_cw, g.quat_rotate(g.quat_conjugate(q), X - x), atol=1e-7)
    xb, qb = g.camera_to_world_from_cw(R_cw, t_cw)
    assert np.allclose(xb, x, atol=1e-7) and g.rotation_error_deg(qb, q) < 1e-5


def test_world_to_camera_sees_points_ahead():
    R_cw, t_cw = g.world_to_camera([2.0, 3.0, 1.6], g.camera_rotation(np.pi / 2))  # looking north
    X_cam = R_cw @ np.array([2.0, 8.0, 1.6]) + t_cw  # 5 m to the north
    assert np.allclose(X_cam, [0, 0, 5])
    X_cam = R_cw @ np.array([3.0, 8.0, 2.6]) + t_cw  # 1 m east (right), 1 m up (negative y)
    assert np.allclose(X_cam, [1, -1, 5])


# ---------------------------------------------------------------------------- cameras on the plan
@prop
@given(st.floats(-3.1, 3.1), st.floats(-1.4, 1.4), st.floats(-3.1, 3.1))
def test_camera_rotation_round_trip(yaw, pitch, roll):
    q = g.camera_rotation(yaw, pitch, roll)
    y, p, r = g.camera_yaw_pitch_roll(q)
    assert np.isclose(np.cos(y - yaw), 1, atol=1e-9) and np.isclose(p, pitch) and np.isclose(np.cos(r - roll), 1, atol=1e-9)
    # the documented composition: R = Rz_world(yaw) R(pitch) at the base, then Rz_cam(-roll)
    R = g.quat_to_matrix(q)
    fwd = [np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)]
    assert np.allclose(R[:, 2], fwd) and np.isclose(np.linalg.det(R), 1)
    R0 = g.quat_to_matrix(g.camera_rotation(yaw, pitch))
    assert np.allclose(R, R0 @ Rotation.from_rotvec([0, 0, -roll]).as_matrix(), atol=1e-9)


def test_camera_rotation_axes():
    # columns are the camera axes (right, down, forward) in the world
    assert np.allclose(g.quat_to_matrix(g.camera_rotation(0.0)), [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    assert np.allclose(g.quat_to_matrix(g.camera_rotation(np.pi / 2)), [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    fwd = g.quat_to_matrix(g.camera_rotation(0.0, np.radians(30)))[:, 2]
    assert np.allclose(fwd, [np.cos(np.radians(30)), 0, 0.5])  # positive pitch looks up
    R = g.quat_to_matrix(g.camera_rotation(0.0, 0.0, np.radians(90)))
    assert np.allclose(R[:, 0], [0, 0, 1], atol=1e-12)  # positive roll raises the right side ...
    assert np.allclose(R[:, 1], [0, -1, 0], atol=1e-12)  # ... so image "down" points right (the scene turns clockwise)
    assert np.allclose(R[:, 2], [1, 0, 0], atol=1e-12)


def test_camera_rotation_vectorised():
    yaw, pitch, roll = np.linspace(-3, 3, 5), np.linspace(-1, 1, 5)[:, None], 0.1
    q = g.camera_rotation(yaw, pitch, roll)
    assert q.shape == (5, 5, 4) and g.camera_rotation(np.zeros(5)).shape == (5, 4)
    assert np.allclose(q[3, 1], g.camera_rotation(yaw[1], pitch[3, 0], roll))
    y, p, r = g.camera_yaw_pitch_roll(q)
    assert np.allclose(y, np.broadcast_to(yaw, (5, 5))) and np.allclose(p, np.broadcast_to(pitch, (5, 5))) and np.allclose(r, 0.1)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [[0, 0, 0, 0], [1, 0, 0], [np.nan, 0, 0, 1], [np.inf, 0, 0, 1], 1.0, [[1, 0], [0, 1]]])
def test_bad_quaternions(bad):
    with pytest.raises(ValueError):
        g.quat_normalize(bad)


def test_check_unit_quaternion():
    with pytest.raises(ValueError, match=r"not a unit quaternion \(norm 1\.1"):
        g.check_unit_quaternion([1.0, 0.5, 0, 0])
    with pytest.raises(ValueError, match="not a unit quaternion"):
        g.check_unit_quaternion([[1.0, 0, 0, 0], [0.9, 0, 0, 0]])  # any element of a batch
    assert np.allclose(g.check_unit_quaternion([-1.0, 0, 0, 0]), [1, 0, 0, 0])
    assert np.allclose(g.check_unit_quaternion([1.0005, 0, 0, 0]), [1, 0, 0, 0])  # within tol = 1e-3


def test_functions_requiring_unit_quaternions_reject_others():
    q, x = [2.0, 0, 0, 0], np.zeros(3)
    calls = [lambda: g.quat_rotate(q, x), lambda: g.compose_poses(x, q, x, [1, 0, 0, 0]),
             lambda: g.compose_poses(x, [1, 0, 0, 0], x, q), lambda: g.invert_pose(x, q),
             lambda: g.relative_pose(x, q, x, [1, 0, 0, 0]), lambda: g.relative_pose(x, [1, 0, 0, 0], x, q),
             lambda: g.apply_relative_pose(x, q, x, [1, 0, 0, 0]), lambda: g.pose_to_matrix(x, q),
             lambda: g.world_to_camera(x, q), lambda: g.camera_yaw_pitch_roll(q)]
    for call in calls:
        with pytest.raises(ValueError, match="not a unit quaternion"):
            call()


def test_zero_quaternions_and_non_finite_values_are_rejected():
    zero, nan3 = np.zeros(4), [0.0, np.nan, 0.0]
    for call in [lambda: g.quat_inverse(zero), lambda: g.quat_to_matrix(zero), lambda: g.quat_log(zero),
                 lambda: g.rotation_error_deg(zero, [1, 0, 0, 0]), lambda: g.slerp(zero, [1, 0, 0, 0], 0.5)]:
        with pytest.raises(ValueError, match="zero quaternion"):
            call()
    for call in [lambda: g.quat_rotate([1, 0, 0, 0], nan3), lambda: g.quat_exp(nan3), lambda: g.rotvec_to_quat(nan3),
                 lambda: g.position_error(nan3, np.zeros(3)), lambda: g.compose_poses(nan3, [1, 0, 0, 0], np.zeros(3), [1, 0, 0, 0]),
                 lambda: g.camera_rotation(np.nan), lambda: g.camera_rotation(0.0, np.inf),
                 lambda: g.slerp([1, 0, 0, 0], [0, 1, 0, 0], np.nan), lambda: g.matrix_to_quat(np.full((3, 3), np.nan)),
                 lambda: g.matrix_to_pose(np.full((4, 4), np.nan))]:
        with pytest.raises(ValueError, match="NaN"):
            call()


def test_bad_shapes_are_rejected():
    for call in [lambda: g.quat_multiply([1, 0, 0], [1, 0, 0, 0]), lambda: g.quat_rotate([1, 0, 0, 0], [1, 2]),
                 lambda: g.quat_exp([1.0, 2.0]), lambda: g.position_error([1, 2], [1, 2]),
                 lambda: g.compose_poses([0, 0], [1, 0, 0, 0], [0, 0, 0], [1, 0, 0, 0]),
                 lambda: g.matrix_to_quat(np.eye(4)), lambda: g.matrix_to_quat(np.ones(3)),
                 lambda: g.matrix_to_pose(np.eye(3)), lambda: g.camera_to_world_from_cw(np.eye(3), [0, 0])]:
        with pytest.raises(ValueError, match="shape"):
            call()


def test_matrix_to_quat_rejects_non_rotations():
    with pytest.raises(ValueError, match="not a rotation"):
        g.matrix_to_quat(np.diag([1.0, 1.0, -1.0]))  # a reflection
    with pytest.raises(ValueError, match="not a rotation"):
        g.matrix_to_quat(2 * np.eye(3))
    with pytest.raises(ValueError, match="not a rotation"):
        g.camera_to_world_from_cw(np.diag([1.0, 1.0, 1.01]), np.zeros(3))
    with pytest.raises(ValueError, match="last row"):
        g.matrix_to_pose(np.diag([1.0, 1.0, 1.0, 2.0]))
    assert np.allclose(g.matrix_to_quat(np.eye(3) + 1e-6), [1, 0, 0, 0], atol=1e-5)  # within tolerance


# ---------------------------------------------------------------------------- torch
def test_import_does_not_import_torch():
    code = "import sys, campose.geometry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_matches_numpy():
    import torch

    rng = np.random.default_rng(0)
    a = g.quat_normalize(rng.normal(size=(16, 4)))
    b = g.quat_normalize(rng.normal(size=(16, 4)))
    ta, tb = torch.tensor(a), torch.tensor(b)
    raw = rng.normal(size=(16, 4))
    assert np.allclose(g.torch_quat_normalize(torch.tensor(raw)).numpy(), g.quat_normalize(raw), atol=1e-12)
    assert np.allclose(g.torch_quat_multiply(ta, tb).numpy(), g.quat_multiply(a, b), atol=1e-9)
    assert np.allclose(g.torch_quat_conjugate(ta).numpy(), g.quat_conjugate(a))
    assert np.allclose(g.torch_quat_log(ta).numpy(), g.quat_log(a), atol=1e-9)
    assert np.allclose(g.torch_quat_log(torch.tensor(raw)).numpy(), g.quat_log(raw), atol=1e-9)
    assert np.allclose(g.torch_quat_exp(torch.tensor(g.quat_log(a))).numpy(), a, atol=1e-9)
    u = rng.normal(size=(16, 3))
    assert np.allclose(g.torch_quat_exp(torch.tensor(u)).numpy(), g.quat_exp(u), atol=1e-9)
    v = rng.normal(size=(16, 3))
    assert np.allclose(g.torch_quat_rotate(ta, torch.tensor(v)).numpy(), g.quat_rotate(a, v), atol=1e-9)
    assert np.allclose(g.torch_rotation_error_deg(ta, tb).numpy(), g.rotation_error_deg(a, b), atol=1e-6)
    assert np.allclose(g.torch_rotation_error_deg(ta, -ta).numpy(), 0, atol=1e-6)
    x1, x2 = rng.normal(size=(16, 3)), rng.normal(size=(16, 3))
    t_ref, q_ref = g.relative_pose(x1, a, x2, b)
    t, q = g.torch_relative_pose(torch.tensor(x1), ta, torch.tensor(x2), tb)
    assert np.allclose(t.numpy(), t_ref, atol=1e-9) and np.allclose(g.rotation_error_deg(q.numpy(), q_ref), 0, atol=1e-5)
    # float32 and broadcasting
    t32 = g.torch_rotation_error_deg(ta.float()[:, None], tb.float()[None])
    assert t32.dtype == torch.float32 and t32.shape == (16, 16)
    assert np.allclose(t32.numpy(), g.rotation_error_deg(a[:, None], b[None]), atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        g.torch_quat_multiply(ta[:, :3], tb)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_gradients_are_finite_at_the_identity(dtype):
    import torch

    dt = getattr(torch, dtype)
    rng = np.random.default_rng(3)
    q = torch.tensor(np.r_[[[1.0, 0, 0, 0], [-1.0, 0, 0, 0]], g.quat_normalize(rng.normal(size=(4, 4)))], dtype=dt)
    q1 = q.clone().requires_grad_(True)
    q2 = q.clone().requires_grad_(True)  # identical orientations: error 0, where acos and |v| are singular
    err = g.torch_rotation_error_deg(q1, q2)
    assert torch.allclose(err, torch.zeros_like(err), atol=0.05 if dtype == "float32" else 1e-6)
    loss = err.sum() + g.torch_quat_log(q1).sum() + g.torch_quat_rotate(q1, torch.ones(3, dtype=dt)).sum()
    loss.backward()
    assert torch.isfinite(q1.grad).all() and torch.isfinite(q2.grad).all()
    u = torch.zeros(2, 3, dtype=dt, requires_grad=True)
    (g.torch_quat_exp(u).sum() + g.torch_quat_log(g.torch_quat_exp(u)).sum()).backward()
    assert torch.isfinite(u.grad).all()
    x = torch.zeros(3, dtype=dt, requires_grad=True)
    t, qr = g.torch_relative_pose(x, q1.detach()[:1], x.detach(), q1.detach()[:1])
    (t.sum() + g.torch_quat_log(qr).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_torch_gradients_match_finite_differences():
    import torch

    rng = np.random.default_rng(4)
    q = torch.tensor(g.quat_normalize(rng.normal(size=(3, 4))), requires_grad=True)
    p = torch.tensor(g.quat_normalize(rng.normal(size=(3, 4))))
    u = torch.tensor(rng.normal(size=(3, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(g.torch_quat_log, (q,))
    assert torch.autograd.gradcheck(g.torch_quat_exp, (u,))
    assert torch.autograd.gradcheck(lambda a: g.torch_rotation_error_deg(a, p), (q,))
    # the log map's derivative at the identity is the identity on the vector part (small-angle branch)
    ident = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64, requires_grad=True)
    J = torch.autograd.functional.jacobian(g.torch_quat_log, ident)
    assert torch.allclose(J[:, 1:], torch.eye(3, dtype=torch.float64)) and torch.allclose(J[:, 0], torch.zeros(3, dtype=torch.float64))
