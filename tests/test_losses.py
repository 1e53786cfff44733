"""The loss family against hand computations in numpy (campose.geometry's numpy functions, scipy)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from campose import geometry as g
from campose import losses as L

prop = settings(deadline=None, max_examples=40)
H = L.H_KINDS
quats = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda q: np.linalg.norm(q) > 0.1).map(g.quat_normalize)
logs = arrays(np.float64, 3, elements=st.floats(-3, 3))


def h_np(d, h):
    """The hand computation of h over all elements of a difference d."""
    d = np.asarray(d, float)
    if h == "l1":
        return np.abs(d).mean()
    if h == "smoothl1":
        return np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5).mean()
    m = (d ** 2).mean()
    return m if h == "mse" else np.sqrt(m)


def signed(q_pred, q_true):
    """q_true with the sign of the closer representative, row by row."""
    return np.where(np.sum(q_pred * q_true, -1, keepdims=True) < 0, -q_true, q_true)


def sp(q):
    q = np.asarray(q, float)
    return Rotation.from_quat(np.concatenate([q[..., 1:], q[..., :1]], -1))


def t32(a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x_true = rng.uniform(-5, 5, (6, 3))
    q_true = g.quat_normalize(rng.normal(size=(6, 4)))
    x_pred = x_true + rng.normal(scale=1.5, size=(6, 3))  # both branches of smooth L1
    q_pred = g.quat_normalize(q_true + rng.normal(scale=0.3, size=(6, 4)))
    q_pred[::2] *= -1  # some predictions on the other sign
    return x_pred, q_pred, x_true, q_true


# ---------------------------------------------------------------------------- terms
@pytest.mark.parametrize("h", H)
@pytest.mark.parametrize("alpha", [1.0, 0.25, 40.0])
def test_pose_loss_is_the_hand_computation(batch, h, alpha):
    x_pred, q_pred, x_true, q_true = batch
    want = h_np(x_pred - x_true, h) + alpha * h_np(q_pred - signed(q_pred, q_true), h)
    loss = L.PoseLoss(h, alpha=alpha)
    got = loss(*map(t32, batch))
    assert got.dtype == torch.float32 and got.shape == ()
    assert math.isclose(got.item(), want, rel_tol=1e-5)
    terms = loss.terms(*map(t32, batch))
    assert math.isclose(terms["translation"].item(), h_np(x_pred - x_true, h), rel_tol=1e-5)
    # MeNet: the same terms on relative poses (labels from geometry.relative_pose)
    t_rel, q_rel = g.relative_pose(x_true[:-1], q_true[:-1], x_true[1:], q_true[1:])
    t_hat, q_hat = x_pred[1:] - x_pred[:-1], q_pred[1:]
    want = h_np(t_hat - t_rel, h) + alpha * h_np(q_hat - signed(q_hat, q_rel), h)
    assert math.isclose(L.MeNetLoss(h, alpha=alpha)(t32(t_hat), t32(q_hat), t32(t_rel), t32(q_rel)).item(), want,
                        rel_tol=1e-5)


def test_rmse_is_the_root_of_mse_and_has_a_gradient_at_zero(batch):
    x_pred, _, x_true, _ = map(t32, batch)
    assert torch.isclose(L.regression_loss(x_pred, x_true, "rmse") ** 2, L.regression_loss(x_pred, x_true, "mse"))
    p = x_true.clone().requires_grad_(True)
    for h in H:
        loss = L.regression_loss(p, x_true, h)
        (grad,) = torch.autograd.grad(loss, p)
        assert loss.item() == 0 and torch.isfinite(grad).all(), h


@prop
@given(quats, quats, st.sampled_from(H))
def test_rotation_terms_are_sign_invariant(q_pred, q_true, h):
    a, b = t32(q_pred)[None], t32(q_true)[None]
    ref = L.quaternion_loss(a, b, h)
    for p, t in ((a, -b), (-a, b), (-a, -b)):
        assert torch.isclose(L.quaternion_loss(p, t, h), ref, atol=1e-6)
    u = t32(g.quat_log(q_pred))[None]
    assert torch.isclose(L.log_quaternion_loss(u, b, h), L.log_quaternion_loss(u, -b, h), atol=1e-6)
    x = torch.zeros(1, 3)
    loss = L.PoseLoss(h, alpha=3.0)
    assert torch.isclose(loss(x, a, x, b), loss(x, -a, x, -b), atol=1e-6)


@prop
@given(logs, quats)
def test_closest_log_is_the_nearest_log_of_the_same_rotation(u_pred, q_true):
    c = L.closest_log(torch.tensor(u_pred), torch.tensor(q_true)).numpy()
    assert (sp(g.quat_exp(c)).inv() * sp(q_true)).magnitude() < 1e-7  # exp(c) = +-q_true (scipy)
    n = g.quat_log(q_true)
    n = n / np.linalg.norm(n) if np.linalg.norm(n) > 1e-6 else u_pred / max(np.linalg.norm(u_pred), 1e-6)
    for k in (-2, -1, 1, 2):  # no other representative on the axis line is closer
        assert np.linalg.norm(u_pred - c) <= np.linalg.norm(u_pred - (c + k * np.pi * n)) + 1e-9


def test_south_facing_neighbours_have_a_small_loss():
    # camera yaw -pi/2 (south) has w = 0: canonical labels of neighbouring frames flip sign
    a, b = g.camera_rotation(-np.pi / 2 + 0.01), g.camera_rotation(-np.pi / 2 - 0.01)
    assert np.dot(a, b) < -0.99  # far apart as vectors, 1.15 degrees apart as rotations
    ang = np.radians(g.rotation_error_deg(a, b))
    for h in H:
        assert L.quaternion_loss(t32(a)[None], t32(b)[None], h).item() < ang
        assert L.log_quaternion_loss(t32(g.quat_log(a))[None], t32(b)[None], h).item() < ang
    assert np.abs(g.quat_log(a) - g.quat_log(b)).max() > 1.5  # what a plain log-map difference would see


def test_direction_error_matches_numpy_and_is_safe():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    c = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    got = L.direction_error_deg(torch.tensor(a), torch.tensor(b)).numpy()
    assert np.allclose(got, np.degrees(np.arccos(c)), atol=1e-9)
    assert math.isclose(L.direction_error_deg(t32([1, 0, 0]), t32([-2, 0, 0])).item(), 180.0)
    p = torch.tensor([[0.3, -1.0, 2.0]], requires_grad=True)
    err = L.direction_error_deg(p, 2 * p.detach())  # parallel: 0 degrees, where acos is singular
    err.sum().backward()
    assert err.item() == 0 and torch.isfinite(p.grad).all()
    assert torch.isnan(L.direction_error_deg(t32([[0, 0, 0]]), t32([[1, 0, 0]]))).all()


# ---------------------------------------------------------------------------- weighting
def test_learned_weighting_value_and_gradients(batch):
    x_pred, q_pred, x_true, q_true = map(t32, batch)
    loss = L.PoseLoss("l1", learn_weights=True, s_x=0.5, s_q=-2.0)
    total = loss(x_pred, q_pred, x_true, q_true)
    h_x, h_q = (v.item() for v in loss.terms(x_pred, q_pred, x_true, q_true).values())
    assert math.isclose(total.item(), h_x * math.exp(-0.5) + 0.5 + h_q * math.exp(2.0) - 2.0, rel_tol=1e-5)
    total.backward()
    w = loss.weights
    assert math.isclose(w.s_x.grad.item(), 1 - h_x * math.exp(-0.5), rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(w.s_q.grad.item(), 1 - h_q * math.exp(2.0), rel_tol=1e-4, abs_tol=1e-6)
    assert sorted(n for n, _ in loss.named_parameters()) == ["weights.s_q", "weights.s_x"]
    assert list(L.PoseLoss("l1").parameters()) == []


# ---------------------------------------------------------------------------- MapNet
@pytest.mark.parametrize("h", H)
def test_mapnet_loss_is_the_hand_computation_for_a_pair(h):
    rng = np.random.default_rng(2)
    x_true = rng.uniform(-5, 5, (2, 3))
    q_true = g.camera_rotation([0.3, 1.2], [0.05, -0.1])  # away from the cut at 180 degrees
    x_pred = x_true + rng.normal(scale=0.8, size=(2, 3))
    u_pred = g.quat_log(q_true) + rng.normal(scale=0.1, size=(2, 3))
    alpha, alpha_rel = 2.0, 0.5
    # by hand: predictions -> poses (numpy exp map) -> relative pose of camera 1 in camera 0's frame
    t_p, q_p = g.relative_pose(x_pred[0], g.quat_exp(u_pred[0]), x_pred[1], g.quat_exp(u_pred[1]))
    t_t, q_t = g.relative_pose(x_true[0], q_true[0], x_true[1], q_true[1])
    absolute = h_np(x_pred - x_true, h) + alpha * h_np(u_pred - g.quat_log(q_true), h)
    relative = h_np(t_p - t_t, h) + alpha * h_np(g.quat_log(q_p) - g.quat_log(q_t), h)
    loss = L.MapNetLoss(h, alpha=alpha, alpha_rel=alpha_rel)
    args = t32(x_pred), t32(u_pred), t32(x_true), t32(q_true), torch.tensor([[0, 1]])
    terms = loss.terms(*args)
    assert math.isclose(terms["rel_translation"].item(), h_np(t_p - t_t, h), rel_tol=1e-4)
    assert math.isclose(loss(*args).item(), absolute + alpha_rel * relative, rel_tol=1e-4)


def test_mapnet_pairs_and_learned_weighting():
    rng = np.random.default_rng(3)
    x_true, q_true = t32(rng.normal(size=(6, 3))), t32(g.quat_normalize(rng.normal(size=(6, 4))))
    x_pred = (x_true + 0.1 * torch.randn(6, 3)).requires_grad_(True)
    u_pred = t32(g.quat_log(q_true.numpy()) + 0.05).requires_grad_(True)
    pairs = L.consecutive_pairs([0, 0, 0, 1, 1, 2])
    assert pairs.tolist() == [[0, 1], [1, 2], [3, 4]]
    loss = L.MapNetLoss("smoothl1", learn_weights=True, alpha_rel=0.7)
    total = loss(x_pred, u_pred, x_true, q_true, pairs)
    t = loss.terms(x_pred, u_pred, x_true, q_true, pairs)
    w, r = loss.weights, loss.relative_weights
    want = (w(t["translation"], t["rotation"]) + 0.7 * r(t["rel_translation"], t["rel_rotation"]))
    assert torch.isclose(total, want)
    total.backward()
    for p in (w.s_x, w.s_q, r.s_x, r.s_q, x_pred, u_pred):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # a pair's relative term does not depend on where the pair sits in the world
    shifted = loss.terms(x_pred + 10, u_pred, x_true + 10, q_true, pairs)
    assert torch.isclose(shifted["rel_translation"], t["rel_translation"], atol=1e-5)


# ---------------------------------------------------------------------------- hygiene
@pytest.mark.parametrize("h", H)
def test_nan_and_inf_are_not_hidden(batch, h):
    x_pred, q_pred, x_true, q_true = map(t32, batch)
    for bad in (math.nan, math.inf):
        xb = x_pred.clone()
        xb[2, 1] = bad
        qb = q_pred.clone()
        qb[1, 0] = bad
        assert not torch.isfinite(L.PoseLoss(h)(xb, q_pred, x_true, q_true))
        assert not torch.isfinite(L.PoseLoss(h, learn_weights=True)(x_pred, qb, x_true, q_true))
        ub = t32(g.quat_log(q_true.numpy()))
        ub[0, 2] = bad
        pairs = torch.tensor([[0, 1]])
        assert not torch.isfinite(L.MapNetLoss(h)(x_pred, ub, x_true, q_true, pairs))
        assert not torch.isfinite(L.MapNetLoss(h)(xb, ub.nan_to_num(0.0), x_true, q_true, pairs))


def test_bad_arguments_raise_clear_errors(batch):
    x_pred, q_pred, x_true, q_true = map(t32, batch)
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        L.PoseLoss("huber")
    with pytest.raises(ValueError, match="alpha must be"):
        L.PoseLoss(alpha=-1)
    with pytest.raises(ValueError, match="not used with learned weighting"):
        L.PoseLoss(alpha=2, learn_weights=True)
    with pytest.raises(ValueError, match="alpha_rel"):
        L.MapNetLoss(alpha_rel=math.nan)
    with pytest.raises(ValueError, match=r"rotation prediction must .*\(\.\.\., 4\)"):
        L.PoseLoss()(x_pred, q_pred[:, :3], x_true, q_true)
    with pytest.raises(ValueError, match="differ in batch shape"):
        L.PoseLoss()(x_pred[:4], q_pred[:4], x_true, q_true[:4])
    with pytest.raises(ValueError, match="empty batch"):
        L.PoseLoss()(x_pred[:0], q_pred[:0], x_true[:0], q_true[:0])
    u = t32(g.quat_log(q_true.numpy()))
    with pytest.raises(ValueError, match=r"pair indices must lie in \[0, 6\)"):
        L.MapNetLoss()(x_pred, u, x_true, q_true, torch.tensor([[0, 6]]))
    with pytest.raises(ValueError, match=r"pairs must be integer indices of shape \(P, 2\)"):
        L.MapNetLoss()(x_pred, u, x_true, q_true, torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown loss kind 'vo'"):
        L.build_loss("vo")
    with pytest.raises(ValueError, match="unknown option.*beta"):
        L.build_loss("posenet", beta=3)


@pytest.mark.parametrize("kind", list(L.LOSSES))
def test_config_round_trip(kind):
    extra = {"alpha_rel": 0.3} if kind == "mapnet" else {}
    loss = L.build_loss(kind, h="rmse", learn_weights=True, s_x=0.2, s_q=-1.0, **extra)
    again = L.build_loss(**loss.config)
    assert type(again) is type(loss) and again.config == loss.config
    again.load_state_dict(loss.state_dict())
