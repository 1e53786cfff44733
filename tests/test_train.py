"""The trainer: validation split, seeding, overfitting, checkpoints, NaN and divergence, MapNet/MeNet.

Tiny synthetic walks (32x24 noise images, ``tiny_sequence`` in conftest.py) and a small
mobilenet_v3_small with a 32-unit head keep every run to a second or so on a shared 2-core CPU.
"""

import math
import os
import warnings

import numpy as np
import pytest
import torch

from campose import losses
from campose import train as T
from campose.evaluate import predict
from campose.models import translation_stats

TIMING = ("seconds", "samples_per_s")


def tiny_config(**changes) -> T.TrainConfig:
    base = dict(backbone="mobilenet_v3_small", hidden=(32,), image_size=(32, 24), batch_size=4, epochs=2, lr=1e-3,
                val_fraction=0.2, num_threads=1)
    return T.TrainConfig(**{**base, **changes})


@pytest.fixture
def walks(tiny_sequence):
    return [tiny_sequence("walk-a", 12, seed=1), tiny_sequence("walk-b", 10, seed=2)]


def untimed(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


# ---------------------------------------------------------------------------- validation split
def test_validation_is_a_contiguous_tail_of_each_sequence(walks):
    train, val = T.split_validation(walks, 0.25, gap=1)
    for s, tr, va in zip(walks, train, val):
        n_val = round(0.25 * len(s))
        assert va.images == s.images[-n_val:] and tr.images == s.images[:len(s) - n_val - 1]
        assert not set(tr.images) & set(va.images)
        assert np.array_equal(va.x, s.x[-n_val:]) and np.array_equal(tr.q, s.q[:len(tr)])
        assert va.meta["frames"] == [len(s) - n_val, len(s)] and va.split == "val" and tr.split == "train"
        assert va.image_path(0) == s.image_path(len(s) - n_val)
    train, val = T.split_validation(walks, 0.0)
    assert val == [] and [t.images for t in train] == [s.images for s in walks]
    assert [len(v) for v in T.split_validation(walks, 0.01)[1]] == [1, 1]  # at least one frame each
    with pytest.raises(ValueError, match="too few"):
        T.split_validation(walks, 0.5, gap=8)


def test_training_uses_only_the_training_part_and_refuses_test_walks(walks, tiny_sequence):
    res = T.train(tiny_config(epochs=1), walks, progress=False)
    assert res.split == {"walk-a": {"train": [0, 10], "val": [10, 12]}, "walk-b": {"train": [0, 8], "val": [8, 10]}}
    # the translation statistics come from the training frames alone
    train_x = np.concatenate([walks[0].x[:10], walks[1].x[:8]])
    assert np.allclose(res.normalisation["translation_mean"], translation_stats(train_x)["translation_mean"])
    with pytest.raises(ValueError, match="test sequences are never used"):
        T.train(tiny_config(), walks + [tiny_sequence("walk-t", 6, split="test")], progress=False)


# ---------------------------------------------------------------------------- reproducibility
def test_seeded_runs_have_identical_histories(walks):
    cfg = tiny_config(epochs=2, augment=True, hue=0.05)
    a, b = (T.train(cfg, walks, progress=False) for _ in range(2))
    assert untimed(a.history) == untimed(b.history)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(p, q)
    c = T.train(tiny_config(epochs=2, augment=True, hue=0.05, seed=1), walks, progress=False)
    assert untimed(c.history) != untimed(a.history)


def test_colour_jitter_changes_colours_not_geometry():
    img = torch.zeros(3, 8, 8)
    img[:, :, 4:] = 1.0  # dark left half, bright right half (normalised units)
    jitter = T.ColourJitter(0.4, 0.4, 0.4, 0.05, seed=3)
    out = [jitter(img) for _ in range(5)]
    assert all(o.shape == img.shape for o in out) and any(not torch.allclose(o, img, atol=1e-3) for o in out)
    for o in out:  # the edge stays where it was: every right pixel brighter than every left one
        assert o[:, :, 4:].mean(0).min() > o[:, :, :4].mean(0).max()
    again = T.ColourJitter(0.4, 0.4, 0.4, 0.05, seed=3)
    assert all(torch.equal(o, again(img)) for o in out)
    assert torch.allclose(T.ColourJitter(0, 0, 0, 0)(img), img, atol=1e-5)


def test_colour_jitter_on_a_batch_is_torchvision_image_by_image():
    import torchvision.transforms.functional as TF

    from campose.dataset import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    imgs = (torch.rand(5, 3, 6, 8, generator=torch.Generator().manual_seed(0)) - mean) / std
    out = T.ColourJitter(0.4, 0.3, 0.5, 0.05, seed=7)(imgs)
    f, h = T.ColourJitter(0.4, 0.3, 0.5, 0.05, seed=7).factors(5)  # the same draws
    assert ((f - 1).abs() <= torch.tensor([0.4, 0.3, 0.5])).all() and (h.abs() <= 0.05).all()
    for k in range(5):
        ref = (imgs[k] * std + mean).clamp(0, 1)
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(ref, float(f[k, 0])), float(f[k, 1])),
                                   float(f[k, 2]))
        ref = (TF.adjust_hue(ref, float(h[k])) - mean) / std
        assert torch.allclose(out[k], ref, atol=1e-5)
    # a stack of two images (MeNet's 6 channels): each image its own factors, as two images in a row
    stacked = T.ColourJitter(0.4, 0.3, 0.5, 0.05, seed=7)(imgs[:4].reshape(2, 6, 6, 8))
    four = T.ColourJitter(0.4, 0.3, 0.5, 0.05, seed=7)(imgs[:4])
    assert torch.allclose(stacked.reshape(4, 3, 6, 8), four, atol=1e-6)
    assert not torch.allclose(four[0], four[1] - imgs[1] + imgs[0], atol=1e-3)  # not one jitter for the pair
    # per_stack (the trainer's choice for MeNet): one draw per stack, the same factors for both images
    pair = T.ColourJitter(0.4, 0.3, 0.5, 0.05, seed=7, per_stack=True)(imgs[:4].reshape(2, 6, 6, 8)).reshape(4, 3, 6, 8)
    f2, h2 = T.ColourJitter(0.4, 0.3, 0.5, 0.05, seed=7).factors(2)
    for k in range(4):
        ref = (imgs[k] * std + mean).clamp(0, 1)
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(ref, float(f2[k // 2, 0])),
                                                      float(f2[k // 2, 1])), float(f2[k // 2, 2]))
        ref = (TF.adjust_hue(ref, float(h2[k // 2])) - mean) / std
        assert torch.allclose(pair[k], ref, atol=1e-5)
    same = T.ColourJitter(0.4, 0.3, 0.5, seed=1, per_stack=True)(torch.cat([imgs[:2], imgs[:2]], 1))
    assert torch.allclose(same[:, :3], same[:, 3:], atol=1e-6)  # two equal images stay equal
    with pytest.raises(ValueError, match="3k, H, W"):
        T.ColourJitter()(torch.zeros(2, 4, 6, 8))


# ---------------------------------------------------------------------------- learning
def test_a_tiny_posenet_overfits_a_handful_of_images(tiny_sequence):
    walk = tiny_sequence("walk", 9, seed=5)
    cfg = tiny_config(hidden=(64,), dropout=0.0, epochs=30, batch_size=8, lr=3e-3, loss="mse", val_fraction=0.1,
                      augment=False, patience=None)
    res = T.train(cfg, [walk], progress=False)
    losses_ = [r["train_loss"] for r in res.history]
    assert res.status == "completed" and len(losses_) == 30
    assert losses_[-1] < losses_[0] / 50, losses_


def test_early_stopping_and_time_limit(walks, monkeypatch):
    flat = {"val_loss": 1.0, "val_position_m": 1.0, "val_rotation_deg": 10.0}  # a validation that never improves
    with monkeypatch.context() as m:
        m.setattr(T._AbsoluteTask, "validate", lambda self, model, loss, device: dict(flat))
        res = T.train(tiny_config(epochs=6, patience=2), walks, progress=False)
    assert res.status == "early_stopped" and len(res.history) == 3 and res.best_epoch == 1
    res = T.train(tiny_config(epochs=6, max_minutes=1e-6), walks, progress=False)
    assert res.status == "time_limit" and len(res.history) == 1


def test_select_last_and_cosine_schedule(walks, monkeypatch):
    flat = {"val_loss": 1.0, "val_position_m": 1.0, "val_rotation_deg": 10.0}  # validation would pick epoch 1
    with monkeypatch.context() as m:
        m.setattr(T._AbsoluteTask, "validate", lambda self, model, loss, device: dict(flat))
        res = T.train(tiny_config(epochs=4, patience=2, select_by="last", lr_schedule="cosine"), walks, progress=False)
    assert res.status == "completed" and res.best_epoch == 4 and len(res.history) == 4  # no early stop either
    lrs = [row["lr"] for row in res.history]
    np.testing.assert_allclose(lrs, [1e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    const = T.train(tiny_config(epochs=2), walks, progress=False)
    assert [row["lr"] for row in const.history] == [1e-3, 1e-3]
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        tiny_config(lr_schedule="step")


@pytest.mark.parametrize("kind", ["mapnet", "menet", "menet_siamese", "menet_corr"])
def test_mapnet_and_menet_train(walks, kind, monkeypatch):
    seen = []
    if kind == "mapnet":  # the relative terms pair neighbours inside each window of 3
        original = losses.MapNetLoss.terms
        monkeypatch.setattr(losses.MapNetLoss, "terms",
                            lambda self, *a: seen.append(a[-1].tolist()) or original(self, *a))
    res = T.train(tiny_config(kind=kind, epochs=2, batch_size=6, learn_weights=True), walks, progress=False)
    assert res.status == "completed" and res.best_epoch is not None
    row = res.history[-1]
    assert all(math.isfinite(row[k]) for k in ("train_loss", "val_loss", "val_position_m", "val_rotation_deg"))
    assert {"s_x", "s_q"} <= set(row)
    if kind == "mapnet":
        assert {"train_rel_translation", "train_rel_rotation", "s_x_rel", "s_q_rel"} <= set(row)
        assert [[0, 1], [1, 2], [3, 4], [4, 5]] in seen
    else:  # MeNet: the statistics are those of relative translations (a few metres at most)
        assert "val_direction_deg" in row and max(res.normalisation["translation_std"]) < 5


# ---------------------------------------------------------------------------- NaN and divergence
def nan_from_epoch(monkeypatch, epoch: int, batches_per_epoch: int, factor=math.nan):
    """Make PoseLoss return ``factor`` times its value (NaN by default) from ``epoch`` on."""
    calls = {"n": 0}
    original = losses.PoseLoss.forward

    def forward(self, *a):
        calls["n"] += torch.is_grad_enabled()  # training batches; validation runs without gradients
        value = original(self, *a)
        return value * factor if calls["n"] > (epoch - 1) * batches_per_epoch else value

    monkeypatch.setattr(losses.PoseLoss, "forward", forward)


def test_a_nan_loss_stops_the_run_and_is_recorded(walks, monkeypatch, tmp_path):
    nan_from_epoch(monkeypatch, 3, batches_per_epoch=5)  # 18 training frames, batches of 4: 5 batches
    with pytest.warns(T.TrainingWarning, match="epoch 3, batch 1: the training loss is nan"):
        res = T.train(tiny_config(epochs=8), walks, out_path=tmp_path / "nan.pt", progress=False)
    assert res.status == "nan" and res.failed and res.stopped_epoch == 3 and len(res.history) == 3
    assert math.isnan(res.final_loss) and math.isnan(res.history[-1]["val_position_m"])
    assert res.best_epoch in (1, 2) and all(torch.isfinite(p).all() for p in res.model.parameters())
    model, info = T.load_checkpoint(tmp_path / "nan.pt")
    assert info["status"] == "nan" and math.isnan(info["history"][-1]["train_loss"])


def test_a_diverging_loss_stops_the_run(walks, monkeypatch):
    nan_from_epoch(monkeypatch, 2, batches_per_epoch=5, factor=1e3)
    with pytest.warns(T.TrainingWarning, match="diverged"):
        res = T.train(tiny_config(epochs=8), walks, progress=False)
    assert res.status == "diverged" and res.stopped_epoch == 2 and len(res.history) == 2 and res.best_epoch == 1


def test_a_huge_learning_rate_really_fails(walks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", T.TrainingWarning)
        res = T.train(tiny_config(epochs=10, lr=100.0, loss="mse"), walks, progress=False)
    assert res.status in T.FAILED and len(res.history) < 10 and res.stopped_epoch == len(res.history)


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(walks, tmp_path):
    path = tmp_path / "ckpt" / "posenet.pt"
    res = T.train(tiny_config(kind="mapnet", epochs=2), walks, out_path=path, progress=False, meta={"labels": "truth"})
    assert res.checkpoint == path and path.is_file()
    model, info = T.load_checkpoint(path)
    assert not model.training
    trained = {k: v.cpu() for k, v in res.model.state_dict().items()}
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())  # bit for bit
    # the same weights on the same device predict the same (the trained model stays where it trained:
    # on a GPU, comparing it with the CPU copy would compare two arithmetics; seen on an H200)
    device = next(res.model.parameters()).device
    x0, q0 = predict(res.model, walks, (32, 24))
    x1, q1 = predict(model.to(device), walks, (32, 24))
    if device.type == "cpu":
        assert np.array_equal(x0, x1) and np.array_equal(q0, q1)
    else:
        np.testing.assert_allclose(x1, x0, atol=1e-6) and np.testing.assert_allclose(q1, q0, atol=1e-6)
    raw = torch.load(path, weights_only=True)  # plain values and tensors only
    assert raw["format"] == T.CHECKPOINT_FORMAT and set(raw["model_state"]) == set(model.state_dict())
    assert untimed(info["history"]) == untimed(res.history) and info["best_epoch"] == res.best_epoch
    assert T.TrainConfig.from_dict(info["train_config"]) == res.config
    assert info["normalisation"] == res.normalisation and info["loss_config"]["kind"] == "mapnet"
    assert info["meta"] == {"labels": "truth"} and info["model_config"] == model.config
    again = T.TrainResult.from_checkpoint(path)
    assert again.status == res.status and again.split == res.split


def test_bad_checkpoints_give_clear_errors(walks, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        T.load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    T.train(tiny_config(epochs=1), walks, out_path=good, progress=False)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("cut.pt", "text.pt"):
        with pytest.raises(T.CheckpointError, match="cannot read checkpoint"):
            T.load_checkpoint(tmp_path / name)
    with pytest.raises(T.CheckpointError, match="not a torch file.*starts with b'not '"):
        T.load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(T.CheckpointError, match="not a campose checkpoint"):
        T.load_checkpoint(tmp_path / "other.pt")


def test_checkpoints_are_written_atomically(walks, tmp_path, monkeypatch):
    res = T.train(tiny_config(epochs=1), walks, progress=False)
    out = tmp_path / "out"
    path = out / "model.pt"
    T.save_checkpoint(path, res.model, **res.info())
    before = path.read_bytes()

    def failing_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(path, res.model, **res.info())
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(out / "new.pt", res.model, **res.info())
    assert path.read_bytes() == before and sorted(os.listdir(out)) == ["model.pt"]
    with pytest.raises(TypeError, match="cannot be stored"):
        T.save_checkpoint(tmp_path / "x.pt", res.model, extra=object())


def test_train_cached_loads_instead_of_training(walks, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=1)
    first = T.train_cached(cfg, walks, tmp_path / "run", key_extra="labels-v1", progress=False)
    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("trained again"))
    again = T.train_cached(cfg, walks, tmp_path / "run", key_extra="labels-v1", progress=False)
    assert untimed(again.history) == untimed(first.history) and again.checkpoint == tmp_path / "run" / "model.pt"
    with pytest.raises(pytest.fail.Exception):
        T.train_cached(cfg, walks, tmp_path / "run", key_extra="labels-v2", progress=False)


# ---------------------------------------------------------------------------- configuration
def test_config_errors_and_device_choice(monkeypatch):
    for bad, msg in [(dict(kind="posenet2"), "unknown model kind"), (dict(loss="huber"), "unknown loss"),
                     (dict(batch_size=1), "batch_size"), (dict(val_fraction=1.0), "val_fraction"),
                     (dict(select_by="median"), "select_by"), (dict(image_size=(4, 3)), "image_size")]:
        with pytest.raises(ValueError, match=msg):
            tiny_config(**bad)
    cfg = tiny_config(hidden=[16, 8])
    assert cfg.hidden == (16, 8) and T.TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        T.TrainConfig.from_dict({"kind": "posenet", "momentum": 0.9})
    assert T.choose_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert T.choose_device().type == "cpu"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert T.cpu_threads() == 1 and T.cpu_threads(3) == 3
