"""PoseNet, MapNet and MeNet: shapes, conventions, configs, local weights, gradients, overfitting.

Small inputs (64x48) and small heads keep this fast on a CPU; no weights are ever downloaded.
"""

import json

import numpy as np
import pytest
import torch
import torchvision

from campose import geometry as g
from campose import losses as L
from campose import models as M

W, H = 64, 48
KINDS = list(M.MODELS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a small shared CPU, two threads of tiny convolutions mostly wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def models():
    """One small model of each kind (every backbone is covered by its own test)."""
    torch.manual_seed(1)
    return {k: M.build_model(k, backbone="mobilenet_v3_small", hidden=[32], translation_mean=[1.0, -2.0, 1.5],
                             translation_std=[4.0, 3.0, 0.1]) for k in KINDS}


def images(n=2, c=3):
    return torch.randn(n, c, H, W)


def check_pose(t, q, n=2):
    assert t.shape == (n, 3) and q.shape == (n, 4) and t.dtype == q.dtype == torch.float32
    assert torch.allclose(q.norm(dim=-1), torch.ones(n), atol=1e-5)


# ---------------------------------------------------------------------------- shapes and conventions
@pytest.mark.parametrize("backbone", M.BACKBONES)
def test_every_backbone_gives_poses_and_takes_a_6_channel_stack(backbone):
    net = M.build_model("posenet", backbone=backbone, hidden=[16])
    t, q = net(images())
    check_pose(t, q)
    menet = M.build_model("menet", backbone=backbone, hidden=[16])
    assert menet.backbone.first_conv.in_channels == 6
    assert net.backbone.out_features == menet.backbone.out_features
    check_pose(*menet(images(c=6)))


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_kind_outputs_and_predict_pose(models, kind):
    model = models[kind].train()
    c = model.in_channels
    t, r = model(images(3, c))
    assert t.shape == (3, 3) and r.shape == (3, 3 if kind == "mapnet" else 4)
    if kind != "mapnet":
        check_pose(t, r, 3)
    x, q = model.predict_pose(images(3, c))
    check_pose(x, q, 3)
    assert (q[:, 0] >= 0).all() and not x.requires_grad
    assert model.training  # predict_pose restores the mode
    x1, q1 = model.predict_pose(images(1, c)[0])  # one unbatched image
    assert x1.shape == (3,) and q1.shape == (4,)


def test_mapnet_to_pose_is_the_exp_map(models):
    mapnet = models["mapnet"].eval()
    with torch.no_grad():
        x, u = mapnet(images())
    x2, q = mapnet.to_pose(x, u)
    assert torch.equal(x, x2)
    assert np.allclose(q.numpy(), g.quat_exp(u.double().numpy()), atol=1e-6)
    xp, qp = mapnet.predict_pose(images())
    assert xp.shape == (2, 3) and (qp[:, 0] >= 0).all()


def test_translation_normalisation_and_stats(models):
    model = models["posenet"]
    stats = M.translation_stats([[0, 0, 1.5], [2, 4, 1.5], [4, 8, 1.5]])
    assert np.allclose(stats["translation_mean"], [2, 4, 1.5])
    assert np.allclose(stats["translation_std"], [np.std([0, 2, 4]), np.std([0, 4, 8]), 0.01])  # floored
    assert "translation_mean" in model.state_dict() and "translation_std" in model.state_dict()
    net = M.build_model("posenet", hidden=[8], **stats).eval()
    with torch.no_grad():
        net.translation_head.weight.zero_()
        net.translation_head.bias.copy_(torch.tensor([1.0, -1.0, 0.0]))
    x, _ = net.predict_pose(images())
    want = torch.tensor(stats["translation_mean"]) + torch.tensor(stats["translation_std"]) * torch.tensor([1.0, -1, 0])
    assert torch.allclose(x, want.expand(2, 3).float())  # metres = mean + std * head
    with pytest.raises(ValueError, match="shape"):
        M.translation_stats(np.zeros((4, 2)))


# ---------------------------------------------------------------------------- architecture details
def test_siamese_menet_shares_one_backbone(models):
    model = models["menet_siamese"].eval()
    assert model.backbone.first_conv.in_channels == 3
    n_params = sum(p.numel() for p in model.parameters())
    n_head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert n_params - n_head == sum(p.numel() for p in model.backbone.parameters())  # one copy
    a, b = torch.randn(2, 3, H, W), torch.randn(2, 3, H, W)
    with torch.no_grad():
        f = model.features(torch.cat([a, b], 1))
        fa, fb = model.backbone(a), model.backbone(b)
        swapped = model.features(torch.cat([b, a], 1))
    F = model.backbone.out_features
    assert f.shape == (2, 2 * F)
    assert torch.allclose(f[:, :F], fa, atol=1e-5) and torch.allclose(f[:, F:], fb, atol=1e-5)
    assert torch.allclose(swapped, torch.cat([fb, fa], 1), atol=1e-5)


def _correlation_by_loops(f1, f2, d):
    """The definition, one displacement and one cell at a time."""
    B, C, h, w = f1.shape
    out = torch.zeros(B, (2 * d + 1) ** 2, h, w)
    for k, (dy, dx) in enumerate((dy, dx) for dy in range(-d, d + 1) for dx in range(-d, d + 1)):
        for y in range(h):
            for x in range(w):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    out[:, k, y, x] = (f1[:, :, y, x] * f2[:, :, y + dy, x + dx]).mean(1)
    return out


def test_correlation_matches_its_definition_and_finds_a_shift():
    corr = M.Correlation(2)
    f1, f2 = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    got = corr(f1, f2)
    assert got.shape == (2, 25, 6, 7)
    assert torch.allclose(got, _correlation_by_loops(f1, f2, 2), atol=1e-6)
    # image j is image i moved by (dy, dx) = (1, -2) cells: inside, the peak is that displacement's channel
    f = torch.randn(1, 64, 8, 9)
    moved = torch.zeros_like(f)
    moved[:, :, 1:, :-2] = f[:, :, :-1, 2:]
    peak = corr(f, moved)[0, :, 2:6, 3:7].argmax(0)
    assert (peak == (1 + 2) * 5 + (-2 + 2)).all()
    with pytest.raises(ValueError, match="max_displacement"):
        M.Correlation(-1)
    with pytest.raises(ValueError, match="two maps of one shape"):
        corr(f1, f2[:, :4])


def test_correlation_menet_shares_its_encoder_and_reads_the_order():
    # a fresh model: the shared one's BatchNorm statistics, updated by other tests' training-mode
    # passes, make its eval-mode features nearly the same for every input
    model = M.build_model("menet_corr", backbone="mobilenet_v3_small", hidden=[32]).eval()
    bb = model.backbone
    assert bb.first_conv.in_channels == 3 and bb.in_channels == 6
    names = [r["name"] for r in M.architecture(model, (W, H))]
    assert names[:5] == ["input", "encoder", "correlation", "adapter", "decoder"]
    enc = bb.features.encoder
    with torch.no_grad():
        f = enc(torch.zeros(1, 3, H, W))
    assert f.shape[2:] == (H // 8, W // 8)  # the encoder stops at stride 8
    n_corr = (2 * bb.features.correlation.max_displacement + 1) ** 2
    assert bb.features.adapter[0].in_channels == f.shape[1] + n_corr
    a, b = torch.randn(2, 3, H, W), torch.randn(2, 3, H, W)
    with torch.no_grad():
        fa, fb = enc(a), enc(b)
        x = bb.features.adapter(torch.cat([fa, bb.features.correlation(fa, fb)], 1))
        assert torch.allclose(bb(torch.cat([a, b], 1)), bb.features.decoder(x).mean(dim=(2, 3)), rtol=1e-4, atol=1e-12)
        ab, ba = bb(torch.cat([a, b], 1)), bb(torch.cat([b, a], 1))  # tiny in eval mode before training
        assert not torch.allclose(ab, ba, rtol=0.01, atol=0)  # the order matters


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0"])
def test_correlation_backbone_splits_other_backbones_at_stride_8(backbone):
    bb = M.CorrelationBackbone(backbone)
    with torch.no_grad():
        f = bb.features.encoder(torch.zeros(1, 3, H, W))
        out = bb.eval()(images(2, 6))
    assert f.shape[2:] == (H // 8, W // 8)
    assert out.shape == (2, bb.out_features) and bb.out_features == M.Backbone(backbone).out_features
    with pytest.raises(ValueError, match="no stage at stride 3"):
        M.CorrelationBackbone("mobilenet_v3_small", stride=3)


def save_torchvision(tmp_path, name, **kw):
    torch.manual_seed(5)
    net = getattr(torchvision.models, name)(weights=None, **kw)
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_local_backbone_weights_load_and_init_the_6_channel_conv(tmp_path):
    ref, path = save_torchvision(tmp_path, "resnet18", num_classes=10)  # another classifier: ignored
    model = M.build_model("posenet", hidden=[8], backbone_weights=path)
    got = model.backbone.features
    assert torch.equal(got.conv1.weight, ref.conv1.weight)
    assert torch.equal(got.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    assert "backbone_weights" not in model.config
    menet = M.build_model("menet", hidden=[8], backbone_weights=str(path))
    w = menet.backbone.first_conv.weight
    assert w.shape == (64, 6, 7, 7)
    assert torch.allclose(w, torch.cat([ref.conv1.weight, ref.conv1.weight], 1) / 2)  # duplicated, halved
    # a stack of two identical images gives the pretrained 3-channel features
    a = images()
    with torch.no_grad():
        assert torch.allclose(menet.backbone.eval()(torch.cat([a, a], 1)), model.backbone.eval()(a), atol=1e-4)
    # the mobilenet/efficientnet family keeps its first conv in features[0][0]
    ref, path = save_torchvision(tmp_path, "mobilenet_v3_small")
    siam = M.build_model("menet_siamese", backbone="mobilenet_v3_small", hidden=[8], backbone_weights=path)
    assert torch.equal(siam.backbone.first_conv.weight, ref.features[0][0].weight)


def test_bad_backbone_weights_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone weights file not found: .*nope.pth"):
        M.build_model("posenet", backbone_weights=tmp_path / "nope.pth")
    _, other = save_torchvision(tmp_path, "mobilenet_v3_small")  # another architecture
    with pytest.raises(ValueError, match="does not fit torchvision.models.resnet18: .*missing keys.*unexpected keys"):
        M.build_model("posenet", backbone_weights=other)
    _, path = save_torchvision(tmp_path, "resnet18")
    state = torch.load(path, weights_only=True)
    state["conv1.weight"] = state["conv1.weight"][:32]
    torch.save(state, path)
    wrong = r"wrong shapes, file vs model \(e.g. conv1.weight \(32, 3, 7, 7\) vs \(64, 3, 7, 7\)\)"
    with pytest.raises(ValueError, match=wrong):
        M.build_model("posenet", backbone_weights=path)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read .*junk.pth as a torch state dict"):
        M.build_model("posenet", backbone_weights=junk)
    torch.save([1, 2, 3], junk)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        M.build_model("posenet", backbone_weights=junk)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip_rebuilds_the_same_model(models, kind):
    model = models[kind].eval()
    config = json.loads(json.dumps(model.config))  # a checkpoint stores it as JSON
    again = M.build_model(**config).eval()
    assert type(again) is type(model) and again.config == model.config
    shapes = [(n, p.shape) for n, p in model.state_dict().items()]
    assert [(n, p.shape) for n, p in again.state_dict().items()] == shapes
    again.load_state_dict(model.state_dict())
    x = images(2, model.in_channels)
    with torch.no_grad():
        for a, b in zip(model(x), again(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(models, kind):
    model = models[kind].train()
    model.zero_grad()
    x_true, q_true = torch.randn(4, 3), g.torch_quat_normalize(torch.randn(4, 4))
    t, r = model(images(4, model.in_channels))
    loss = L.build_loss(kind)
    args = (t, r, x_true, q_true) + ((L.consecutive_pairs([0, 0, 1, 1]),) if kind == "mapnet" else ())
    loss(*args).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_arguments_raise_clear_errors(models):
    with pytest.raises(ValueError, match="unknown model kind 'posenet2'"):
        M.build_model("posenet2")
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; choose one of resnet18"):
        M.build_model("posenet", backbone="vgg16")
    with pytest.raises(ValueError, match="unknown option.*pretrained"):
        M.build_model("posenet", pretrained=True)
    with pytest.raises(ValueError, match="hidden"):
        M.build_model("posenet", hidden=512)
    with pytest.raises(ValueError, match="dropout"):
        M.build_model("posenet", dropout=1.0)
    with pytest.raises(ValueError, match="translation_std must be positive"):
        M.build_model("posenet", translation_std=[1, 0, 1])
    with pytest.raises(ValueError, match=r"translation_mean must be 3 finite numbers"):
        M.build_model("posenet", translation_mean=[1, 2])
    with pytest.raises(ValueError, match="multiple of 3"):
        M.Backbone("resnet18", in_channels=4, weights="x.pth")
    with pytest.raises(ValueError, match=r"PoseNet expects images \(B, 3, H, W\), got \(2, 6, 48, 64\)"):
        models["posenet"](images(2, 6))
    with pytest.raises(ValueError, match=r"SiameseMeNet expects images \(B, 6, H, W\), got \(2, 3, 48, 64\)"):
        models["menet_siamese"](images(2, 3))


# ---------------------------------------------------------------------------- training
def test_a_small_model_overfits_eight_images():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(-5, 5, (8, 3)), dtype=torch.float32)
    q = torch.tensor(g.quat_normalize(rng.normal(size=(8, 4))), dtype=torch.float32)
    img = torch.randn(8, 3, 24, 32)
    model = M.build_model("posenet", backbone="mobilenet_v3_small", hidden=[64], dropout=0.0,
                          **M.translation_stats(x.numpy()))
    loss = L.PoseLoss("mse")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(150):
        opt.zero_grad()
        t, r = model(img)
        value = loss(t, r, x, q)
        value.backward()
        opt.step()
        first = first or value.item()
        if value.item() < 1e-4 * first:
            break
    assert value.item() < 1e-4 * first, (first, value.item())
    with torch.no_grad():
        t, r = model(img)  # train mode: the batch statistics the model was fitted with
    assert (t - x).norm(dim=-1).max() < 0.1  # metres
    assert g.torch_rotation_error_deg(r, q).max() < 5.0  # degrees


def test_batchnorm_momentum_is_set_on_every_layer():
    """torchvision's MobileNetV3 uses momentum 0.01: after a short run its running statistics are
    still near their initial values and eval mode answers one pose for every image. The backbone
    sets 0.1 by default; None keeps torchvision's."""
    def momenta(net):
        return {m.momentum for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    assert momenta(M.build_model("posenet", backbone="mobilenet_v3_small")) == {0.1}
    assert momenta(M.build_model("posenet", backbone="mobilenet_v3_small", bn_momentum=None)) == {0.01}
    assert momenta(M.build_model("menet", backbone="resnet18", bn_momentum=0.3)) == {0.3}
    model = M.build_model("mapnet", backbone="mobilenet_v3_small", bn_momentum=0.2)
    assert momenta(M.build_model(**model.config)) == {0.2}  # the config round-trips it
    with pytest.raises(ValueError, match="bn_momentum"):
        M.build_model("posenet", backbone="mobilenet_v3_small", bn_momentum=0.0)


def test_eval_mode_predictions_depend_on_the_image_after_recalibration():
    """A few dozen training steps in train mode, then eval mode: with the trailing running statistics
    the poses barely depend on the image; after :func:`campose.train.recalibrate_batchnorm` eval
    mode answers like train mode on the same batch."""
    from campose.train import recalibrate_batchnorm

    class Items(list):
        transform = None

    torch.manual_seed(0)
    model = M.build_model("posenet", backbone="mobilenet_v3_small")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, x = torch.randn(16, 3, 48, 64), torch.randn(16, 3)
    model.train()
    for _ in range(40):
        t, _ = model(images)
        loss = (t - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        t_train, _ = model(images)  # train mode: the batch's own statistics
    t_before, _ = model.predict_pose(images)
    assert t_before.std(0).max() < 0.1 * t_train.std(0).max()  # the problem this fixes
    model.eval()
    assert recalibrate_batchnorm(model, Items((img,) for img in images), batch_size=16) == 16
    assert not model.training  # the mode is restored
    t_after, _ = model.predict_pose(images)
    # not equal to train mode's answers (dropout is off in eval mode), but as spread and as close
    assert (t_after.std(0) > 0.5 * t_train.std(0)).all()
    assert (t_after - x).abs().mean() < 2 * (t_train - x).abs().mean()
