"""Quaternion and pose algebra against scipy's Rotation, by property tests (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from campose import geometry as g

settings.register_profile("campose", deadline=None, max_examples=60)
settings.load_profile("campose")

quats = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 0.1).map(g.quat_normalize)
vecs = arrays(np.float64, 3, elements=st.floats(-50, 50))
small_vecs = arrays(np.float64, 3, elements=st.floats(-1.5, 1.5))


def sp(q):  # ours (w, x, y, z) -> scipy Rotation (x, y, z, w)
    return Rotation.from_quat(np.r_[q[1:], q[0]])


@given(quats)
def test_matrix_matches_scipy_and_round_trips(q):
    assert np.allclose(g.quat_to_matrix(q), sp(q).as_matrix(), atol=1e-9)
    assert np.allclose(g.matrix_to_quat(g.quat_to_matrix(q)), q, atol=1e-9)
    assert q[0] >= -1e-12 and np.isclose(np.linalg.norm(q), 1)


@given(quats, quats)
def test_multiply_matches_scipy(a, b):
    assert np.allclose(g.quat_to_matrix(g.quat_multiply(a, b)), (sp(a) * sp(b)).as_matrix(), atol=1e-9)
    assert np.allclose(g.quat_multiply(a, g.quat_inverse(a)), [1, 0, 0, 0], atol=1e-9)


@given(quats, vecs)
def test_rotate_matches_scipy(q, v):
    assert np.allclose(g.quat_rotate(q, v), sp(q).apply(v), atol=1e-8)


@given(small_vecs)
def test_rotvec_and_log_exp(r):
    q = g.rotvec_to_quat(r)
    assert np.allclose(g.quat_to_matrix(q), Rotation.from_rotvec(r).as_matrix(), atol=1e-9)
    assert np.allclose(g.quat_log(q), r / 2, atol=1e-9)  # MapNet's log map is half the rotation vector
    assert np.allclose(g.quat_exp(g.quat_log(q)), q, atol=1e-9)


@given(quats, quats)
def test_rotation_error_matches_scipy_and_ignores_sign(a, b):
    expect = np.degrees((sp(a).inv() * sp(b)).magnitude())
    assert np.isclose(g.rotation_error_deg(a, b), expect, atol=1e-5)
    assert np.isclose(g.rotation_error_deg(a, -b), expect, atol=1e-5)
    assert g.rotation_error_deg(a, a) < 1e-5


@given(quats, quats, st.floats(0, 1))
def test_slerp_matches_scipy(a, b, t):
    from scipy.spatial.transform import Slerp

    ref = Slerp([0, 1], Rotation.concatenate([sp(a), sp(b)]))([t])[0]
    assert g.rotation_error_deg(g.slerp(a, b, t), g.quat_normalize(np.r_[ref.as_quat()[3], ref.as_quat()[:3]])) < 1e-4


@given(vecs, quats, vecs, quats)
def test_pose_algebra_round_trips(x1, q1, x2, q2):
    t, qr = g.relative_pose(x1, q1, x2, q2)
    xb, qb = g.apply_relative_pose(x1, q1, t, qr)
    assert np.allclose(xb, x2, atol=1e-7) and g.rotation_error_deg(qb, q2) < 1e-5
    assert np.allclose(t, g.quat_to_matrix(q1).T @ (x2 - x1), atol=1e-7)
    xi, qi = g.invert_pose(*g.compose_poses(x1, q1, x2, q2))
    T = np.linalg.inv(g.pose_to_matrix(x1, q1) @ g.pose_to_matrix(x2, q2))
    assert np.allclose(g.pose_to_matrix(xi, qi), T, atol=1e-6)
    xm, qm = g.matrix_to_pose(g.pose_to_matrix(x1, q1))
    assert np.allclose(xm, x1) and g.rotation_error_deg(qm, q1) < 1e-5


@given(vecs, quats)
def test_colmap_world_to_camera_round_trip(x, q):
    R_cw, t_cw = g.world_to_camera(x, q)
    assert np.allclose(R_cw @ x + t_cw, 0, atol=1e-7)  # the centre maps to the camera origin
    xb, qb = g.camera_to_world_from_cw(R_cw, t_cw)
    assert np.allclose(xb, x, atol=1e-7) and g.rotation_error_deg(qb, q) < 1e-5


@given(st.floats(-3.1, 3.1), st.floats(-1.4, 1.4), st.floats(-1.0, 1.0))
def test_camera_rotation_round_trip(yaw, pitch, roll):
    y, p, r = g.camera_yaw_pitch_roll(g.camera_rotation(yaw, pitch, roll))
    assert np.isclose(np.cos(y - yaw), 1, atol=1e-9) and np.isclose(p, pitch) and np.isclose(r, roll, atol=1e-8)


def test_camera_rotation_axes():
    # columns are the camera axes (right, down, forward) in the world
    assert np.allclose(g.quat_to_matrix(g.camera_rotation(0.0)), [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    assert np.allclose(g.quat_to_matrix(g.camera_rotation(np.pi / 2)), [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    fwd = g.quat_to_matrix(g.camera_rotation(0.0, np.radians(30)))[:, 2]
    assert fwd[2] > 0  # positive pitch looks up
    right = g.quat_to_matrix(g.camera_rotation(0.0, 0.0, 0.2))[:, 0]
    assert right[2] > 0  # positive roll raises the right side
    assert g.camera_rotation(np.zeros(5)).shape == (5, 4)


def test_errors():
    assert np.isclose(g.position_error([0, 0, 0], [3, 4, 0]), 5)
    assert np.isclose(g.rotation_error_deg(g.camera_rotation(0.0), g.camera_rotation(np.radians(30))), 30)


@pytest.mark.parametrize("bad", [[0, 0, 0, 0], [1, 0, 0], [np.nan, 0, 0, 1]])
def test_bad_quaternions(bad):
    with pytest.raises(ValueError):
        g.quat_normalize(bad)


def test_check_unit_quaternion():
    with pytest.raises(ValueError, match="not a unit quaternion"):
        g.check_unit_quaternion([1.0, 0.5, 0, 0])
    assert np.allclose(g.check_unit_quaternion([-1.0, 0, 0, 0]), [1, 0, 0, 0])


def test_matrix_to_quat_rejects_non_rotations():
    with pytest.raises(ValueError, match="not a rotation"):
        g.matrix_to_quat(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="not a rotation"):
        g.matrix_to_quat(2 * np.eye(3))


def test_torch_matches_numpy_and_has_finite_gradients():
    import torch

    rng = np.random.default_rng(0)
    a = g.quat_normalize(rng.normal(size=(16, 4)))
    b = g.quat_normalize(rng.normal(size=(16, 4)))
    ta, tb = torch.tensor(a), torch.tensor(b)
    assert np.allclose(g.torch_quat_multiply(ta, tb).numpy(), g.quat_multiply(a, b), atol=1e-9)
    assert np.allclose(g.torch_quat_log(ta).numpy(), g.quat_log(a), atol=1e-9)
    assert np.allclose(g.torch_quat_exp(torch.tensor(g.quat_log(a))).numpy(), a, atol=1e-9)
    assert np.allclose(g.torch_rotation_error_deg(ta, tb).numpy(), g.rotation_error_deg(a, b), atol=1e-6)
    x1, x2 = rng.normal(size=(16, 3)), rng.normal(size=(16, 3))
    t_ref, q_ref = g.relative_pose(x1, a, x2, b)
    t, q = g.torch_relative_pose(torch.tensor(x1), ta, torch.tensor(x2), tb)
    assert np.allclose(t.numpy(), t_ref, atol=1e-9) and np.allclose(g.rotation_error_deg(q.numpy(), q_ref), 0, atol=1e-5)
    # gradients at the identity (where acos and norms are singular) stay finite
    ident = torch.tensor([[1.0, 0, 0, 0]], requires_grad=True)
    (g.torch_rotation_error_deg(ident, ident.detach()).sum() + g.torch_quat_log(ident).sum()).backward()
    assert torch.isfinite(ident.grad).all()
    u = torch.zeros(1, 3, requires_grad=True)
    g.torch_quat_exp(u).sum().backward()
    assert torch.isfinite(u.grad).all()
