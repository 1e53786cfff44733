"""The pose losses as one family: PoseNet (absolute), MapNet (absolute + relative), MeNet (relative).

A loss term is ``h(P, P^)`` with ``h`` one of (means over batch and components, as torch's losses):

* ``"l1"``: mean |d|;  ``"smoothl1"``: mean of 0.5 d^2 (|d| < 1), |d| - 0.5 (otherwise);
* ``"mse"``: mean d^2;  ``"rmse"``: sqrt(mean d^2) (gradient 0, not NaN, at d = 0).

Weighting: fixed, ``L = h_x + alpha h_q``; or learned (Kendall & Cipolla 2017, :class:`LearnedWeighting`),
``L = h_x exp(-s_x) + s_x + h_q exp(-s_q) + s_q``. Units: translations in metres; quaternions
(w, x, y, z) unit length; log maps ``u = log q`` (:func:`campose.geometry.quat_log`) in radians.

Sign invariance: q and -q are the same rotation, and canonical labels (w >= 0) flip sign between
neighbouring frames of a camera turned by about 180 degrees (w close to 0). Rotation terms therefore
compare the prediction with the representative of the true rotation closest to it (Euclidean):
``+q^`` or ``-q^`` for quaternions (the sign of ``<q, q^>``, :func:`closest_quaternion`), the nearest
of the logs ``(theta + k pi) n`` of ``+-q^`` for log maps (:func:`closest_log`). The choice carries
no gradient. Nothing is clamped: NaN or inf inputs give a NaN or inf loss, for the trainer to see.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from campose.geometry import torch_quat_exp, torch_quat_log, torch_relative_pose

H_KINDS = ("l1", "smoothl1", "mse", "rmse")


# ---------------------------------------------------------------------------- validation
def _check_pair(pred: torch.Tensor, target: torch.Tensor, pred_dim: int, target_dim: int, name: str) -> None:
    for t, d, which in ((pred, pred_dim, "prediction"), (target, target_dim, "target")):
        if not isinstance(t, torch.Tensor) or t.ndim < 1 or t.shape[-1] != d:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} {which} must be a tensor of shape (..., {d}), got {shape}")
    if pred.shape[:-1] != target.shape[:-1]:
        raise ValueError(f"{name}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                         "differ in batch shape")
    if pred.numel() == 0:
        raise ValueError(f"{name}: empty batch")


def _check_h(h: str) -> str:
    if h not in H_KINDS:
        raise ValueError(f"unknown loss {h!r}; choose one of {', '.join(H_KINDS)}")
    return h


# ---------------------------------------------------------------------------- terms
def _safe_sqrt(m: torch.Tensor) -> torch.Tensor:
    zero = m == 0  # NaN and inf are not 0: they pass through sqrt unchanged
    return torch.where(zero, torch.zeros_like(m), torch.sqrt(torch.where(zero, torch.ones_like(m), m)))


def regression_loss(pred: torch.Tensor, target: torch.Tensor, h: str = "l1") -> torch.Tensor:
    """``h(pred, target)`` averaged over all elements (``rmse``: square root of the mean square)."""
    _check_h(h)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.numel() == 0:
        raise ValueError("empty batch")
    d = pred - target
    if h == "l1":
        return d.abs().mean()
    if h == "smoothl1":
        return F.smooth_l1_loss(pred, target, beta=1.0)
    m = (d * d).mean()
    return m if h == "mse" else _safe_sqrt(m)


def closest_quaternion(q_pred: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """``q_true`` or ``-q_true``, whichever is closer to ``q_pred`` (the sign of their dot product;
    + on a tie); (..., 4)."""
    _check_pair(q_pred, q_true, 4, 4, "quaternion")
    s = torch.where((q_pred * q_true).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(q_true.dtype)
    return s.detach() * q_true


def closest_log(u_pred: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """The log map of ``q_true`` closest to ``u_pred`` (..., 3), radians.

    ``exp((theta + k pi) n) = +-q`` for every integer k (``theta n = log q``, w >= 0), so these points
    on the axis line all represent the rotation of ``q_true``; the nearest to ``u_pred`` is taken
    (k = 0 or -1 near the canonical range: the two sides of the cut at a 180-degree rotation). For
    the identity (no axis) the line through ``u_pred`` is used.
    """
    _check_pair(u_pred, q_true, 3, 4, "log quaternion")
    u = torch_quat_log(q_true)
    theta = u.norm(dim=-1, keepdim=True)
    up = u_pred.detach()
    un = up.norm(dim=-1, keepdim=True)
    n = torch.where(theta > 1e-6, u / theta.clamp_min(1e-6), up / un.clamp_min(1e-6))
    k = torch.round(((up * n).sum(-1, keepdim=True) - theta) / math.pi)
    return u + (k * math.pi) * n


def quaternion_loss(q_pred: torch.Tensor, q_true: torch.Tensor, h: str = "l1") -> torch.Tensor:
    """Sign-invariant ``h(q, q^)``: against the closer of ``q_true`` and ``-q_true`` (..., 4)."""
    return regression_loss(q_pred, closest_quaternion(q_pred, q_true), h)


def log_quaternion_loss(u_pred: torch.Tensor, q_true: torch.Tensor, h: str = "l1") -> torch.Tensor:
    """Sign-invariant ``h(u, log q^)`` of a predicted log map (..., 3) against a quaternion label
    (..., 4): against the closest log representative (:func:`closest_log`)."""
    return regression_loss(u_pred, closest_log(u_pred, q_true), h)


def direction_error_deg(t_pred: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor:
    """Angle between translation directions in degrees, in [0, 180] (e.g. MeNet's t_rel, whose
    direction is what a monocular pair determines). ``atan2(|a x b|, a . b)``: accurate at all
    angles, finite gradients also for parallel vectors. NaN where either vector is zero (no
    direction)."""
    _check_pair(t_pred, t_true, 3, 3, "translation")
    c = torch.linalg.cross(t_pred, t_true, dim=-1)
    n2 = (c * c).sum(-1)
    tiny = torch.finfo(n2.dtype).tiny ** 0.5
    n = torch.where(n2 > tiny, torch.sqrt(n2.clamp_min(tiny)), torch.zeros_like(n2))
    ang = torch.rad2deg(torch.atan2(n, (t_pred * t_true).sum(-1)))
    degenerate = (t_pred.abs().amax(-1) == 0) | (t_true.abs().amax(-1) == 0)
    return torch.where(degenerate, torch.full_like(ang, math.nan), ang)


# ---------------------------------------------------------------------------- weighting
class LearnedWeighting(nn.Module):
    """Kendall & Cipolla 2017: ``h_x exp(-s_x) + s_x + h_q exp(-s_q) + s_q`` with learnable
    log-variances ``s_x``, ``s_q`` (initial values as in the paper: 0 and -3)."""

    def __init__(self, s_x: float = 0.0, s_q: float = -3.0):
        super().__init__()
        self.s_x = nn.Parameter(torch.tensor(float(s_x)))
        self.s_q = nn.Parameter(torch.tensor(float(s_q)))

    def forward(self, h_x: torch.Tensor, h_q: torch.Tensor) -> torch.Tensor:
        return h_x * torch.exp(-self.s_x) + self.s_x + h_q * torch.exp(-self.s_q) + self.s_q


class _WeightedLoss(nn.Module):
    """Shared options: ``h``, fixed ``alpha`` or learned weighting with initial ``s_x``, ``s_q``."""

    kind = ""

    def __init__(self, h: str = "l1", alpha: float = 1.0, learn_weights: bool = False, s_x: float = 0.0,
                 s_q: float = -3.0):
        super().__init__()
        self.h = _check_h(h)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if learn_weights and alpha != 1.0:
            raise ValueError("alpha is not used with learned weighting (learn_weights=True): leave it at 1")
        self.alpha, self.learn_weights = float(alpha), bool(learn_weights)
        self._s0 = (float(s_x), float(s_q))
        self.weights = self._weighting()

    def _weighting(self) -> LearnedWeighting | None:
        return LearnedWeighting(*self._s0) if self.learn_weights else None

    def _combine(self, weights: LearnedWeighting | None, h_x: torch.Tensor, h_q: torch.Tensor) -> torch.Tensor:
        return weights(h_x, h_q) if weights is not None else h_x + self.alpha * h_q

    @property
    def config(self) -> dict:
        """Options to rebuild this loss with :func:`build_loss` (learned s values live in the state dict)."""
        return {"kind": self.kind, "h": self.h, "alpha": self.alpha, "learn_weights": self.learn_weights,
                "s_x": self._s0[0], "s_q": self._s0[1]}


class PoseLoss(_WeightedLoss):
    """PoseNet's loss: ``h(x, x^) + alpha h(q, q^)`` (or learned weighting), x (B, 3) metres,
    q (B, 4) unit quaternions, the rotation term sign-invariant. Call ``loss(x, q, x_true, q_true)``;
    ``terms`` gives the parts (``translation``, ``rotation``) for logging."""

    kind = "posenet"

    def terms(self, x_pred, q_pred, x_true, q_true) -> dict[str, torch.Tensor]:
        _check_pair(x_pred, x_true, 3, 3, "translation")
        _check_pair(q_pred, q_true, 4, 4, "rotation")
        return {"translation": regression_loss(x_pred, x_true, self.h),
                "rotation": quaternion_loss(q_pred, q_true, self.h)}

    def forward(self, x_pred, q_pred, x_true, q_true) -> torch.Tensor:
        t = self.terms(x_pred, q_pred, x_true, q_true)
        return self._combine(self.weights, t["translation"], t["rotation"])


class MeNetLoss(PoseLoss):
    """MeNet's loss: ``h(t_rel, t_rel^) + alpha h(q_rel, q_rel^)`` (or learned weighting), t_rel
    (B, 3) metres in camera i's axes, q_rel = q_i^-1 q_j (B, 4) unit, sign-invariant; the same
    terms as :class:`PoseLoss`, on relative poses (:func:`campose.geometry.relative_pose`)."""

    kind = "menet"


def consecutive_pairs(groups) -> torch.Tensor:
    """Pairs (P, 2) of batch indices ``(k, k + 1)`` whose ``groups`` (B,) ids (sequence or window)
    are equal: MapNet's neighbouring frames, for a batch ordered in time within each group."""
    g = torch.as_tensor(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must have shape (B,), got {tuple(g.shape)}")
    k = torch.nonzero(g[1:] == g[:-1]).flatten()
    return torch.stack([k, k + 1], 1)


class MapNetLoss(_WeightedLoss):
    """MapNet's loss: absolute terms on (x, u = log q) plus ``alpha_rel`` times relative terms.

    ``loss(x, u, x_true, q_true, pairs)``: x (B, 3) metres, u (B, 3) the model's log maps, labels
    x_true (B, 3), q_true (B, 4); ``pairs`` (P, 2) batch indices (i, j) of images from the same
    sequence (:func:`consecutive_pairs`). Per pair the relative pose (t_rel = R_i^T (x_j - x_i),
    q_rel = q_i^-1 q_j) is computed from the predictions and from the labels and compared as
    ``h(t_rel, t_rel^) + alpha h(log q_rel, log q_rel^)``. Fixed weighting:
    ``L = h(x) + alpha h(u) + alpha_rel (h(t_rel) + alpha h(log q_rel))``; learned: one
    :class:`LearnedWeighting` for the absolute and one for the relative terms (as MapNet does),
    ``L = W_abs + alpha_rel W_rel``. Log-map terms are sign-invariant (:func:`closest_log`).
    """

    kind = "mapnet"

    def __init__(self, h: str = "l1", alpha: float = 1.0, alpha_rel: float = 1.0, learn_weights: bool = False,
                 s_x: float = 0.0, s_q: float = -3.0):
        super().__init__(h, alpha, learn_weights, s_x, s_q)
        if not (math.isfinite(alpha_rel) and alpha_rel >= 0):
            raise ValueError(f"alpha_rel must be a finite number >= 0, got {alpha_rel}")
        self.alpha_rel = float(alpha_rel)
        self.relative_weights = self._weighting()

    @property
    def config(self) -> dict:
        return {**super().config, "alpha_rel": self.alpha_rel}

    def terms(self, x_pred, u_pred, x_true, q_true, pairs) -> dict[str, torch.Tensor]:
        _check_pair(x_pred, x_true, 3, 3, "translation")
        _check_pair(u_pred, q_true, 3, 4, "rotation")
        if x_pred.ndim != 2 or u_pred.shape[:-1] != x_pred.shape[:-1]:
            raise ValueError(f"MapNet predictions must be x (B, 3) and u (B, 3), got {tuple(x_pred.shape)} "
                             f"and {tuple(u_pred.shape)}")
        pairs = torch.as_tensor(pairs, device=x_pred.device)
        b = x_pred.shape[0]
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0 or pairs.is_floating_point():
            raise ValueError(f"pairs must be integer indices of shape (P, 2) with P >= 1, got {tuple(pairs.shape)} "
                             f"{pairs.dtype}")
        if pairs.min() < 0 or pairs.max() >= b:
            raise ValueError(f"pair indices must lie in [0, {b}) (the batch), "
                             f"got [{int(pairs.min())}, {int(pairs.max())}]")
        i, j = pairs[:, 0], pairs[:, 1]
        q_pred = torch_quat_exp(u_pred)
        t_p, q_p = torch_relative_pose(x_pred[i], q_pred[i], x_pred[j], q_pred[j])
        t_t, q_t = torch_relative_pose(x_true[i], q_true[i], x_true[j], q_true[j])
        return {"translation": regression_loss(x_pred, x_true, self.h),
                "rotation": log_quaternion_loss(u_pred, q_true, self.h),
                "rel_translation": regression_loss(t_p, t_t, self.h),
                "rel_rotation": log_quaternion_loss(torch_quat_log(q_p), q_t, self.h)}

    def forward(self, x_pred, u_pred, x_true, q_true, pairs) -> torch.Tensor:
        t = self.terms(x_pred, u_pred, x_true, q_true, pairs)
        absolute = self._combine(self.weights, t["translation"], t["rotation"])
        return absolute + self.alpha_rel * self._combine(self.relative_weights, t["rel_translation"], t["rel_rotation"])


LOSSES: dict[str, type[_WeightedLoss]] = {"posenet": PoseLoss, "mapnet": MapNetLoss, "menet": MeNetLoss,
                                          "menet_siamese": MeNetLoss, "menet_corr": MeNetLoss}


def build_loss(kind: str, **config) -> _WeightedLoss:
    """The loss for model ``kind`` (``posenet``, ``mapnet``, ``menet``, ``menet_siamese``, ``menet_corr``) with options
    ``h``, ``alpha``, ``learn_weights``, ``s_x``, ``s_q`` (and ``alpha_rel`` for MapNet).
    ``build_loss(**loss.config)`` rebuilds a loss."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss kind {kind!r}; choose one of {', '.join(LOSSES)}")
    cls = LOSSES[kind]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for the {kind} loss; "
                         f"options are {', '.join(allowed)}")
    return cls(**config)
