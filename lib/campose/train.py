"""Training PoseNet, MapNet and MeNet: one seeded loop with held-out validation and checkpoints.

``train(config, sequences)`` takes the **training** sequences (:class:`campose.dataset.Sequence`:
camera-to-world poses, positions in metres in the world frame, w-first unit quaternions), e.g. the
SfM labels ``pipeline.label_dataset(profile).sequences`` of split ``train``. Test sequences are
refused: they are never used for training or model selection.

* **Validation.** The last ``val_fraction`` of every training sequence, a contiguous block in time
  (:func:`split_validation`), is held out. Random frames would not do: a frame's neighbours, a few
  centimetres away, would be in the training set. Validation picks the best epoch (``select_by``:
  median position error in metres, median rotation error in degrees, or the validation loss) and
  stops the run after ``patience`` epochs without improvement; the best epoch's weights are kept.
  ``select_by="last"`` keeps the last epoch and uses validation only to report (for a fixed budget
  with a decaying learning rate, or where the held-out tails are a poor proxy for the test walks).
* **Learning rate.** AdamW at ``lr``, constant or (``lr_schedule="cosine"``) decayed per epoch
  along a half cosine to zero at ``epochs``.
* **Models.** PoseNet: shuffled frames. MapNet: batches of whole windows of consecutive frames
  (:class:`campose.dataset.WindowBatchSampler`) and the relative terms between neighbours in a window
  (:func:`campose.losses.consecutive_pairs`); unordered views (:mod:`campose.densify`) join its
  batches as absolute-only items. MeNet (``menet``, ``menet_siamese``, ``menet_corr``): pairs of one
  sequence (:class:`campose.dataset.PairDataset`, resampled every epoch; rendered pairs,
  :func:`campose.densify.render_pairs`, join as their own pairs) as one 6-channel stack, the
  input every MeNet variant takes (the siamese and correlation ones split it into its two images); labels are relative
  poses, t_rel in metres in camera i's axes. Translation statistics (:func:`campose.models.translation_stats`)
  come from the training part only.
* **Augmentation** (:class:`ColourJitter`): brightness, contrast, saturation (and optionally hue) only.
  No flips, crops or rotations: they would change the pose an image shows. MeNet's two images get
  the same factors (two frames of one video share the exposure).
* **Reproducibility.** Python's, numpy's and torch's generators are seeded, the batch order is drawn
  from ``seed + epoch``, the jitter from its own generator; on CUDA cuDNN runs deterministically.
* **Device.** CUDA when present, else the CPU with :func:`cpu_threads` threads: on the 2-core machine,
  with another process running, one thread trained resnet18 1.3-2.7x and tiny models up to 7x faster
  than two (``benchmarks/train_speed.py``).
* **Failure.** A non-finite batch loss (status ``"nan"``), or an epoch loss above both
  ``diverge_factor`` times the lowest so far (the untrained model's first batch counting as epoch 0)
  and the untrained model's loss (status ``"diverged"``), stops the run with a :class:`TrainingWarning`; the
  history records it (the NaN loss included) and the best weights so far are kept. Nothing is raised:
  a diverged configuration is a result, and the book's tables show it.
* **Checkpoints** (:func:`save_checkpoint`, :func:`load_checkpoint`): weights, model and loss
  configs, translation statistics, the training config, the history and the split, as tensors and
  plain Python values only, so ``torch.load(..., weights_only=True)`` reads them; written to a
  temporary file and renamed, so a failure never leaves a partial checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from campose.dataset import IMAGENET_MEAN, IMAGENET_STD, PairDataset, PoseDataset, Sequence, WindowBatchSampler
from campose.evaluate import model_outputs, pose_errors, relative_errors
from campose.losses import H_KINDS, build_loss, consecutive_pairs
from campose.models import MODELS, build_model, translation_stats

CHECKPOINT_FORMAT = "campose-checkpoint"
CHECKPOINT_VERSION = 1
#: ``completed`` (all epochs), ``early_stopped`` (patience), ``time_limit`` (``max_minutes``),
#: ``nan`` (a non-finite loss), ``diverged`` (the loss grew ``diverge_factor`` times over the best).
STATUSES = ("completed", "early_stopped", "time_limit", "nan", "diverged")
FAILED = ("nan", "diverged")
SELECT_BY = ("position", "rotation", "val_loss", "last")
LR_SCHEDULES = ("constant", "cosine")


class TrainingWarning(UserWarning):
    """A training run stopped because its loss became non-finite or diverged."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or is not a campose checkpoint; the message names the file."""


