"""Pose regression networks: PoseNet, MapNet and MeNet (stacked, siamese, correlation) on torchvision backbones.

All models take float images (B, C, H, W) normalised as :func:`campose.dataset.image_to_tensor` makes
them and return ``(translation, rotation)``:

========================  ==========  ===========================================================
model (``build_model``)    input C     output
========================  ==========  ===========================================================
``posenet``  PoseNet       3           position x (B, 3) metres, world frame; unit quaternion q (B, 4)
``mapnet``   MapNet        3           position x (B, 3) metres; log map u = log q (B, 3), radians
``menet``    MeNet         6           t_rel (B, 3) metres, camera-i axes; unit quaternion q_rel (B, 4)
``menet_siamese``          6           as ``menet``
``menet_corr``             6           as ``menet``
========================  ==========  ===========================================================

Poses follow :mod:`campose.geometry`: camera-to-world, w-first quaternions; ``predict_pose`` returns
them canonical (unit, w >= 0). MeNet's input is the channel stack ``cat([image_i, image_j], 1)`` and
its output is camera j's pose in the frame of camera i: ``t_rel = R_i^T (x_j - x_i)``,
``q_rel = q_i^-1 q_j`` (:func:`campose.geometry.relative_pose`). MeNet regresses ``q_rel`` as a
quaternion (4 numbers, as Melekhov et al. 2017): the sign-invariant quaternion loss covers any
relative rotation, where a log map has a cut at 180 degrees.

No weights are ever downloaded: torchvision models are built with ``weights=None``;
``backbone_weights`` names a local state dict of the torchvision model (e.g. ``torch.save(
torchvision.models.resnet18(weights=...).state_dict(), path)`` on a machine that has them); its
classifier keys (``fc.*``, ``classifier.*``) are ignored.

Translation normalisation: the translation head predicts ``(t - translation_mean) / translation_std``
and the model outputs ``translation_mean + translation_std * head``, so outputs are in metres and a
model trained from scratch starts near the centre of the training set with a unit-scale head. The
statistics (:func:`translation_stats` of the training labels) are buffers (saved in the state dict)
and part of ``config``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from campose.geometry import torch_quat_exp, torch_quat_normalize

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
_RESNET_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


# ---------------------------------------------------------------------------- backbone
def _load_torchvision_state(net: nn.Module, name: str, path) -> None:
    """Load a local state dict of ``torchvision.models.<name>`` into ``net`` (classifier keys ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path} (expected a state dict of "
                                f"torchvision.models.{name}, saved with torch.save(model.state_dict(), path))")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip or torch errors: all mean "not a weights file"
        raise ValueError(f"cannot read {path} as a torch state dict: {type(e).__name__}: {e}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors), "
                         f"got {type(state).__name__}")
    head = "fc." if name.startswith("resnet") else "classifier."
    own = net.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = [k for k in own if not k.startswith(head) and k not in body]
    unexpected = [k for k in body if k not in own]
    wrong = [f"{k} {tuple(body[k].shape)} vs {tuple(own[k].shape)}" for k in body
             if k in own and body[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        found = (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes, file vs model", wrong))
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in found if v]
        raise ValueError(f"{path} does not fit torchvision.models.{name}: " + "; ".join(parts))
    net.load_state_dict(body, strict=False)


def _first_conv(name: str, features: nn.Sequential) -> nn.Conv2d:
    """The input convolution of a backbone's ``features`` (or of the first blocks of them):
    ResNets' ``conv1``; MobileNetV3 and EfficientNet keep it in ``features[0][0]``."""
    return features.conv1 if name.startswith("resnet") else features[0][0]


class Backbone(nn.Module):
    """A torchvision network without its classifier, plus global average pooling.

    ``images (B, in_channels, H, W) -> features (B, out_features)``. With ``in_channels != 3`` the
    first convolution is rebuilt: from pretrained weights its kernel is the 3-channel kernel repeated
    ``in_channels / 3`` times and divided by that count (a stack of identical images then gives the
    pretrained response); without weights it gets torchvision's own initialisation (Kaiming normal,
    fan-out), so the two images of a stack start with different filters.

    ``bn_momentum`` sets the momentum of every BatchNorm layer's running statistics (None keeps
    torchvision's: 0.1 for ResNets, 0.01 for MobileNetV3 and EfficientNet, tuned for ImageNet's
    hundreds of thousands of steps). After a short run at 0.01 the running statistics are still
    close to their initial values, and in eval mode the network then answers almost the same pose
    for every image (seen with 80 training steps: predictions identical to 1e-7 m), so the default
    is 0.1 for every backbone.
    """

    def __init__(self, name: str = "resnet18", in_channels: int = 3, weights=None, bn_momentum: float | None = 0.1):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        if not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        if weights is not None and in_channels % 3:
            raise ValueError("pretrained weights need in_channels a multiple of 3 (stacked RGB images), "
                             f"got {in_channels}")
        if bn_momentum is not None and not 0 < float(bn_momentum) <= 1:
            raise ValueError(f"bn_momentum must be in (0, 1] or None, got {bn_momentum}")
        net = getattr(torchvision.models, name)(weights=None)
        if weights is not None:
            _load_torchvision_state(net, name, weights)
        if bn_momentum is not None:
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = float(bn_momentum)
        if name.startswith("resnet"):
            self.features = nn.Sequential(OrderedDict((k, getattr(net, k)) for k in _RESNET_LAYERS))
            self.out_features = net.fc.in_features
            parent, attr = self.features, "conv1"
        else:  # mobilenet_v3_*, efficientnet_*: features[0] = Conv2dNormActivation(conv, bn, act)
            self.features = net.features
            self.out_features = self.features[-1][0].out_channels
            parent, attr = self.features[0], "0"
        self.name, self.in_channels = name, int(in_channels)
        if in_channels != 3:
            old = getattr(parent, attr)
            conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                             old.dilation, old.groups, bias=old.bias is not None)
            with torch.no_grad():
                if weights is not None:
                    k = in_channels // 3
                    conv.weight.copy_(old.weight.repeat(1, k, 1, 1) / k)
                else:
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                if conv.bias is not None:  # torchvision's first convolutions have none; kept general
                    conv.bias.copy_(old.bias)
            setattr(parent, attr, conv)

    @property
    def first_conv(self) -> nn.Conv2d:
        """The input convolution (its ``in_channels`` equals the backbone's)."""
        return _first_conv(self.name, self.features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


class Correlation(nn.Module):
    """Local correlation of two feature maps (FlowNetC, Dosovitskiy et al. 2015): for every
    displacement (dy, dx) in [-d, d]^2, the channel mean of ``f1 * f2`` shifted by it.
    ``(f1, f2) (B, C, H, W) -> (B, (2d + 1)^2, H, W)``, zero outside ``f2``."""

    def __init__(self, max_displacement: int = 4):
        super().__init__()
        if not isinstance(max_displacement, (int, np.integer)) or max_displacement < 0:
            raise ValueError(f"max_displacement must be a non-negative integer, got {max_displacement!r}")
        self.max_displacement = int(max_displacement)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        if f1.shape != f2.shape or f1.ndim != 4:
            raise ValueError(f"Correlation expects two maps of one shape (B, C, H, W), got {tuple(f1.shape)} "
                             f"and {tuple(f2.shape)}")
        d, (h, w) = self.max_displacement, f1.shape[2:]
        f2 = nn.functional.pad(f2, (d, d, d, d))
        return torch.stack([(f1 * f2[:, :, dy:dy + h, dx:dx + w]).mean(1)
                            for dy in range(2 * d + 1) for dx in range(2 * d + 1)], 1)


class CorrelationBackbone(nn.Module):
    """Two images through one shared encoder (the backbone's stages up to ``stride``, 8), their local
    correlation, then the backbone's remaining stages once, on the first image's features and the
    correlation, and global average pooling.

    ``images (B, 6, H, W) = cat([image_i, image_j], 1) -> features (B, out_features)``. The
    correlation compares each place of image i with the places of image j up to
    ``max_displacement`` feature cells away (4 cells = 32 pixels at stride 8), which is where a
    stacked input's small early kernels cannot reach and a siamese network's pooled vectors have
    already lost the geometry. The decoder (the remaining stages) has its own weights; a 1x1
    convolution maps features plus correlation back to the encoder's channel count.
    """

    def __init__(self, name: str = "resnet18", weights=None, bn_momentum: float | None = 0.1,
                 max_displacement: int = 4, stride: int = 8):
        super().__init__()
        if not isinstance(stride, (int, np.integer)) or stride < 2:
            raise ValueError(f"stride must be an integer >= 2, got {stride!r}")
        encoder, decoder = (Backbone(name, 3, weights, bn_momentum) for _ in range(2))
        blocks = list(encoder.features.named_children())
        with torch.no_grad():  # find the last block whose output is at ``stride``
            x, split, channels = torch.zeros(1, 3, 8 * stride, 8 * stride), None, None
            for k, (_, m) in enumerate(blocks):
                x = m.eval()(x)
                if x.shape[-1] == 8:
                    split, channels = k + 1, x.shape[1]
        encoder.train()
        if split is None:
            raise ValueError(f"backbone {name} has no stage at stride {stride}")
        enc = nn.Sequential(OrderedDict(blocks[:split]))
        corr = Correlation(max_displacement)
        n_corr = (2 * corr.max_displacement + 1) ** 2
        adapter = nn.Sequential(nn.Conv2d(channels + n_corr, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                nn.ReLU(inplace=True))
        if bn_momentum is not None:
            adapter[1].momentum = float(bn_momentum)
        dec = nn.Sequential(OrderedDict(list(decoder.features.named_children())[split:]))
        self.features = nn.Sequential(OrderedDict([("encoder", enc), ("correlation", corr), ("adapter", adapter),
                                                   ("decoder", dec)]))
        self.name, self.in_channels, self.out_features = name, 6, decoder.out_features

    @property
    def first_conv(self) -> nn.Conv2d:
        """The encoder's input convolution (3 channels: it sees one image at a time)."""
        return _first_conv(self.name, self.features.encoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.features.encoder(torch.cat([images[:, :3], images[:, 3:]], 0))  # shared weights, one pass
        f1, f2 = f.chunk(2, 0)
        x = self.features.adapter(torch.cat([f1, self.features.correlation(f1, f2)], 1))
        return self.features.decoder(x).mean(dim=(2, 3))


# ---------------------------------------------------------------------------- models
def translation_stats(t, min_std: float = 0.01) -> dict:
    """``translation_mean`` and ``translation_std`` (metres, per axis) of training translations
    ``t`` (N, 3): positions for PoseNet/MapNet, ``t_rel`` for MeNet. The std is floored at
    ``min_std`` so an axis that hardly varies (the camera height) keeps a learnable range. Returns a
    dict to pass to :func:`build_model`."""
    t = np.asarray(t, dtype=float)
    if t.ndim != 2 or t.shape[1] != 3 or len(t) == 0:
        raise ValueError(f"translations must have shape (N, 3) with N >= 1, got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("translations contain NaN or infinite values")
    if not min_std > 0:
        raise ValueError(f"min_std must be positive, got {min_std}")
    return {"translation_mean": t.mean(0).tolist(), "translation_std": np.maximum(t.std(0), min_std).tolist()}


def _vec3(v, name: str) -> list[float]:
    a = np.asarray(v, dtype=float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers, got {v!r}")
    return a.tolist()


class _PoseRegressor(nn.Module):
    """Backbone -> global pooling -> [Linear, ReLU, Dropout] per ``hidden`` size -> translation and
    rotation heads. Subclasses set the input channels, rotation size and whether the two images of
    a 6-channel stack share one 3-channel backbone (siamese)."""

    kind = ""
    in_channels = 3
    rotation_dim = 4
    siamese = False
    default_hidden: tuple[int, ...] = (2048,)

    def __init__(self, backbone: str = "resnet18", hidden: Sequence[int] | None = None, dropout: float = 0.5,
                 translation_mean=(0.0, 0.0, 0.0), translation_std=(1.0, 1.0, 1.0), backbone_weights=None,
                 bn_momentum: float | None = 0.1):
        super().__init__()
        hidden = self.default_hidden if hidden is None else hidden
        if isinstance(hidden, (int, str)) or not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden):
            raise ValueError(f"hidden must be a sequence of positive layer sizes, got {hidden!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        mean, std = _vec3(translation_mean, "translation_mean"), _vec3(translation_std, "translation_std")
        if min(std) <= 0:
            raise ValueError(f"translation_std must be positive, got {std}")
        self.backbone = self._make_backbone(backbone, backbone_weights, bn_momentum)
        n = self.backbone.out_features * (2 if self.siamese else 1)
        layers = []
        for h in hidden:
            layers += [nn.Linear(n, int(h)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            n = int(h)
        self.mlp = nn.Sequential(*layers)
        self.translation_head = nn.Linear(n, 3)
        self.rotation_head = nn.Linear(n, self.rotation_dim)
        self.register_buffer("translation_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("translation_std", torch.tensor(std, dtype=torch.float32))
        self._hidden, self._dropout, self._bn_momentum = [int(h) for h in hidden], float(dropout), bn_momentum

    def _make_backbone(self, name: str, weights, bn_momentum) -> nn.Module:
        return Backbone(name, 3 if self.siamese else self.in_channels, weights, bn_momentum)

    @property
    def config(self) -> dict:
        """Everything :func:`build_model` needs to rebuild this architecture (JSON-serialisable;
        ``backbone_weights`` is left out: a checkpoint's state dict holds all weights)."""
        return {"kind": self.kind, "backbone": self.backbone.name, "hidden": list(self._hidden),
                "dropout": self._dropout, "bn_momentum": self._bn_momentum, "translation_mean": self.translation_mean.tolist(),
                "translation_std": self.translation_std.tolist()}

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != self.in_channels:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{type(self).__name__} expects images (B, {self.in_channels}, H, W), got {shape}")
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, F); siamese: the two images' features side by side (B, 2F)."""
        images = self._check(images)
        if not self.siamese:
            return self.backbone(images)
        f = self.backbone(torch.cat([images[:, :3], images[:, 3:]], 0))  # one pass, shared weights
        return torch.cat(f.chunk(2, 0), 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(translation (B, 3) metres, rotation (B, rotation_dim))``; quaternions are unit length."""
        f = self.mlp(self.features(images))
        t = self.translation_mean + self.translation_std * self.translation_head(f)
        r = self.rotation_head(f)
        return t, (torch_quat_normalize(r) if self.rotation_dim == 4 else r)

    def to_pose(self, t: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs of ``forward`` -> ``(t, q)`` with q a unit quaternion, w >= 0."""
        return t, torch_quat_normalize(r) if self.rotation_dim == 4 else torch_quat_exp(r)

    @torch.no_grad()
    def predict_pose(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Poses of images (B, C, H, W) or one image (C, H, W), in eval mode, without gradients:
        ``(t (B, 3) metres, q (B, 4) unit, w >= 0)`` (unbatched for one image). The model's
        train/eval mode is restored afterwards."""
        single = isinstance(images, torch.Tensor) and images.ndim == 3
        images = images[None] if single else images
        was_training = self.training
        if was_training:  # switching modes walks every module (about 1 ms): only when needed
            self.eval()
        try:
            t, q = self.to_pose(*self(images.to(self.translation_mean.device)))
        finally:
            if was_training:
                self.train()
        return (t[0], q[0]) if single else (t, q)


class PoseNet(_PoseRegressor):
    """PoseNet (Kendall et al. 2015): one image (B, 3, H, W) -> camera-to-world position x (B, 3)
    metres and unit quaternion q (B, 4). Default head: one 2048-unit layer, dropout 0.5."""

    kind = "posenet"


class MapNet(_PoseRegressor):
    """MapNet (Brahmbhatt et al. 2018): one image -> position x (B, 3) metres and the log map
    u = log q (B, 3) (:func:`campose.geometry.quat_log`, half the rotation vector, radians).
    Default head: two layers (2048, 1024). ``to_pose(x, u)`` gives (x, q)."""

    kind = "mapnet"
    rotation_dim = 3
    default_hidden = (2048, 1024)


class MeNet(_PoseRegressor):
    """Relative pose from the channel stack of two images (B, 6, H, W) = cat([image_i, image_j], 1):
    t_rel (B, 3) metres in camera i's axes and unit q_rel = q_i^-1 q_j (B, 4). One backbone whose
    first convolution takes 6 channels (early fusion). Default head: one 1024-unit layer."""

    kind = "menet"
    in_channels = 6
    default_hidden = (1024,)


class SiameseMeNet(MeNet):
    """MeNet with a siamese backbone (Melekhov et al. 2017, Laskar et al. 2017): each image of the
    stack (B, 6, H, W) goes through the same 3-channel backbone, the two pooled feature vectors are
    concatenated (image i first) and regressed to t_rel (B, 3) metres and unit q_rel (B, 4)."""

    kind = "menet_siamese"
    siamese = True


class CorrelationMeNet(MeNet):
    """MeNet with a correlation layer (FlowNetC's, Dosovitskiy et al. 2015): :class:`CorrelationBackbone`
    on the stack (B, 6, H, W), regressed to t_rel (B, 3) metres in camera i's axes and unit q_rel
    (B, 4). A subclass with another ``max_displacement`` (and its own ``kind``) tries other ranges."""

    kind = "menet_corr"
    #: feature cells compared in each direction (4 at stride 8: 32 pixels, 81 correlation channels)
    max_displacement = 4

    def _make_backbone(self, name: str, weights, bn_momentum) -> nn.Module:
        return CorrelationBackbone(name, weights, bn_momentum, max_displacement=self.max_displacement)


MODELS: dict[str, type[_PoseRegressor]] = {m.kind: m for m in (PoseNet, MapNet, MeNet, SiameseMeNet,
                                                                CorrelationMeNet)}


def build_model(kind: str, **config) -> _PoseRegressor:
    """The model ``kind`` (``posenet``, ``mapnet``, ``menet``, ``menet_siamese``, ``menet_corr``) with ``config``:
    ``backbone``, ``hidden``, ``dropout``, ``translation_mean``, ``translation_std``,
    ``backbone_weights``. ``build_model(**model.config)`` rebuilds a model's architecture."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODELS)}")
    allowed = [p for p in inspect.signature(_PoseRegressor.__init__).parameters if p != "self"]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {kind}; "
                         f"options are {', '.join(allowed)}")
    return MODELS[kind](**config)


def architecture(model: _PoseRegressor, image_size: tuple[int, int] = (128, 96)) -> list[dict]:
    """The model's layers as it runs, for tables and :func:`campose.plots.plot_architecture`.

    One forward pass of a zero batch of ``image_size`` (width, height) through the model, with hooks on
    the backbone's stages, the pooling, the head's layers and the two output heads. Returns one dict
    per block in order: ``name``, ``type`` (the module class), ``part`` (``input``, ``backbone``,
    ``pool``, ``head``, ``output``), ``shape`` (output shape without the batch axis) and ``params``
    (parameters of that block). A siamese backbone runs once per image with shared weights (its rows
    give one image's shapes) and the pooled features of the two images are concatenated.
    """
    w, h = (int(v) for v in image_size)
    rows: list[dict] = [{"name": "input", "type": f"{model.in_channels}-channel image", "part": "input",
                         "shape": (model.in_channels, h, w), "params": 0}]
    hooks = []

    def hook(name, part):
        def fn(module, _inp, out):
            shape = tuple(out.shape[1:])
            name_ = f"block {name}" if name.isdigit() else name
            rows.append({"name": name_, "type": type(module).__name__, "part": part, "shape": shape,
                         "params": sum(p.numel() for p in module.parameters())})
        return fn

    for name, m in model.backbone.features.named_children():
        hooks.append(m.register_forward_hook(hook(name, "backbone")))
    for i, m in enumerate(model.mlp):
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(hook(f"fc{i // 3 + 1}", "head")))
    hooks.append(model.translation_head.register_forward_hook(hook("translation", "output")))
    hooks.append(model.rotation_head.register_forward_hook(hook("quaternion" if model.rotation_dim == 4 else "log q",
                                                                "output")))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pooled = model.features(torch.zeros(1, model.in_channels, h, w, device=model.translation_mean.device))
            n_backbone = len(rows)
            rows.insert(n_backbone, {"name": "avg pool, x2 + concat" if model.siamese else "avg pool",
                                     "type": "mean", "part": "pool", "shape": tuple(pooled.shape[1:]), "params": 0})
            f = model.mlp(pooled)  # the rest of forward, on the pooled features: hooks fire once
            model.translation_head(f)
            model.rotation_head(f)
    finally:
        for k in hooks:
            k.remove()
        model.train(was_training)
    return rows
