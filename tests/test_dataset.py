"""Sequences on disk: round trips, validation, atomic writes, the torch dataset, the render stage."""

import numpy as np
import pytest

from campose.camera import Intrinsics
from campose.dataset import (DatasetError, ImageCache, PairDataset, PoseDataset, Sequence, WindowBatchSampler,
                             image_to_tensor, images_to_tensor, load_sequence, read_poses, read_rgb,
                             sequence_windows, write_sequence)
from campose.geometry import camera_rotation

K = Intrinsics.from_fov(64, 48)


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def poses(n):
    x = np.column_stack([np.linspace(0, 1, n), np.zeros(n), np.full(n, 1.6)])
    return x, camera_rotation(np.linspace(0, 1, n))


def test_round_trip(tmp_path):
    x, q = poses(5)
    imgs = frames(5)
    seq = write_sequence(tmp_path / "s", imgs, x, q, K, meta={"split": "test"})
    again = load_sequence(tmp_path / "s")
    assert again.split == "test" and len(again) == 5 and again.intrinsics == K
    assert np.allclose(again.x, x, atol=1e-8) and np.allclose(again.q, q, atol=1e-8)
    assert np.array_equal(again.load_image(3), imgs[3])
    assert seq.images == again.images


def test_read_rgb_gives_uint8_rgb_for_every_pixel_format(tmp_path):
    from PIL import Image

    rgb = frames(1)[0]
    grey16 = np.array([[0, 257, 65535], [32896, 1000, 50000]], np.uint16)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    files = {"rgb.png": Image.fromarray(rgb), "rgba.png": Image.fromarray(rgba),
             "grey16.png": Image.fromarray(grey16), "grey.png": Image.fromarray(rgb[:, :, 0])}
    for name, im in files.items():
        im.save(tmp_path / name)
    for name in files:
        out = read_rgb(tmp_path / name)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, name
    assert np.array_equal(read_rgb(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(read_rgb(tmp_path / "rgba.png"), rgb)  # alpha dropped
    assert np.array_equal(read_rgb(tmp_path / "grey.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    # 16-bit grey is scaled to 8 bits (PIL's own conversion clips everything above 255 to white)
    assert read_rgb(tmp_path / "grey16.png")[:, :, 0].tolist() == [[0, 1, 255], [128, 4, 195]]
    with pytest.raises(FileNotFoundError):
        read_rgb(tmp_path / "missing.png")


def test_failed_write_leaves_nothing(tmp_path):
    x, q = poses(4)

    def broken():
        yield from frames(2)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_sequence(tmp_path / "s", broken(), x, q, K)
    assert list(tmp_path.iterdir()) == []


def test_wrong_image_count(tmp_path):
    x, q = poses(4)
    with pytest.raises(ValueError, match="3 images for 4 poses"):
        write_sequence(tmp_path / "s", frames(3), x, q, K)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\n", "header"),
        ("image,x,y,z,qw,qx,qy,qz\nf.png,1,2,3,1,0,0\n", "expected 8 columns"),
        ("image,x,y,z,qw,qx,qy,qz\nf.png,1,2,3,1,0,0,zero\n", "non-numeric"),
        ("image,x,y,z,qw,qx,qy,qz\nf.png,1,2,3,2,0,0,0\n", "not unit length"),
        ("image,x,y,z,qw,qx,qy,qz\nf.png,1,nan,3,1,0,0,0\n", "finite"),
        ("image,x,y,z,qw,qx,qy,qz\n", "no poses"),
    ],
)
def test_bad_poses_csv(tmp_path, text, message):
    p = tmp_path / "poses.csv"
    p.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_poses(p)


def test_missing_image_is_reported(tmp_path):
    x, q = poses(3)
    write_sequence(tmp_path / "s", frames(3), x, q, K)
    (tmp_path / "s" / "images" / "000001.png").unlink()
    with pytest.raises(DatasetError, match="missing"):
        load_sequence(tmp_path / "s")


def test_quaternion_sign_is_canonical(tmp_path):
    p = tmp_path / "poses.csv"
    p.write_text("image,x,y,z,qw,qx,qy,qz\nf.png,1,2,3,-1,0,0,0\n")
    _, _, q = read_poses(p)
    assert np.allclose(q, [[1, 0, 0, 0]])


def test_torch_dataset(tmp_path):
    x, q = poses(6)
    seq = write_sequence(tmp_path / "s", frames(6), x, q, K)
    ds = PoseDataset([seq], size=(32, 24))
    img, xi, qi, k = ds[2]
    assert tuple(img.shape) == (3, 24, 32) and k == 2
    assert np.allclose(xi.numpy(), x[2]) and np.allclose(qi.numpy(), q[2], atol=1e-6)
    assert len(ds) == 6


def test_image_cache_stores_resized_images_once(tmp_path, monkeypatch):
    x, q = poses(6)
    seq = write_sequence(tmp_path / "s", frames(6), x, q, K)
    cache = ImageCache(tmp_path / "cache")
    plain = [PoseDataset([seq], (32, 24))[k][0] for k in range(6)]
    cached = [PoseDataset([seq], (32, 24), image_cache=tmp_path / "cache")[k][0] for k in range(6)]
    assert all(a.equal(b) for a, b in zip(plain, cached))  # the same pixels as decoding
    path = cache.path(seq, (32, 24))
    assert path.is_file() and np.load(path).shape == (6, 24, 32, 3)
    assert cache.images(seq, (64, 48)) is None  # already at that size: nothing to cache
    # a second dataset reads the file and decodes nothing
    monkeypatch.setattr(Sequence, "load_image", lambda self, i: (_ for _ in ()).throw(AssertionError("decoded")))
    again = PoseDataset([seq], (32, 24), image_cache=cache)
    assert all(again[k][0].equal(plain[k]) for k in range(6))
    monkeypatch.undo()
    # a changed image is a new entry, never the stale one
    write_sequence(tmp_path / "s", frames(6, seed=1), x, q, K)
    seq = load_sequence(tmp_path / "s")
    assert cache.path(seq, (32, 24)) != path
    assert not PoseDataset([seq], (32, 24), image_cache=cache)[0][0].equal(plain[0])
    # ... which replaces the stale one; other sequences' and sizes' entries stay
    other = write_sequence(tmp_path / "t", frames(6, seed=2), x, q, K)
    kept = [cache.path(other, (32, 24)), cache.path(seq, (16, 12))]
    cache.images(other, (32, 24))
    cache.images(seq, (16, 12))
    assert not path.exists()
    assert sorted(cache.folder.glob("*.npy")) == sorted([cache.path(seq, (32, 24)), *kept])


def test_render_stage_is_cached(tmp_path, monkeypatch):
    from campose import pipeline

    monkeypatch.setenv("CAMPOSE_DATA", str(tmp_path))
    spec = pipeline.SequenceSpec("tiny", "train", ("S-atrium", "atrium"), 3)
    monkeypatch.setitem(pipeline.SEQUENCES, "tiny", spec)
    prof = pipeline.profile_with("quick", name="tiny-profile", sequences=("tiny",), fps=2.0, render_size=(64, 48))
    seqs = pipeline.render_dataset(prof, progress=False)
    seq = seqs["tiny"]
    assert len(seq) > 3 and seq.split == "train"
    assert (tmp_path / "tiny-profile" / "render" / "stage.json").is_file()
    stamp = (seq.root / "poses.csv").stat().st_mtime_ns
    pipeline.render_dataset(prof, progress=False)  # cached: nothing rewritten
    assert (seq.root / "poses.csv").stat().st_mtime_ns == stamp
    # the truth written is the walk's truth: first pose sits at the route's start
    assert np.linalg.norm(seq.x[0, :2] - np.array([31.25, 7.25])) < 0.6


def test_stage_cache_checks_key_and_main_output(tmp_path):
    from campose import pipeline

    out = tmp_path / "stage"
    key = pipeline.content_key({"inputs": [1, 2]})
    assert key == pipeline.content_key({"inputs": [1, 2]}) != pipeline.content_key({"inputs": [2, 1]})
    assert not pipeline.stage_is_current(out, key)  # never built
    pipeline.mark_stage(out, key, {"rows": 3})
    assert pipeline.stage_is_current(out, key) and not pipeline.stage_is_current(out, "other")
    assert not pipeline.stage_is_current(out, key, needs="result/main.json")  # its output was removed
    (out / "result").mkdir()
    (out / "result" / "main.json").write_text("{}")
    assert pipeline.stage_is_current(out, key, needs="result/main.json")
    (out / "stage.json").write_text("{not json")
    assert not pipeline.stage_is_current(out, key)


def test_image_dir_defaults_to_images_folder(tmp_path):
    x, q = poses(2)
    seq = write_sequence(tmp_path / "s", frames(2), x, q, K)
    assert seq.image_dir is None and seq.image_path(1) == tmp_path / "s" / "images" / "000001.png"
    other = Sequence("o", tmp_path / "o", ["a.png"], x[:1], q[:1], K, image_dir=tmp_path / "s" / "images")
    assert other.image_path(0) == tmp_path / "s" / "images" / "a.png" and other.split == "train"


# ---------------------------------------------------------------------------- pairs and windows
def random_poses(n, seed):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    qs = Rotation.random(n, random_state=seed).as_quat()[:, [3, 0, 1, 2]]
    return rng.normal(0, 2, (n, 3)), qs * np.where(qs[:, :1] < 0, -1, 1)


@pytest.fixture
def two_sequences(tmp_path):
    """Two sequences (7 and 4 frames) with random poses and 16x12 images."""
    out = []
    for name, n, seed in (("a", 7, 1), ("b", 4, 2)):
        x, q = random_poses(n, seed)
        imgs = [np.full((12, 16, 3), 10 * k + (100 if name == "b" else 0), np.uint8) for k in range(n)]
        out.append(write_sequence(tmp_path / name, imgs, x, q, Intrinsics.from_fov(16, 12)))
    return out


def test_pairs_stay_in_a_sequence_within_the_gap(two_sequences):
    ds = PairDataset(two_sequences, (16, 12), max_gap=2, pairs_per_image=3, seed=0)
    seq_of = np.repeat([0, 1], [7, 4])
    i, j = ds.pairs.T
    assert np.all(seq_of[i] == seq_of[j]) and np.all((np.abs(i - j) >= 1) & (np.abs(i - j) <= 2))
    # every frame has min(3, neighbours within 2) partners, without repeats
    assert len(ds) == sum(min(3, min(k, 2) + min(n - 1 - k, 2)) for n in (7, 4) for k in range(n))
    assert len({tuple(p) for p in ds.pairs}) == len(ds)
    again = PairDataset(two_sequences, (16, 12), max_gap=2, pairs_per_image=3, seed=0)
    assert np.array_equal(again.pairs, ds.pairs)
    ds.resample(1)
    assert not np.array_equal(again.pairs, ds.pairs) and np.all(seq_of[ds.pairs[:, 0]] == seq_of[ds.pairs[:, 1]])


def test_pair_relative_pose_by_hand(two_sequences):
    from scipy.spatial.transform import Rotation

    ds = PairDataset(two_sequences, (16, 12), max_gap=3, pairs_per_image=2, seed=5)
    x = np.concatenate([s.x for s in two_sequences])
    q = np.concatenate([s.q for s in two_sequences])
    for k in range(len(ds)):
        img_i, img_j, t, qr, xi, qi, xj, qj, i, j = ds[k]
        Ri = Rotation.from_quat(q[i][[1, 2, 3, 0]])
        Rj = Rotation.from_quat(q[j][[1, 2, 3, 0]])
        t_hand = Ri.inv().apply(x[j] - x[i])
        q_hand = (Ri.inv() * Rj).as_quat()[[3, 0, 1, 2]]
        q_hand *= np.sign(q_hand[0])
        assert np.allclose(t.numpy(), t_hand, atol=1e-5) and np.allclose(qr.numpy(), q_hand, atol=1e-6)
        assert qr[0] >= 0 and np.allclose(xi.numpy(), x[i]) and np.allclose(qj.numpy(), q[j], atol=1e-7)
        assert tuple(img_i.shape) == (3, 12, 16) and tuple(img_j.shape) == (3, 12, 16)


def test_stacked_pairs_share_the_pose_cache(two_sequences):
    base = PoseDataset(two_sequences, (8, 6))
    ds = PairDataset(base, max_gap=1, seed=0, stacked=True, transform=lambda t: t * 0 + 1)
    assert ds.frames is base and ds.size == (8, 6)
    stack, t, qr, xi, qi, xj, qj, i, j = ds[0]
    assert tuple(stack.shape) == (6, 6, 8) and float(stack.min()) == float(stack.max()) == 1.0
    assert base._cache[i] is not None and base._cache[j] is not None  # filled through the pair dataset
    plain = PairDataset(base, seed=0)
    a, b = plain[0][:2]
    assert np.array_equal(base.raw_image(plain.pairs[0, 0]), base._cache[plain.pairs[0, 0]])
    assert not np.allclose(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="differs from the PoseDataset"):
        PairDataset(base, (16, 12))
    with pytest.raises(ValueError, match="size .* is required"):
        PairDataset(two_sequences)
    with pytest.raises(ValueError, match="no pairs"):
        PairDataset([write_sequence(two_sequences[0].root.parent / "one", frames(1), *poses(1), K)], (8, 6))


def test_images_to_tensor_keeps_the_arithmetic_the_models_were_trained_with():
    import torch

    from campose.dataset import IMAGENET_MEAN, IMAGENET_STD

    def trained_with(im):  # the per-image torch arithmetic of every checkpoint before 2026-11-27
        t = torch.from_numpy(np.array(im, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        return (t - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)

    rng = np.random.default_rng(3)
    for k in (1, 2):
        imgs = rng.integers(0, 256, (4, 5, 7, 3 * k), dtype=np.uint8)
        ref = torch.stack([torch.cat([trained_with(im[..., 3 * c:3 * c + 3]) for c in range(k)]) for im in imgs])
        out = images_to_tensor(imgs)
        assert out.shape == (4, 3 * k, 5, 7) and out.dtype == torch.float32
        assert torch.equal(out, ref)  # bit for bit: the book's checkpoints see the inputs they learnt on
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(image_to_tensor(imgs[0, ..., :3]), ref[0, :3])
    assert torch.equal(image_to_tensor(imgs[0, ..., :3], size=(7, 5)), ref[0, :3])  # already that size
    assert image_to_tensor(imgs[0, ..., :3], size=(14, 10)).shape == (3, 10, 14)
    for bad in (imgs.astype(np.float32), imgs[0], imgs[..., :4]):
        with pytest.raises(ValueError, match="uint8 \\(B, H, W, 3k\\)"):
            images_to_tensor(bad)
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        image_to_tensor(imgs[0])  # six channels


def test_batches_equal_stacked_items(tmp_path):
    import torch

    rng = np.random.default_rng(4)
    seqs = [write_sequence(tmp_path / n, [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(m)],
                           *random_poses(m, m), Intrinsics.from_fov(16, 12)) for n, m in (("a", 6), ("b", 5))]
    base = PoseDataset(seqs, (8, 6))
    idx = [7, 0, 10, 3, 3]
    img, x, q = base.batch(idx)
    items = [base[k] for k in idx]
    assert torch.equal(img, torch.stack([it[0] for it in items]))
    assert torch.equal(x, torch.stack([it[1] for it in items])) and torch.equal(q, torch.stack([it[2] for it in items]))
    for stacked in (True, False):
        pairs = PairDataset(base, max_gap=2, seed=1, stacked=stacked)
        k = np.arange(len(pairs))[::-1][:6]
        got, items = pairs.batch(k), [pairs[int(j)] for j in k]
        n_img = 1 if stacked else 2
        for a in range(n_img + 2):  # the images, t_rel, q_rel
            assert torch.equal(got[a], torch.stack([it[a] for it in items]))
    jittered = PairDataset(base, max_gap=2, seed=1, stacked=True, transform=lambda t: t * 0 + 1)
    assert float(jittered.batch([0, 1])[0].min()) == 1.0  # the per-image transform is applied


def test_sequence_windows(two_sequences):
    w = sequence_windows(two_sequences, window=3, stride=2, step=2)
    assert w == [[0, 2, 4], [2, 4, 6]]  # sequence b (4 frames) is shorter than a window's span of 5
    w = sequence_windows(PoseDataset(two_sequences, (8, 6)), window=2)
    assert w == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [7, 8], [8, 9], [9, 10]]
    with pytest.raises(ValueError, match="window >= 2"):
        sequence_windows(two_sequences, window=1)


def test_window_batch_sampler(two_sequences):
    import torch

    ds = PoseDataset(two_sequences, (8, 6))
    sampler = WindowBatchSampler(ds, window=3, windows_per_batch=2, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # 5 + 2 windows, 2 per batch
    seen = sorted(tuple(b[k:k + 3]) for b in batches for k in range(0, len(b), 3))
    assert seen == sorted(map(tuple, sequence_windows(ds, 3)))
    assert batches == list(sampler)  # deterministic within an epoch
    sampler.set_epoch(1)
    assert batches != list(sampler)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler)
    img, x, q, k = next(iter(loader))
    assert img.shape[0] % 3 == 0 and torch.all(k.view(-1, 3).diff(dim=1) == 1)
    assert len(WindowBatchSampler(ds, window=3, windows_per_batch=2, drop_last=True)) == 3
    with pytest.raises(ValueError, match="no sequence has the 9 frames"):
        WindowBatchSampler(ds, window=5, windows_per_batch=1, step=2)
