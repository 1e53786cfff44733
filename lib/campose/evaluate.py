"""Metrics and the standard plots of a trained model on test sequences.

Errors follow :mod:`campose.geometry`: position error = Euclidean distance in metres (world frame),
rotation error = 2 acos(|<q1, q2>|) in degrees (sign-invariant: q and -q are the same rotation).
Per test sequence and per reference (the SfM labels, which are what the nets learn, and the true
poses, which are what a user cares about) :func:`summarize` reports the median and mean errors and
the share of frames within (0.25 m, 2 deg), (0.5 m, 5 deg) and (5 m, 10 deg) (:data:`THRESHOLDS`).
Frames are matched to a reference by image name, so frames SfM did not register (no label) count
against the truth only.

MeNet predicts relative poses: :func:`evaluate_pairs` scores pairs of one sequence by the error of
t_rel (metres, camera i's axes), its direction (degrees; what a monocular pair determines) and the
relative rotation (degrees).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from campose.dataset import PairDataset, PoseDataset
from campose.geometry import position_error, relative_pose, rotation_error_deg

#: (metres, degrees): a frame counts as within a threshold when both errors are at most these.
THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
REFERENCES = ("labels", "truth")


# ---------------------------------------------------------------------------- prediction
@torch.no_grad()
def model_outputs(model, dataset, batch_size: int = 32, device=None,
                  num_threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.forward`` over every item of ``dataset`` (items start with the image tensor: a
    :class:`PoseDataset`, or a stacked :class:`PairDataset` for MeNet), in eval mode without
    gradients, batches of ``batch_size``; the model's train/eval mode is restored. On the CPU with
    :func:`campose.train.cpu_threads` threads. Returns the raw outputs (translation (N, 3) metres,
    rotation (N, 4 or 3)) on the CPU."""
    from campose.train import cpu_thread_limit

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    ts, rs = [], []
    try:
        with cpu_thread_limit(device, num_threads):
            for a in range(0, len(dataset), batch_size):
                img = torch.stack([dataset[k][0] for k in range(a, min(a + batch_size, len(dataset)))])
                t, r = model(img.to(device))
                ts.append(t.cpu())
                rs.append(r.cpu())
    finally:
        model.train(was_training)
    if not ts:
        raise ValueError("nothing to predict: the dataset is empty")
    return torch.cat(ts), torch.cat(rs)


def predict(model, sequences, size, batch_size: int = 32, device=None,
            num_threads: int | None = None, image_cache=None) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world poses of every frame of ``sequences`` (a list, or a name -> Sequence dict),
    in order: ``(x (N, 3) metres, q (N, 4) unit, w >= 0)``, float64. ``size`` = (width, height)
    the model was trained at. Eval mode, no gradients. PoseNet and MapNet only. ``image_cache``:
    :class:`campose.dataset.ImageCache` (or its folder) for the resized images."""
    if getattr(model, "in_channels", 3) != 3:
        raise ValueError(f"{type(model).__name__} predicts relative poses of image pairs: use predict_pairs")
    seqs = list(sequences.values()) if isinstance(sequences, Mapping) else list(sequences)
    t, r = model_outputs(model, PoseDataset(seqs, size, image_cache=image_cache), batch_size, device, num_threads)
    x, q = model.to_pose(t, r)
    return x.double().numpy(), q.double().numpy()


# ---------------------------------------------------------------------------- absolute errors
def pose_errors(x_pred, q_pred, x_true, q_true) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (position error in metres, rotation error in degrees, sign-invariant). A
    non-finite prediction or a zero quaternion (a diverged model) gets a NaN error, so tables show
    it rather than fail."""
    return _valid_rows(position_error, x_pred, x_true), _valid_rows(rotation_error_deg, q_pred, q_true, True)


