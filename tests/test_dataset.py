"""Sequences on disk: round trips, validation, atomic writes, the torch dataset, the render stage."""

import numpy as np
import pytest

from campose.camera import Intrinsics
from campose.dataset import DatasetError, PoseDataset, load_sequence, read_poses, write_sequence
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