# ---------------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint).

    Model: ``kind`` (posenet, mapnet, menet, menet_siamese, menet_corr), ``backbone``, ``hidden`` (head layer
    sizes; None: the model's default), ``dropout``, ``backbone_weights`` (a local state dict file),
    ``bn_momentum`` (BatchNorm running statistics, :class:`campose.models.Backbone`),
    ``bn_recalibration_images`` (:func:`recalibrate_batchnorm` before every validation and at the
    end, on up to that many training items; 0: off).
    Loss (:func:`campose.losses.build_loss`): ``loss`` (l1, smoothl1, mse, rmse), ``alpha``,
    ``learn_weights``, ``alpha_rel`` (MapNet). Optimiser: AdamW with ``lr``, ``weight_decay``
    (not on learned loss weights), ``batch_size`` frames (MapNet: ``batch_size // window`` windows;
    MeNet: pairs). ``image_size`` = (width, height) pixels. Validation: ``val_fraction`` of each
    sequence's end, ``val_gap`` frames dropped between the training and validation parts,
    ``patience`` epochs (None: no early stopping), ``select_by`` (``last``: no selection).
    ``lr_schedule``: ``constant`` or ``cosine``. Budget: ``epochs``, ``max_minutes``
    (None: none). ``seed``; ``device`` (None: CUDA if present, else CPU); ``num_threads`` (CPU; None:
    :func:`cpu_threads`). Augmentation: ``augment`` and the jitter amplitudes. MapNet: ``window``
    frames ``window_step`` apart, windows ``window_stride`` frames apart (default ``window - 1``: every
    neighbouring pair once per epoch). MeNet: partners up to ``max_gap`` frames away,
    ``pairs_per_image``. ``diverge_factor``: an epoch loss this many times the best stops the run.
    """

    kind: str = "posenet"
    backbone: str = "resnet18"
    hidden: tuple[int, ...] | None = None
    dropout: float = 0.5
    backbone_weights: str | None = None
    bn_momentum: float | None = 0.1
    bn_recalibration_images: int = 512
    loss: str = "l1"
    alpha: float = 1.0
    learn_weights: bool = False
    alpha_rel: float = 1.0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 5e-4
    image_size: tuple[int, int] = (128, 96)
    val_fraction: float = 0.1
    val_gap: int = 0
    patience: int | None = 10
    select_by: str = "position"
    lr_schedule: str = "constant"
    max_minutes: float | None = None
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None
    augment: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0
    window: int = 3
    window_step: int = 1
    window_stride: int | None = None
    max_gap: int = 10
    pairs_per_image: int = 1
    diverge_factor: float = 10.0

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise ValueError(f"TrainConfig: {what}")

        need(self.kind in MODELS, f"unknown model kind {self.kind!r}; choose one of {', '.join(MODELS)}")
        need(self.loss in H_KINDS, f"unknown loss {self.loss!r}; choose one of {', '.join(H_KINDS)}")
        need(self.select_by in SELECT_BY, f"select_by must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}")
        need(self.lr_schedule in LR_SCHEDULES,
             f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.hidden is not None:
            self.hidden = tuple(int(h) for h in self.hidden)
        size = tuple(int(v) for v in self.image_size)
        need(len(size) == 2 and min(size) >= 8,
             f"image_size must be (width, height) >= 8 pixels, got {self.image_size}")
        self.image_size = size
        for name in ("epochs", "window", "window_step", "max_gap", "pairs_per_image"):
            need(int(getattr(self, name)) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(int(self.batch_size) >= 2, f"batch_size must be >= 2 (batch normalisation), got {self.batch_size}")
        need(int(self.window) >= 2, f"window must be >= 2 frames, got {self.window}")
        need(self.lr > 0 and self.weight_decay >= 0,
             f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        need(0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}")
        need(int(self.val_gap) >= 0, f"val_gap must be >= 0, got {self.val_gap}")
        need(self.patience is None or int(self.patience) >= 1, f"patience must be >= 1 or None, got {self.patience}")
        need(self.max_minutes is None or self.max_minutes > 0,
             f"max_minutes must be > 0 or None, got {self.max_minutes}")
        need(self.num_threads is None or int(self.num_threads) >= 1,
             f"num_threads must be >= 1, got {self.num_threads}")
        need(self.window_stride is None or int(self.window_stride) >= 1, "window_stride must be >= 1 or None")
        need(all(0 <= v < 1 for v in (self.brightness, self.contrast, self.saturation)) and 0 <= self.hue <= 0.5,
             "jitter amplitudes: brightness, contrast and saturation in [0, 1), hue in [0, 0.5]")
        need(self.diverge_factor > 1, f"diverge_factor must be > 1, got {self.diverge_factor}")

    def to_dict(self) -> dict:
        """Plain Python values (tuples as lists), for checkpoints and JSON."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def loss_options(self) -> dict:
        """Keyword arguments of :func:`campose.losses.build_loss` for this run."""
        opts = {"h": self.loss, "alpha": self.alpha, "learn_weights": self.learn_weights}
        return {**opts, "alpha_rel": self.alpha_rel} if self.kind == "mapnet" else opts


# ---------------------------------------------------------------------------- seeds, device
#: The models that train on unordered views (:mod:`campose.densify`): PoseNet as frames, MapNet as
#: absolute-only items beside its windows. MeNet's pairs need neighbouring frames of a walk.
VIEW_KINDS = ("posenet", "mapnet")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(device: str | None = None) -> torch.device:
    """``device`` as given, or CUDA when present, else the CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads(num_threads: int | None = None) -> int:
    """torch intra-op threads for CPU training: ``num_threads`` if given; 1 on machines with 2 or
    fewer CPUs (measured there: 2 threads trained 1.3-7x slower, the threads waiting on each other
    and on other processes); otherwise torch's own default."""
    if num_threads is not None:
        return int(num_threads)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cpus <= 2 else torch.get_num_threads()


@contextlib.contextmanager
def cpu_thread_limit(device, num_threads: int | None = None):
    """Context: on a CPU ``device``, torch uses :func:`cpu_threads` (``num_threads``) intra-op
    threads; the previous count is restored afterwards. Nothing changes on other devices."""
    old = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(cpu_threads(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _run_settings(device: torch.device, num_threads: int | None):
    """CPU threads and deterministic cuDNN for the duration of a run; restored afterwards."""
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with cpu_thread_limit(device, num_threads):
            yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


# ---------------------------------------------------------------------------- data
def split_validation(sequences, fraction: float, gap: int = 0) -> tuple[list[Sequence], list[Sequence]]:
    """Split every sequence in time: frames [0, a) train, [a + gap, N) validation, where the
    validation tail holds ``round(fraction * N)`` frames (at least 1 when ``fraction > 0``).
    Returns (training parts, validation parts; empty when ``fraction == 0``); both keep the name,
    images and poses of their frames, with ``meta["split"]`` ("train"/"val") and ``meta["frames"]``
    = [first, stop) indices into the original sequence. An unordered set of views
    (``Sequence.ordered`` False, e.g. :mod:`campose.densify`) has no time to split in: it is all
    training."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    train, val = [], []
    for s in sequences:
        n = len(s)
        if not s.ordered:
            train.append(_part(s, 0, n, "train"))
            continue
        n_val = max(1, round(fraction * n)) if fraction > 0 else 0
        a = n - n_val - (int(gap) if n_val else 0)
        if a < 1:
            raise ValueError(f"sequence {s.name} has {n} frames: too few to hold out {n_val} validation "
                             f"frame(s) after a gap of {gap} and keep any for training")
        train.append(_part(s, 0, a, "train"))
        if n_val:
            val.append(_part(s, n - n_val, n, "val"))
    return train, val


def _part(s: Sequence, a: int, b: int, split: str) -> Sequence:
    return Sequence(s.name, s.root, list(s.images[a:b]), s.x[a:b].copy(), s.q[a:b].copy(), s.intrinsics,
                    {**s.meta, "split": split, "frames": [a, b]}, s.image_dir)


class ColourJitter:
    """Photometric augmentation of normalised image tensors (:func:`campose.dataset.image_to_tensor`):
    one image (3, H, W), a batch (B, 3, H, W) or stacks of images (B, 3k, H, W), each image with
    factors of its own, or with ``per_stack`` the same factors for the k images of a stack (MeNet's
    pairs: two frames of one video share the exposure, so only the motion tells them apart):
    brightness, contrast and saturation uniform in [1 - a, 1 + a], hue shift
    uniform in [-hue, hue] (fraction of the colour circle), applied in that order to the [0, 1] image
    as torchvision's ``adjust_*`` functions do. The geometry is untouched, so the pose label stays
    true. Random numbers come from the object's own generator (``seed``), so a run is reproducible.
    The trainer jitters whole batches at once (ten times cheaper than image by image)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.0,
                 seed: int = 0, mean=IMAGENET_MEAN, std=IMAGENET_STD, per_stack: bool = False):
        self.per_stack = bool(per_stack)
        self.amplitudes = torch.tensor([float(brightness), float(contrast), float(saturation)])
        self.hue = float(hue)
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        self.generator = torch.Generator().manual_seed(int(seed))

    def factors(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw the factors of ``n`` images: (n, 3) brightness, contrast, saturation; (n,) hue shifts or None."""
        a = self.amplitudes
        f = 1 - a + 2 * a * torch.rand((n, 3), generator=self.generator)
        h = self.hue * (2 * torch.rand(n, generator=self.generator) - 1) if self.hue > 0 else None
        return f, h

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.functional as TF

        if t.dim() not in (3, 4) or t.shape[-3] % 3:
            raise ValueError(f"ColourJitter takes (3k, H, W) or (B, 3k, H, W) image tensors, got {tuple(t.shape)}")
        dev = t.device
        mean, std = self.mean.to(dev), self.std.to(dev)
        img = (t.reshape(-1, 3, *t.shape[-2:]) * std + mean).clamp(0, 1)
        if self.per_stack:  # one draw per stack, repeated for its k images
            k = t.shape[-3] // 3
            f, h = self.factors(img.shape[0] // k)
            f, h = f.repeat_interleave(k, 0), (h.repeat_interleave(k, 0) if h is not None else None)
        else:
            f, h = self.factors(img.shape[0])
        b, c, s = (f[:, k].view(-1, 1, 1, 1).to(dev) for k in range(3))
        img = (img * b).clamp(0, 1)
        img = (c * img + (1 - c) * TF.rgb_to_grayscale(img).mean(dim=(-3, -2, -1), keepdim=True)).clamp(0, 1)
        img = (s * img + (1 - s) * TF.rgb_to_grayscale(img)).clamp(0, 1)
        if h is not None:
            img = torch.stack([TF.adjust_hue(im, float(v)) for im, v in zip(img, h)])
        return ((img - mean) / std).reshape(t.shape)


def _collate(dataset, idx) -> list:
    return torch.utils.data.default_collate([dataset[int(k)] for k in idx])


def _batch_input(img: torch.Tensor, jitter, device) -> torch.Tensor:
    """A training batch (from the datasets' ``batch``) as the model takes it: jittered (``jitter``:
    a :class:`ColourJitter` or None) and on ``device`` in channels-last memory order (faster
    convolutions: 15-20 % per training step on the CPU, ``benchmarks/train_speed.py``; the
    datasets' batches come in it, a jittered 6-channel stack does not)."""
    img = img.to(device)
    if jitter is not None:
        img = jitter(img)
    return img.contiguous(memory_format=torch.channels_last)


def _shuffled_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """A permutation of range(n) drawn from ``seed``, cut into batches; a last batch of one item is
    dropped (batch normalisation needs two samples in training mode)."""
    order = np.random.default_rng(seed).permutation(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) > 1]


class _AbsoluteTask:
    """PoseNet and MapNet: frames with world poses."""

    def __init__(self, cfg: TrainConfig, train_parts, val_parts, transform, image_cache=None):
        self.cfg, self.mapnet, self.transform = cfg, cfg.kind == "mapnet", transform
        self.data = PoseDataset(train_parts, cfg.image_size, image_cache=image_cache)
        self.val = PoseDataset(val_parts, cfg.image_size, image_cache=image_cache) if val_parts else None
        self.stats = translation_stats(self.data.x)
        if self.mapnet:
            stride = cfg.window_stride or cfg.window - 1
            self.sampler = WindowBatchSampler(self.data, cfg.window, max(1, cfg.batch_size // cfg.window),
                                              stride=stride, step=cfg.window_step, seed=cfg.seed)
            # unordered views (campose.densify) have no neighbours: they join the window batches as
            # absolute-only items, spread evenly over each epoch's batches
            starts = np.cumsum([0] + [len(p) for p in train_parts])
            self.views = np.concatenate([np.arange(a, b) for p, a, b in zip(train_parts, starts, starts[1:])
                                         if not p.ordered] or [np.zeros(0, int)]).astype(int)
            if self.val is not None and cfg.select_by == "val_loss" and min(len(s) for s in val_parts) < 2:
                raise ValueError("MapNet's validation loss needs >= 2 validation frames per sequence: "
                                 "raise val_fraction or select by position/rotation")

    def batches(self, epoch: int) -> list:
        if self.mapnet:
            self.sampler.set_epoch(epoch)
            windows = [np.asarray(b, int) for b in self.sampler]
            if len(self.views) and windows:
                order = np.random.default_rng(self.cfg.seed + 7919 * (epoch + 1)).permutation(self.views)
                windows = [np.concatenate([w, v]) for w, v in zip(windows, np.array_split(order, len(windows)))]
            return windows
        return _shuffled_batches(len(self.data), self.cfg.batch_size, self.cfg.seed + epoch)

    def _pairs(self, n: int, groups=None) -> torch.Tensor:
        return consecutive_pairs(torch.arange(n) // self.cfg.window if groups is None else groups)

    def _batch_pairs(self, idx) -> torch.Tensor:
        """MapNet's pairs in a training batch: neighbours within each window; the views that follow
        the windows (:meth:`batches`) each get a group of their own, so they pair with nothing."""
        n_win = int(np.sum(~np.isin(np.asarray(idx), self.views))) if len(self.views) else len(idx)
        groups = torch.arange(len(idx)) // self.cfg.window
        groups[n_win:] = -1 - torch.arange(len(idx) - n_win)
        return self._pairs(len(idx), groups)

    def batch_loss(self, model, loss, idx, device):
        img, x, q = self.data.batch(idx)
        t, r = model(_batch_input(img, self.transform, device))
        pairs = (self._batch_pairs(idx).to(device),) if self.mapnet else ()
        return (*_loss_and_terms(loss, t, r, x.to(device), q.to(device), *pairs), len(idx))

    def validate(self, model, loss, device) -> dict:
        t, r = model_outputs(model, self.val, self.cfg.batch_size, device, self.cfg.num_threads)
        args = (t, r, torch.from_numpy(self.val.x), torch.from_numpy(self.val.q))
        if self.mapnet:
            args += (self._pairs(len(t), torch.tensor([s for s, _ in self.val.index])),)
        val_loss = _loss_value(loss, args, device) if not self.mapnet or len(args[-1]) else math.nan
        x, q = model.to_pose(t, r)
        pe, re = pose_errors(x.numpy(), q.numpy(), self.val.x, self.val.q)
        return {"val_loss": val_loss, "val_position_m": _median(pe), "val_rotation_deg": _median(re)}


class _RelativeTask:
    """MeNet (both variants): pairs of one sequence, stacked into 6 channels, relative poses."""

    def __init__(self, cfg: TrainConfig, train_parts, val_parts, transform, image_cache=None):
        self.cfg, self.transform = cfg, transform
        self.data = PairDataset(PoseDataset(train_parts, cfg.image_size, image_cache=image_cache), max_gap=cfg.max_gap,
                                pairs_per_image=cfg.pairs_per_image, seed=cfg.seed, stacked=True)
        self.stats = translation_stats(self.data.t_rel)
        self.val = None
        if val_parts:
            if max(len(s) for s in val_parts) < 2:
                raise ValueError("MeNet validation needs pairs: every validation part has a single frame; "
                                 "raise val_fraction")
            self.val = PairDataset(PoseDataset(val_parts, cfg.image_size, image_cache=image_cache), max_gap=cfg.max_gap,
                                   pairs_per_image=cfg.pairs_per_image, seed=cfg.seed, stacked=True)

    def batches(self, epoch: int) -> list:
        if epoch > 1:
            self.data.resample(self.cfg.seed + epoch)
        return _shuffled_batches(len(self.data), self.cfg.batch_size, self.cfg.seed + epoch)

    def batch_loss(self, model, loss, idx, device):
        img, t_rel, q_rel = self.data.batch(idx)
        t, r = model(_batch_input(img, self.transform, device))
        return (*_loss_and_terms(loss, t, r, t_rel.to(device), q_rel.to(device)), len(idx))

    def validate(self, model, loss, device) -> dict:
        t, q = model_outputs(model, self.val, self.cfg.batch_size, device, self.cfg.num_threads)
        val_loss = _loss_value(loss, (t, q, torch.from_numpy(self.val.t_rel), torch.from_numpy(self.val.q_rel)), device)
        e = relative_errors(t.numpy(), q.numpy(), self.val.t_rel, self.val.q_rel)
        return {"val_loss": val_loss, "val_position_m": _median(e["translation_m"]),
                "val_rotation_deg": _median(e["rotation_deg"]), "val_direction_deg": _median(e["direction_deg"])}


def _loss_and_terms(loss, *args) -> tuple[torch.Tensor, dict]:
    """The loss (with gradients) and its unweighted terms (for the history, without)."""
    value = loss(*args)
    with torch.no_grad():
        return value, loss.terms(*args)


@torch.no_grad()
def _loss_value(loss, args, device) -> float:
    return float(loss(*(a.to(device) for a in args)).item())


def _median(a) -> float:
    a = np.asarray(a, float)
    return float(np.median(a)) if len(a) and np.all(np.isfinite(a)) else math.nan


# ---------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    """What :func:`train` returns. ``model``: the best epoch's weights (or the last finite ones when
    no epoch finished), in eval mode; ``history``: one dict per epoch (``epoch``, ``train_loss`` and
    its ``train_<term>`` parts, ``val_loss``, ``val_position_m`` and ``val_rotation_deg`` medians
    (MeNet: of t_rel and q_rel, plus ``val_direction_deg``), learned loss weights, ``lr``,
    ``seconds`` (the epoch with its validation), ``samples_per_s`` (training pass: frames, MeNet pairs));
    ``best_epoch`` (None if none finished); ``status`` (one of
    :data:`STATUSES`), ``message``; ``stopped_epoch``: the epoch a ``nan``/``diverged`` run stopped in;
    ``metrics``: the best epoch's row; ``split``: per sequence the [first, stop) frames of its
    training and validation parts."""

    model: nn.Module
    config: TrainConfig
    history: list[dict]
    best_epoch: int | None
    status: str
    message: str
    metrics: dict
    normalisation: dict
    loss_config: dict
    split: dict
    seconds: float
    stopped_epoch: int | None = None
    checkpoint: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True for a run that stopped on a NaN or diverging loss."""
        return self.status in FAILED

    @property
    def final_loss(self) -> float:
        """The last epoch's training loss (NaN or inf for a run that hit a non-finite loss)."""
        return float(self.history[-1]["train_loss"]) if self.history else math.nan

    def history_frame(self):
        """The history as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        return pd.DataFrame(self.history).set_index("epoch")

    def info(self) -> dict:
        """The checkpoint's metadata (everything but the weights)."""
        return {"model_config": self.model.config, "loss_config": self.loss_config,
                "normalisation": self.normalisation, "train_config": self.config.to_dict(), "history": self.history,
                "best_epoch": self.best_epoch, "status": self.status, "message": self.message,
                "stopped_epoch": self.stopped_epoch, "metrics": self.metrics, "split": self.split,
                "seconds": self.seconds, "meta": self.meta}

    @classmethod
    def from_checkpoint(cls, path) -> "TrainResult":
        """A result rebuilt from a checkpoint written by :func:`train`."""
        model, info = load_checkpoint(path)
        return cls(model, TrainConfig.from_dict(info["train_config"]), info["history"], info["best_epoch"],
                   info["status"], info["message"], info["metrics"], info["normalisation"], info["loss_config"],
                   info["split"], info["seconds"], info["stopped_epoch"], Path(path), info.get("meta", {}))


# ---------------------------------------------------------------------------- training
def train(config: TrainConfig, sequences, out_path=None, progress: bool | None = None,
          meta: dict | None = None, image_cache=None) -> TrainResult:
    """Train ``config.kind`` on ``sequences`` (a list or a name -> Sequence dict of training walks;
    poses camera-to-world, metres). Validation, model selection, augmentation, seeding and failure
    handling are described in the module docstring. Writes a checkpoint to ``out_path`` if given
    (``meta``, plain values, is stored with it, e.g. the profile and label source). ``progress``:
    a tqdm bar over epochs (default :func:`campose.pipeline.show_progress`). ``image_cache``: a
    :class:`campose.dataset.ImageCache` (or its folder) that keeps the images at the input size
    across runs, so a run does not decode full-size images again."""
    from tqdm.auto import tqdm

    from campose.pipeline import show_progress

    cfg = config
    seqs = list(sequences.values()) if isinstance(sequences, dict) else list(sequences)
    if not seqs:
        raise ValueError("train needs at least one training sequence")
    test = [s.name for s in seqs if s.split == "test"]
    if test:
        raise ValueError(f"test sequences are never used for training: {', '.join(test)}")
    unordered = [s.name for s in seqs if not s.ordered]
    unpaired = [s.name for s in seqs if not s.ordered and not s.paired]
    if unpaired and cfg.kind not in VIEW_KINDS:
        raise ValueError(f"{cfg.kind} learns from pairs of neighbouring frames of walks or rendered pairs, and "
                         f"{', '.join(unpaired)} is an unordered set of views (campose.densify): train PoseNet or "
                         "MapNet on it, or leave it out")
    if unordered and cfg.kind == "mapnet" and len(unordered) == len(seqs):
        raise ValueError(f"{cfg.kind} needs at least one walk: {', '.join(unordered)} only holds unordered views")
    device = choose_device(cfg.device)
    progress = show_progress() if progress is None else progress
    t_start = time.perf_counter()
    with _run_settings(device, cfg.num_threads):
        seed_everything(cfg.seed)
        train_parts, val_parts = split_validation(seqs, cfg.val_fraction, cfg.val_gap)
        split = {p.name: {"train": p.meta["frames"]} for p in train_parts}
        for p in val_parts:
            split[p.name]["val"] = p.meta["frames"]
        jitter = (ColourJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, seed=cfg.seed + 1,
                               per_stack=cfg.kind.startswith("menet")) if cfg.augment else None)
        task_type = _RelativeTask if cfg.kind.startswith("menet") else _AbsoluteTask
        task = task_type(cfg, train_parts, val_parts, jitter, image_cache)
        model = build_model(cfg.kind, backbone=cfg.backbone, hidden=cfg.hidden, dropout=cfg.dropout,
                            backbone_weights=cfg.backbone_weights, bn_momentum=cfg.bn_momentum,
                            **task.stats).to(device, memory_format=torch.channels_last)
        loss = build_loss(cfg.kind, **cfg.loss_options()).to(device)
        opt = torch.optim.AdamW([{"params": list(model.parameters()), "weight_decay": cfg.weight_decay},
                                 {"params": list(loss.parameters()), "weight_decay": 0.0}], lr=cfg.lr)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.lr_schedule == "cosine"
                 else None)
        history, status, message, stopped = [], "completed", "", None
        best = {"epoch": None, "score": math.inf, "monitor": math.inf, "state": None, "since": 0}
        initial = math.inf  # the loss of the untrained model (first batch), "epoch 0" for divergence
        bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.kind}", disable=not progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            row, bad, first = _train_epoch(task, model, loss, opt, epoch, device, cfg)
            if epoch == 1:
                initial = best["monitor"] = first
            row.update({_weight_name(k): v.item() for k, v in loss.named_parameters()})
            monitor = _monitor(row, cfg)
            if bad is not None:
                status, stopped = "nan", epoch
                message = f"epoch {epoch}, batch {bad}: the training loss is {row['train_loss']} (not finite)"
            elif monitor > max(cfg.diverge_factor * best["monitor"], initial):
                status, stopped = "diverged", epoch
                message = (f"epoch {epoch}: the training loss {monitor:.4g} is over {cfg.diverge_factor:g}x the lowest "
                           f"so far ({best['monitor']:.4g}) and over the untrained model's ({initial:.4g})")
            if status in FAILED or not val_parts:
                row.update({"val_loss": math.nan, "val_position_m": math.nan, "val_rotation_deg": math.nan})
            else:
                recalibrate_batchnorm(model, task.data, cfg.batch_size, cfg.bn_recalibration_images, cfg.seed, device)
                row.update(task.validate(model, loss, device))
            row.update({"lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            if sched is not None:
                sched.step()
            history.append(row)
            if status in FAILED:
                break
            if cfg.select_by == "last":
                score = -float(epoch)
            else:
                score = row[_SCORE[cfg.select_by]] if val_parts else row["train_loss"]
            best["monitor"] = min(best["monitor"], monitor)
            if math.isfinite(score) and score < best["score"]:
                best.update(epoch=epoch, score=score, since=0, state=_state_copy(model, loss))
            else:
                best["since"] += 1
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val_m=f"{row['val_position_m']:.3g}",
                            val_deg=f"{row['val_rotation_deg']:.3g}")
            if cfg.patience is not None and best["since"] >= cfg.patience:
                status = "early_stopped"
                message = f"no improvement of the validation {cfg.select_by} for {cfg.patience} epochs"
                break
            elapsed = time.perf_counter() - t_start
            if cfg.max_minutes is not None and epoch < cfg.epochs and elapsed + row["seconds"] > 60 * cfg.max_minutes:
                status = "time_limit"
                message = f"stopped after epoch {epoch}: another epoch would pass {cfg.max_minutes:g} minutes"
                break
        bar.close()
        if best["state"] is not None:
            model.load_state_dict(best["state"][0])
            loss.load_state_dict(best["state"][1])
        if status not in FAILED:
            recalibrate_batchnorm(model, task.data, cfg.batch_size, cfg.bn_recalibration_images, cfg.seed, device)
        if status in FAILED:
            kept = (f"the model holds epoch {best['epoch']}'s weights" if best["epoch"]
                    else "no epoch was selected: the model holds the last finite weights")
            message = f"training {status}: {message}; stopped ({kept})"
            warnings.warn(message, TrainingWarning, stacklevel=2)
        model.to(memory_format=torch.contiguous_format).eval()  # as load_checkpoint builds it: the same arithmetic
    metrics = next((r for r in history if r["epoch"] == best["epoch"]), {})
    result = TrainResult(model, cfg, history, best["epoch"], status, message, dict(metrics),
                         {k: list(v) for k, v in task.stats.items()}, loss.config, split,
                         time.perf_counter() - t_start, stopped, None, dict(meta or {}))
    if out_path is not None:
        save_checkpoint(out_path, model, **result.info(), loss_state=loss.state_dict())
        result.checkpoint = Path(out_path)
    return result


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset, batch_size: int = 32, max_images: int = 512, seed: int = 0,
                          device=None) -> int:
    """Recompute every BatchNorm layer's running mean and variance with the model's current weights:
    the plain average over up to ``max_images`` items of ``dataset`` (a seeded random subset, in
    train mode, without gradients and without the dataset's augmentation). Returns the number of
    items used (0: nothing to do).

    Why: during training BatchNorm normalises with each batch's own statistics, while eval mode uses
    running averages that trail the weights. From scratch and in short runs the two differ enough
    that eval mode loses the image: every quick-profile model answered the same pose for every
    image. Recalibrated statistics make eval mode match what the network learned."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    n = min(int(max_images), len(dataset))
    if not bns or n < 2:
        return 0
    device = next(model.parameters()).device if device is None else torch.device(device)
    idx = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n])
    transform, momenta, was_training = getattr(dataset, "transform", None), [m.momentum for m in bns], model.training
    try:
        if transform is not None:
            dataset.transform = None
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        model.train()
        used = 0
        for a in range(0, n, batch_size):
            batch = idx[a:a + batch_size]
            if len(batch) < 2:  # train-mode BatchNorm needs two values per channel
                break
            # item by item (contiguous NCHW), not dataset.batch (channels-last): the convolutions'
            # arithmetic differs by the last bit between the two layouts, and the statistics of
            # every trained checkpoint were computed this way
            model(_collate(dataset, batch)[0].to(device))
            used += len(batch)
    finally:
        if transform is not None:
            dataset.transform = transform
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return used


_SCORE = {"position": "val_position_m", "rotation": "val_rotation_deg", "val_loss": "val_loss"}


def _train_epoch(task, model, loss, opt, epoch: int, device, cfg: TrainConfig) -> tuple[dict, int | None, float]:
    """One pass over the epoch's batches. Returns (row with ``train_loss``, ``train_<term>`` means
    and ``samples_per_s`` of the training pass; the 1-based batch whose loss was not finite, or None;
    the first batch's :func:`_monitor` value, taken before any step of the epoch). A non-finite loss
    stops the epoch before its backward pass, so the weights stay those of the last finite step."""
    model.train()
    loss.train()
    total, terms, n, first, t0 = 0.0, {}, 0, math.nan, time.perf_counter()
    for b, idx in enumerate(task.batches(epoch), start=1):
        value, parts, k = task.batch_loss(model, loss, idx, device)
        if b == 1:
            first = _monitor({"train_loss": value.item(), **{f"train_{t}": v.item() for t, v in parts.items()}}, cfg)
        if not torch.isfinite(value):
            return {"epoch": epoch, "train_loss": float(value.item()), "samples_per_s": math.nan}, b, first
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        total += value.item() * k
        for name, v in parts.items():
            terms[name] = terms.get(name, 0.0) + v.item() * k
        n += k
    if n == 0:
        raise ValueError("no training batch of two or more samples: too few training frames for this batch size")
    return {"epoch": epoch, "train_loss": total / n, **{f"train_{k}": v / n for k, v in terms.items()},
            "samples_per_s": n / (time.perf_counter() - t0)}, None, first


def _weight_name(parameter: str) -> str:
    """``weights.s_x`` -> ``s_x``, ``relative_weights.s_q`` -> ``s_q_rel`` (learned loss weights)."""
    group, name = parameter.rsplit(".", 1)
    return name + ("_rel" if group.startswith("relative") else "")


def _monitor(row: dict, cfg: TrainConfig) -> float:
    """What divergence is judged on: the loss, or with learned weighting (which can be negative)
    the sum of its unweighted terms."""
    if not cfg.learn_weights:
        return row["train_loss"]
    return sum(v for k, v in row.items() if k.startswith("train_") and k != "train_loss")


def _state_copy(model: nn.Module, loss: nn.Module) -> tuple[dict, dict]:
    return ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            {k: v.detach().cpu().clone() for k, v in loss.state_dict().items()})


# ---------------------------------------------------------------------------- checkpoints
def _plain(obj, where: str = "checkpoint"):
    """``obj`` as tensors and plain Python values (what ``torch.load(weights_only=True)`` accepts)."""
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    for base in (bool, int, float, str):  # subclasses (e.g. torch's version string) would pickle as classes
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a checkpoint (tensors and plain values only)")


def save_checkpoint(path, model: nn.Module, **info) -> Path:
    """Write ``model``'s weights (on the CPU), its ``config`` and ``info`` (plain values and tensors)
    to ``path``, atomically: a temporary file in the same folder, renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "torch": str(torch.__version__),
               "created": time.strftime("%Y-%m-%d %H:%M:%S"), **_plain(info), "model_config": _plain(model.config),
               "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and rebuild its model (eval mode, on
    ``device``). Returns ``(model, info)``; ``info`` holds everything but the weights: ``model_config``,
    ``loss_config``, ``normalisation``, ``train_config``, ``history``, ``best_epoch``, ``status``, ...
    FileNotFoundError for a missing file, :class:`CheckpointError` for an unreadable or foreign one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch's zip, or a legacy pickle
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch file (torch.save writes a zip "
                              f"archive; this file starts with {head!r})")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # zip, pickle or torch errors all mean: not a readable checkpoint
        raise CheckpointError(f"cannot read checkpoint {path} (truncated, corrupted or not a torch file): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a campose checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')} is not {CHECKPOINT_VERSION}")
    missing = [k for k in ("model_config", "model_state") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    model = build_model(**data["model_config"])
    try:
        model.load_state_dict(data["model_state"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit the stored model config: {e}") from None
    model.to(device).eval()
    return model, {k: v for k, v in data.items() if k != "model_state"}


# ---------------------------------------------------------------------------- cached runs
def data_digest(sequences) -> str:
    """A short hash of sequences' names, image names and poses (what a cached run depends on)."""
    h = hashlib.sha256()
    for s in (sequences.values() if isinstance(sequences, dict) else sequences):
        h.update(f"{s.name}|{s.split}|{','.join(s.images)}|".encode())
        h.update(np.ascontiguousarray(s.x, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(s.q, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def train_cached(config: TrainConfig, sequences, out_dir, key_extra=None, force: bool = False,
                 progress: bool | None = None, meta: dict | None = None, image_cache=None) -> TrainResult:
    """:func:`train` with its checkpoint ``out_dir/model.pt``, cached by the config, the data
    (:func:`data_digest`) and ``key_extra`` (e.g. the labels stage's key); a matching
    ``out_dir/stage.json`` loads the checkpoint instead of training."""
    from campose.pipeline import content_key, mark_stage, stage_is_current

    out = Path(out_dir)
    key = {"v": CHECKPOINT_VERSION, "config": config.to_dict(), "data": data_digest(sequences), "extra": key_extra}
    if config.kind.startswith("menet"):  # MeNet runs trained before the pair's images shared their jitter
        key["pair_jitter"] = "shared"     # (ColourJitter.per_stack) are stale
    key = content_key(key)
    path = out / "model.pt"
    if not force and stage_is_current(out, key, needs=path.name):
        return TrainResult.from_checkpoint(path)
    result = train(config, sequences, out_path=path, progress=progress, meta=meta, image_cache=image_cache)
    mark_stage(out, key, {"status": result.status, "best_epoch": result.best_epoch, "seconds": result.seconds})
    return result