def _valid_rows(error, pred, true, nonzero: bool = False) -> np.ndarray:
    """``error(pred, true)`` per row (N, k); NaN where the prediction is not finite (or, with
    ``nonzero``, is the zero vector)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.all(np.isfinite(pred), axis=-1)
    if nonzero:
        ok &= np.abs(np.where(np.isfinite(pred), pred, 0)).max(-1) > 0
    out = np.full(pred.shape[:-1], np.nan)
    out[ok] = error(pred[ok], true[ok])
    return out


def error_stats(position_m, rotation_deg, thresholds=THRESHOLDS) -> dict:
    """Median and mean of each error and the percentage of frames within each (metres, degrees)
    threshold (both errors at most the threshold)."""
    pe, re = np.asarray(position_m, float), np.asarray(rotation_deg, float)
    if pe.shape != re.shape or pe.ndim != 1:
        raise ValueError(f"position and rotation errors must be 1-D of equal length, got {pe.shape}, {re.shape}")
    out = {"frames": len(pe)}
    if not len(pe):
        nan = float("nan")
        return {**out, **{k: nan for k in _stat_columns(thresholds)}}
    out.update({"median position (m)": float(np.median(pe)), "mean position (m)": float(np.mean(pe)),
                "median rotation (deg)": float(np.median(re)), "mean rotation (deg)": float(np.mean(re))})
    for m, d in thresholds:
        out[_within(m, d)] = 100.0 * float(np.mean((pe <= m) & (re <= d)))
    return out


def _within(m: float, d: float) -> str:
    return f"within {m:g} m, {d:g} deg (%)"


def _stat_columns(thresholds) -> list[str]:
    return ["median position (m)", "mean position (m)", "median rotation (deg)", "mean rotation (deg)",
            *(_within(m, d) for m, d in thresholds)]


def frame_errors(predictions: Mapping, references: Mapping):
    """Per-frame errors as a DataFrame. ``predictions``: sequence name -> (image names, x (N, 3),
    q (N, 4)); ``references``: reference name (e.g. ``labels``, ``truth``) -> {sequence name ->
    Sequence}. A frame is scored against a reference where that reference has a pose for its image.
    Columns: reference, sequence, image, frame (index in the predictions), x, y, z (predicted),
    x_ref, y_ref, z_ref, position_m, rotation_deg."""
    import pandas as pd

    parts = []
    for ref_name, ref in references.items():
        for seq_name, (images, x, q) in predictions.items():
            if seq_name not in ref:
                continue
            r = ref[seq_name]
            where = {img: i for i, img in enumerate(r.images)}
            k = np.array([i for i, img in enumerate(images) if img in where], dtype=int)
            j = np.array([where[images[i]] for i in k], dtype=int)
            if not len(k):
                continue
            x, q = np.asarray(x, float), np.asarray(q, float)
            pe, re = pose_errors(x[k], q[k], r.x[j], r.q[j])
            parts.append(pd.DataFrame({"reference": ref_name, "sequence": seq_name, "image": [images[i] for i in k],
                                       "frame": k, "x": x[k, 0], "y": x[k, 1], "z": x[k, 2], "x_ref": r.x[j, 0],
                                       "y_ref": r.x[j, 1], "z_ref": r.x[j, 2], "position_m": pe, "rotation_deg": re}))
    if not parts:
        raise ValueError("no predicted frame has a reference pose (image names must match)")
    return pd.concat(parts, ignore_index=True)


def summarize(frames, thresholds=THRESHOLDS, overall: bool = True):
    """One row per (reference, sequence) of :func:`frame_errors`: frames, median and mean position
    (m) and rotation (deg) errors, % within each threshold; with ``overall`` an ``all`` row per
    reference pooling its frames when it has several sequences."""
    import pandas as pd

    rows = []
    for ref, by_ref in frames.groupby("reference", sort=False):
        groups = list(by_ref.groupby("sequence", sort=False))
        if overall and len(groups) > 1:
            groups.append(("all", by_ref))
        for seq, g in groups:
            rows.append({"reference": ref, "sequence": seq,
                         **error_stats(g["position_m"].to_numpy(), g["rotation_deg"].to_numpy(), thresholds)})
    return pd.DataFrame(rows).set_index(["reference", "sequence"])


@dataclass
class Evaluation:
    """:func:`evaluate`'s result: ``predictions`` (sequence -> (x (N, 3), q (N, 4)), every frame of
    the evaluated sequence), ``frames`` (:func:`frame_errors`) and ``table`` (:func:`summarize`)."""

    predictions: dict
    frames: object
    table: object


def evaluate(model, sequences, references: Mapping, size, batch_size: int = 32, device=None,
             thresholds=THRESHOLDS, image_cache=None) -> Evaluation:
    """Predict every frame of ``sequences`` (name -> Sequence: the test walks' images, e.g. the
    rendered truth with all frames) and score them against each reference (name -> {sequence name ->
    Sequence}, e.g. ``{"labels": ..., "truth": ...}``)."""
    seqs = dict(sequences) if isinstance(sequences, Mapping) else {s.name: s for s in sequences}
    preds, named = {}, {}
    for name, s in seqs.items():
        x, q = predict(model, [s], size, batch_size, device, image_cache=image_cache)
        preds[name], named[name] = (x, q), (list(s.images), x, q)
    frames = frame_errors(named, references)
    return Evaluation(preds, frames, summarize(frames, thresholds))



def step_lengths(frames) -> tuple[np.ndarray, np.ndarray]:
    """How far apart consecutive frames of each walk are: ``(reference steps, predicted steps)``,
    metres, one entry per pair of consecutive rows of a sequence in :func:`frame_errors`'s table
    (one reference). A smooth predicted track has predicted steps close to the reference ones."""
    ref, pred = [], []
    for _, g in frames.groupby("sequence", sort=False):
        r, p = g[["x_ref", "y_ref", "z_ref"]].to_numpy(float), g[["x", "y", "z"]].to_numpy(float)
        ref.append(np.linalg.norm(np.diff(r, axis=0), axis=1))
        pred.append(np.linalg.norm(np.diff(p, axis=0), axis=1))
    return (np.concatenate(ref), np.concatenate(pred)) if ref else (np.zeros(0), np.zeros(0))

# ---------------------------------------------------------------------------- relative (MeNet)
def relative_errors(t_pred, q_pred, t_true, q_true) -> dict[str, np.ndarray]:
    """Per pair: ``translation_m`` = |t_rel - t_rel^| (metres), ``direction_deg`` = angle between
    the two t_rel (:func:`campose.losses.direction_error_deg`; NaN where one is zero),
    ``rotation_deg`` = rotation error of q_rel (sign-invariant)."""
    from campose.losses import direction_error_deg

    t_pred, t_true = np.asarray(t_pred, float), np.asarray(t_true, float)
    direction = direction_error_deg(torch.from_numpy(t_pred), torch.from_numpy(t_true)).numpy()
    return {"translation_m": _valid_rows(position_error, t_pred, t_true), "direction_deg": direction,
            "rotation_deg": _valid_rows(rotation_error_deg, q_pred, q_true, True)}


def predict_pairs(model, sequences, size, max_gap: int = 10, seed: int = 0, batch_size: int = 32, device=None,
                  image_cache=None):
    """MeNet's relative poses of pairs drawn from ``sequences`` (:class:`campose.dataset.PairDataset`,
    ``max_gap``, ``seed``, one partner per frame). Returns (the PairDataset, t_rel (P, 3) metres in
    camera i's axes, q_rel (P, 4) unit, w >= 0)."""
    if getattr(model, "in_channels", 3) != 6:
        raise ValueError(f"{type(model).__name__} predicts absolute poses: use predict")
    seqs = list(sequences.values()) if isinstance(sequences, Mapping) else list(sequences)
    pairs = PairDataset(PoseDataset(seqs, size, image_cache=image_cache), max_gap=max_gap, seed=seed, stacked=True)
    t, r = model_outputs(model, pairs, batch_size, device)
    t, q = model.to_pose(t, r)
    return pairs, t.double().numpy(), q.double().numpy()


def evaluate_pairs(model, sequences, references: Mapping, size, max_gap: int = 10, seed: int = 0,
                   batch_size: int = 32, device=None, overall: bool = True, image_cache=None):
    """MeNet on pairs of each test sequence, against each reference's relative poses (pairs where
    the reference has both frames). Returns a DataFrame indexed by (reference, sequence): pairs,
    median t_rel error (m), median direction error (deg), median relative rotation error (deg); with
    ``overall`` an ``all`` row per reference pooling the pairs of all sequences."""
    import pandas as pd

    seqs = dict(sequences) if isinstance(sequences, Mapping) else {s.name: s for s in sequences}
    errors: dict[str, list] = {}
    for name, s in seqs.items():
        pairs, t, q = predict_pairs(model, [s], size, max_gap, seed, batch_size, device, image_cache=image_cache)
        img_i = [s.images[i] for i in pairs.pairs[:, 0]]
        img_j = [s.images[j] for j in pairs.pairs[:, 1]]
        for ref_name, ref in references.items():
            if name not in ref:
                continue
            r = ref[name]
            where = {img: k for k, img in enumerate(r.images)}
            keep = np.array([a in where and b in where for a, b in zip(img_i, img_j)], dtype=bool)
            if not keep.any():
                continue
            i = np.array([where[a] for a, k in zip(img_i, keep) if k])
            j = np.array([where[b] for b, k in zip(img_j, keep) if k])
            t_ref, q_ref = relative_pose(r.x[i], r.q[i], r.x[j], r.q[j])
            errors.setdefault(ref_name, []).append((name, relative_errors(t[keep], q[keep], t_ref, q_ref)))
    if not errors:
        raise ValueError("no predicted pair has reference poses for both frames")
    rows = []
    for ref_name, parts in errors.items():
        if overall and len(parts) > 1:
            parts = parts + [("all", {k: np.concatenate([e[k] for _, e in parts]) for k in parts[0][1]})]
        for name, e in parts:
            rows.append({"reference": ref_name, "sequence": name, "pairs": len(e["translation_m"]),
                         "median translation (m)": float(np.nanmedian(e["translation_m"])),
                         "median direction (deg)": float(np.nanmedian(e["direction_deg"])),
                         "median rotation (deg)": float(np.nanmedian(e["rotation_deg"]))})
    return pd.DataFrame(rows).set_index(["reference", "sequence"])


# ---------------------------------------------------------------------------- plots
def plot_cumulative_errors(errors, ax=None, xlabel: str = "position error (m)", thresholds=(), xmax=None):
    """Cumulative error curves: for each ``errors`` entry (label -> 1-D errors, or one array), the
    percentage of frames with an error at most x. ``thresholds``: x values marked with dotted
    lines (e.g. (0.25, 0.5) metres). Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    series = errors if isinstance(errors, Mapping) else {"": errors}
    top = 0.0
    for label, e in series.items():
        e = np.sort(np.asarray(e, float)[np.isfinite(np.asarray(e, float))])
        if not len(e):
            continue
        share = 100.0 * np.arange(1, len(e) + 1) / len(e)
        ax.step(np.r_[0.0, e], np.r_[0.0, share], where="post", label=f"{label} (median {np.median(e):.3g})"
                if label else None)
        top = max(top, float(e[-1]))
    for v in thresholds:
        ax.axvline(v, color="0.5", ls=":", lw=1)
    ax.set_xlim(0, xmax if xmax is not None else (top or 1.0))
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frames with error <= x (%)")
    ax.grid(alpha=0.3)
    if any(series):
        ax.legend(fontsize=8)
    return ax


def plot_prediction_map(plan, x_true, x_pred, error=None, ax=None, cmap: str = "viridis", vmax=None,
                        label: str = "position error (m)"):
    """Predictions on the floor plan: the true path (line), a thin line from each true position to
    its prediction, and the predictions coloured by ``error`` (default: position error in metres).
    Positions (N, 3) or (N, 2) in metres, world frame. Returns the matplotlib Axes."""
    from matplotlib.collections import LineCollection

    x_true, x_pred = np.asarray(x_true, float), np.asarray(x_pred, float)
    if x_true.shape != x_pred.shape:
        raise ValueError(f"true and predicted positions differ in shape: {x_true.shape} vs {x_pred.shape}")
    error = np.linalg.norm(x_pred - x_true, axis=1) if error is None else np.asarray(error, float)
    x_true, x_pred = x_true[:, :2], x_pred[:, :2]
    ax = plan.plot(ax=ax)
    ax.plot(x_true[:, 0], x_true[:, 1], "-", color="k", lw=1.2, label="true path", zorder=3)
    ax.add_collection(LineCollection(np.stack([x_true, x_pred], 1), colors="0.4", linewidths=0.5, alpha=0.7,
                                     zorder=3))
    sc = ax.scatter(x_pred[:, 0], x_pred[:, 1], c=error, cmap=cmap, vmin=0, vmax=vmax, s=10, zorder=4,
                    label="prediction")
    ax.figure.colorbar(sc, ax=ax, shrink=0.7, label=label)
    ax.legend(loc="upper right", fontsize=8)
    return ax
