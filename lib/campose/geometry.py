"""Quaternions and poses: the one pose convention of campose, in numpy (and torch for training).

Conventions:

* quaternions are ``(w, x, y, z)``, unit length, sign chosen with ``w >= 0`` (for ``w = 0``, the
  first non-zero of x, y, z positive) (Hamilton product);
* a pose is camera-to-world: centre ``x`` (metres, world frame) and ``q`` rotating camera axes
  (x right, y down, z forward; OpenCV/COLMAP) into the world (x east, y north, z up);
* rotation error = ``2 acos(|<q1, q2>|)`` in degrees, position error = Euclidean distance in metres.

All numpy functions broadcast over leading dimensions and raise ``ValueError`` on wrong shapes,
NaN/inf or zero quaternions. Functions that interpret ``q`` as a given orientation (``quat_rotate``,
the pose algebra, ``world_to_camera``, ``camera_yaw_pitch_roll``) require unit norm within 1e-3
(:func:`check_unit_quaternion`); the algebraic helpers, conversions and error metrics accept any
non-zero ``q`` and normalise it. The torch functions (imported lazily) do no validation.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------- validation
def _arr(a, last: int, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim == 0 or a.shape[-1] != last:
        raise ValueError(f"{name} must have shape (..., {last}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def check_unit_quaternion(q, tol: float = 1e-3) -> np.ndarray:
    """Return ``q`` normalised (w >= 0) if it is a unit quaternion within ``tol``, else raise."""
    q = _arr(q, 4, "quaternion")
    n = np.linalg.norm(q, axis=-1)
    if np.any(np.abs(n - 1) > tol):
        bad = float(np.ravel(n)[np.argmax(np.ravel(np.abs(n - 1)))])
        raise ValueError(f"orientation is not a unit quaternion (norm {bad:.4g}); quaternions are (w, x, y, z) "
                         "with norm 1")
    return quat_normalize(q)


def quat_normalize(q) -> np.ndarray:
    """Unit quaternion with w >= 0 (the canonical sign)."""
    q = _arr(q, 4, "quaternion")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise ValueError("cannot normalise a zero quaternion")
    q = q / n
    # canonical sign: w > 0; for w = 0 (180-degree turns) the first non-zero of x, y, z is > 0
    lead = q[..., 3:4].copy()
    for i in (2, 1, 0):
        lead = np.where(np.abs(q[..., i:i + 1]) > 1e-12, q[..., i:i + 1], lead)
    q = np.where(lead < 0, -q, q)
    return np.concatenate([np.abs(q[..., :1]), q[..., 1:]], -1)  # w = -1e-300 -> +1e-300


def quat_multiply(q1, q2) -> np.ndarray:
    """Hamilton product q1 * q2 (apply q2 first, then q1)."""
    a = _arr(q1, 4, "q1")
    b = _arr(q2, 4, "q2")
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def quat_conjugate(q) -> np.ndarray:
    """(w, -x, -y, -z); the inverse rotation for unit q."""
    q = _arr(q, 4, "quaternion")
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_inverse(q) -> np.ndarray:
    """Multiplicative inverse conj(q) / |q|^2 (equals the conjugate for unit q)."""
    q = _arr(q, 4, "quaternion")
    n2 = np.sum(q * q, axis=-1, keepdims=True)
    if np.any(n2 < 1e-24):
        raise ValueError("cannot invert a zero quaternion")
    return quat_conjugate(q) / n2


def quat_rotate(q, v) -> np.ndarray:
    """Rotate 3-vectors ``v`` (any frame, any unit) by unit quaternions ``q``: R(q) v."""
    v = _arr(v, 3, "vector")
    return np.einsum("...ij,...j->...i", quat_to_matrix(check_unit_quaternion(q)), v)


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of quaternions (any non-zero norm: normalised first)."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def matrix_to_quat(R, tol: float = 1e-4) -> np.ndarray:
    """Quaternions (w >= 0) of rotation matrices (..., 3, 3) (Shepperd's method).

    Raises ValueError unless R^T R = I within ``tol`` and det R > 0.
    """
    R = np.asarray(R, dtype=float)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("rotation matrix contains NaN or infinite values")
    eye = np.einsum("...ji,...jk->...ik", R, R)
    if np.any(np.abs(eye - np.eye(3)) > tol) or np.any(np.linalg.det(R) <= 0):
        dev = float(np.max(np.abs(eye - np.eye(3)), initial=0.0))
        raise ValueError(f"matrix is not a rotation (max |R^T R - I| = {dev:.3g}, tolerance {tol:g}; "
                         "det must be +1)")
    # Shepperd: pick the largest of 4 candidates for numerical stability
    t = np.trace(R, axis1=-2, axis2=-1)
    d = np.stack([t, R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]], -1)
    k = np.argmax(d, axis=-1)
    q = np.zeros(R.shape[:-2] + (4,))
    r = lambda i, j: R[..., i, j]  # noqa: E731
    cand = [
        np.stack([1 + t, r(2, 1) - r(1, 2), r(0, 2) - r(2, 0), r(1, 0) - r(0, 1)], -1),
        np.stack([r(2, 1) - r(1, 2), 1 + 2 * r(0, 0) - t, r(0, 1) + r(1, 0), r(0, 2) + r(2, 0)], -1),
        np.stack([r(0, 2) - r(2, 0), r(0, 1) + r(1, 0), 1 + 2 * r(1, 1) - t, r(1, 2) + r(2, 1)], -1),
        np.stack([r(1, 0) - r(0, 1), r(0, 2) + r(2, 0), r(1, 2) + r(2, 1), 1 + 2 * r(2, 2) - t], -1),
    ]
    for i in range(4):
        q = np.where((k == i)[..., None], cand[i], q)
    return quat_normalize(q)


def quat_log(q) -> np.ndarray:
    """MapNet's log map (..., 3): log q = (v / |v|) arccos(w) for q = (w, v), after normalising
    q to w >= 0; 0 at the identity. Equals rotvec / 2 (half the rotation vector, radians)."""
    q = quat_normalize(q)
    w, v = q[..., :1], q[..., 1:]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    ang = np.arctan2(n, w)  # = arccos(w), stable near the identity
    scale = np.where(n > 1e-12, ang / np.maximum(n, 1e-12), 1.0)
    return v * scale


def quat_exp(u) -> np.ndarray:
    """Inverse of :func:`quat_log`: exp(u) = (cos|u|, sin|u| u / |u|), returned with w >= 0."""
    u = _arr(u, 3, "log quaternion")
    n = np.linalg.norm(u, axis=-1, keepdims=True)
    s = np.where(n > 1e-12, np.sin(n) / np.maximum(n, 1e-12), 1.0)
    return quat_normalize(np.concatenate([np.cos(n), u * s], -1))


def rotvec_to_quat(r) -> np.ndarray:
    """Rotation vector (axis * angle, radians) -> quaternion."""
    return quat_exp(_arr(r, 3, "rotation vector") / 2)


def quat_to_rotvec(q) -> np.ndarray:
    """Quaternion -> rotation vector (axis * angle, radians, angle in [0, pi])."""
    return 2 * quat_log(q)


def slerp(q0, q1, t) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; t in [0, 1] broadcasts."""
    q0, q1 = quat_normalize(q0), quat_normalize(q1)
    t = np.asarray(t, float)
    if not np.all(np.isfinite(t)):
        raise ValueError("slerp parameter t contains NaN or infinite values")
    t = t[..., None]
    d = np.sum(q0 * q1, -1, keepdims=True)
    q1 = np.where(d < 0, -q1, q1)
    d = np.abs(d)
    th = np.arccos(np.clip(d, -1, 1))
    s = np.sin(th)
    small = s < 1e-8
    a = np.where(small, 1 - t, np.sin((1 - t) * th) / np.where(small, 1, s))
    b = np.where(small, t, np.sin(t * th) / np.where(small, 1, s))
    return quat_normalize(a * q0 + b * q1)


# ---------------------------------------------------------------------------- cameras on a plan
def camera_rotation(yaw, pitch=0.0, roll=0.0) -> np.ndarray:
    """Camera-to-world quaternion of an upright camera on the plan.

    ``yaw``: heading of the optical axis, radians counter-clockwise from east (+x), so pi/2 looks
    north; ``pitch``: radians, positive looks up; ``roll``: radians about the optical axis,
    positive raises the camera's right side, so that the viewer of the image sees the scene turned
    clockwise (this is a rotation by -roll about camera z in the right-hand sense:
    R = R(yaw, pitch) Rz(-roll)). At zero pitch and roll: forward = (cos yaw, sin yaw, 0),
    right = (sin yaw, -cos yaw, 0), down = (0, 0, -1). Arrays broadcast; returns (..., 4).
    """
    yaw, pitch, roll = np.broadcast_arrays(np.asarray(yaw, float), np.asarray(pitch, float), np.asarray(roll, float))
    if not (np.all(np.isfinite(yaw)) and np.all(np.isfinite(pitch)) and np.all(np.isfinite(roll))):
        raise ValueError("camera angles (yaw, pitch, roll) contain NaN or infinite values")
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    fwd = np.stack([cy * cp, sy * cp, sp], -1)
    right0 = np.stack([sy, -cy, np.zeros_like(yaw)], -1)
    down0 = np.cross(fwd, right0)
    cr, sr = np.cos(roll)[..., None], np.sin(roll)[..., None]
    right = cr * right0 - sr * down0
    down = sr * right0 + cr * down0
    return matrix_to_quat(np.stack([right, down, fwd], -1))


def camera_yaw_pitch_roll(q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`camera_rotation`: (yaw in (-pi, pi], pitch in [-pi/2, pi/2], roll in (-pi, pi]),
    radians. Yaw and roll are ill-defined at pitch = +-pi/2 (looking straight up or down)."""
    R = quat_to_matrix(check_unit_quaternion(q))
    fwd, right = R[..., :, 2], R[..., :, 0]
    yaw = np.arctan2(fwd[..., 1], fwd[..., 0])
    pitch = np.arcsin(np.clip(fwd[..., 2], -1, 1))
    right0 = np.stack([np.sin(yaw), -np.cos(yaw), np.zeros_like(yaw)], -1)
    down0 = np.cross(fwd, right0)
    roll = np.arctan2(-np.sum(right * down0, -1), np.sum(right * right0, -1))
    return yaw, pitch, roll


# ---------------------------------------------------------------------------- poses
def compose_poses(x1, q1, x2, q2):
    """T1 * T2 of poses (x metres, unit q): x = x1 + R1 x2, q = q1 q2 (x2, q2 in the frame of T1)."""
    q1, q2 = check_unit_quaternion(q1), check_unit_quaternion(q2)
    return _arr(x1, 3, "x1") + quat_rotate(q1, x2), quat_normalize(quat_multiply(q1, q2))


def invert_pose(x, q):
    """Inverse of a pose (x metres, unit q): (-R^T x, q^-1), e.g. camera-to-world -> world-to-camera."""
    qi = quat_conjugate(check_unit_quaternion(q))
    return -quat_rotate(qi, x), quat_normalize(qi)


def relative_pose(x_i, q_i, x_j, q_j):
    """Pose of camera j in the frame of camera i: t = R_i^T (x_j - x_i) (metres, camera-i axes),
    q = q_i^-1 q_j. Inputs are camera-to-world poses with unit q."""
    qi_inv = quat_conjugate(check_unit_quaternion(q_i))
    t = quat_rotate(qi_inv, _arr(x_j, 3, "x_j") - _arr(x_i, 3, "x_i"))
    return t, quat_normalize(quat_multiply(qi_inv, check_unit_quaternion(q_j)))


def apply_relative_pose(x_i, q_i, t_rel, q_rel):
    """Inverse of :func:`relative_pose`: camera j's world pose x_j = x_i + R_i t_rel, q_j = q_i q_rel."""
    return compose_poses(x_i, q_i, t_rel, q_rel)


def pose_to_matrix(x, q) -> np.ndarray:
    """4x4 homogeneous camera-to-world matrices [[R, x], [0, 1]] (x metres, unit q)."""
    x = _arr(x, 3, "position")
    R = quat_to_matrix(check_unit_quaternion(q))
    T = np.zeros(np.broadcast_shapes(x.shape[:-1], R.shape[:-2]) + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = x
    T[..., 3, 3] = 1
    return T


def matrix_to_pose(T):
    """(x metres, unit q) of 4x4 camera-to-world matrices; the last row must be (0, 0, 0, 1)."""
    T = np.asarray(T, float)
    if T.ndim < 2 or T.shape[-2:] != (4, 4):
        raise ValueError(f"pose matrices must have shape (..., 4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError("pose matrix contains NaN or infinite values")
    if np.any(np.abs(T[..., 3, :] - [0, 0, 0, 1]) > 1e-6):
        raise ValueError("pose matrix last row must be (0, 0, 0, 1)")
    return T[..., :3, 3].copy(), matrix_to_quat(T[..., :3, :3])


def world_to_camera(x, q):
    """COLMAP's cam_from_world (R_cw (..., 3, 3), t_cw (..., 3) metres), X_cam = R_cw X_world + t_cw,
    from our camera-to-world pose (centre x, unit q): R_cw = R^T, t_cw = -R^T x."""
    R = quat_to_matrix(check_unit_quaternion(q))
    Rcw = np.swapaxes(R, -1, -2)
    return Rcw, -np.einsum("...ij,...j->...i", Rcw, _arr(x, 3, "position"))


def camera_to_world_from_cw(R_cw, t_cw):
    """Our pose (centre x = -R_cw^T t_cw metres, camera-to-world q) from COLMAP's cam_from_world."""
    R_cw = np.asarray(R_cw, float)
    q = matrix_to_quat(np.swapaxes(R_cw, -1, -2))  # validates R_cw
    Rwc = np.swapaxes(R_cw, -1, -2)
    return -np.einsum("...ij,...j->...i", Rwc, _arr(t_cw, 3, "translation")), q


# ---------------------------------------------------------------------------- errors
def position_error(x1, x2) -> np.ndarray:
    """Euclidean distance in metres."""
    return np.linalg.norm(_arr(x1, 3, "x1") - _arr(x2, 3, "x2"), axis=-1)


def rotation_error_deg(q1, q2) -> np.ndarray:
    """Angle of the rotation between two orientations, 2 acos(|<q1, q2>|), in degrees in [0, 180].

    Insensitive to the sign of either quaternion; inputs are normalised first."""
    d = np.abs(np.sum(quat_normalize(q1) * quat_normalize(q2), axis=-1))
    return np.degrees(2 * np.arccos(np.clip(d, 0.0, 1.0)))


# ---------------------------------------------------------------------------- torch (training)
def _tcheck(t, last: int, name: str):
    if t.ndim == 0 or t.shape[-1] != last:
        raise ValueError(f"{name} must have shape (..., {last}), got {tuple(t.shape)}")
    return t


def torch_quat_normalize(q, eps: float = 1e-12):
    """Unit quaternions with w >= 0 (torch, differentiable away from q = 0)."""
    import torch

    q = _tcheck(q, 4, "quaternion")
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.where(q[..., :1] < 0, -q, q)


def torch_quat_multiply(a, b):
    """Hamilton product a * b, (w, x, y, z), broadcasting (torch)."""
    import torch

    w1, x1, y1, z1 = _tcheck(a, 4, "q1").unbind(-1)
    w2, x2, y2, z2 = _tcheck(b, 4, "q2").unbind(-1)
    return torch.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def torch_quat_conjugate(q):
    """(w, -x, -y, -z) (torch)."""
    return _tcheck(q, 4, "quaternion") * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def torch_quat_log(q, eps: float = 1e-12):
    """MapNet log map, = rotvec / 2: (v/|v|) atan2(|v|, w) with q normalised to w >= 0 (torch).

    Gradients are finite at the identity (a series branch replaces atan2(|v|, w) / |v| there).
    """
    import torch

    q = torch_quat_normalize(q)
    w, v = q[..., :1], q[..., 1:]
    n2 = (v * v).sum(-1, keepdim=True)
    n = torch.sqrt(n2.clamp_min(eps))
    ang = torch.atan2(n, w)
    small = n2 < 1e-10
    scale = torch.where(small, 1.0 / w.clamp_min(eps), ang / n)
    return v * scale


def torch_quat_exp(u, eps: float = 1e-12):
    """Inverse of :func:`torch_quat_log`: (cos|u|, sin|u| u/|u|), w >= 0; finite gradient at u = 0."""
    import torch

    u = _tcheck(u, 3, "log quaternion")
    n2 = (u * u).sum(-1, keepdim=True)
    n = torch.sqrt(n2.clamp_min(eps))
    small = n2 < 1e-10
    s = torch.where(small, 1.0 - n2 / 6, torch.sin(n) / n)
    return torch_quat_normalize(torch.cat([torch.cos(n), u * s], -1))


def torch_quat_rotate(q, v):
    """Rotate 3-vectors v by q (torch); q is normalised implicitly (q v q* / |q|^2)."""
    import torch

    v = _tcheck(v, 3, "vector")
    qv = torch.cat([torch.zeros_like(v[..., :1]), v], -1)
    out = torch_quat_multiply(torch_quat_multiply(q, qv), torch_quat_conjugate(q))[..., 1:]
    return out / (q * q).sum(-1, keepdim=True)


def torch_rotation_error_deg(q1, q2):
    """Angle between orientations in degrees, 2 atan2(|v_rel|, |w_rel|) of q_rel = q1^-1 q2 (torch).

    Equals 2 acos(|<q1, q2>|) but has finite gradients everywhere, including q1 = q2.
    """
    import torch

    a, b = torch_quat_normalize(q1), torch_quat_normalize(q2)
    rel = torch_quat_multiply(torch_quat_conjugate(a), b)
    n2 = (rel[..., 1:] ** 2).sum(-1)
    tiny = torch.finfo(rel.dtype).tiny ** 0.5
    n = torch.where(n2 > tiny, torch.sqrt(n2.clamp_min(tiny)), torch.zeros_like(n2))
    return torch.rad2deg(2 * torch.atan2(n, rel[..., 0].abs()))


def torch_relative_pose(x_i, q_i, x_j, q_j):
    """(t_rel, q_rel) = (R_i^T (x_j - x_i), q_i^-1 q_j), camera-to-world inputs, batched (torch)."""
    qi_inv = torch_quat_conjugate(torch_quat_normalize(q_i))
    dx = _tcheck(x_j, 3, "x_j") - _tcheck(x_i, 3, "x_i")
    return torch_quat_rotate(qi_inv, dx), torch_quat_normalize(torch_quat_multiply(qi_inv, q_j))
