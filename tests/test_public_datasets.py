"""Readers of 7-Scenes and Cambridge Landmarks: the real 7-Scenes sample, synthetic scenes, malformed files."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from campose.camera import Intrinsics
from campose.dataset import DatasetError, PoseDataset
from campose.geometry import camera_rotation, pose_to_matrix, rotation_error_deg
from campose.public_datasets import (CAMBRIDGE_APPROX_INTRINSICS, MissingFramesWarning, cambridge_to_pose,
                                     load_7scenes, load_cambridge, nearest_rotation, pose_to_cambridge,
                                     read_7scenes_pose)

SAMPLE = Path("/work/shared/data/real/7scenes-stairs-sample")


@pytest.fixture
def sample():
    if not (SAMPLE / "TrainSplit.txt").is_file():
        pytest.skip(f"7-Scenes sample not found at {SAMPLE}")
    return SAMPLE


def wxyz(r: Rotation) -> np.ndarray:
    q = r.as_quat()[..., [3, 0, 1, 2]]
    return q * np.where(q[..., :1] < 0, -1, 1)


# ---------------------------------------------------------------------------- the real 7-Scenes sample
def test_sample_splits_and_frames(sample):
    for split, names in (("train", ["seq-02", "seq-03"]), ("test", ["seq-01", "seq-04"])):
        with warnings.catch_warnings():
            warnings.simplefilter("error", MissingFramesWarning)  # the sample has every colour frame
            seqs = load_7scenes(sample, split)
        assert [s.name for s in seqs] == names
        for s in seqs:
            poses = sorted((sample / s.name).glob("frame-*.pose.txt"))
            absent = [p for p in poses if not any((sample / s.name / p.name.replace("pose.txt", f"color.{e}")).is_file()
                                                  for e in ("png", "jpg"))]
            assert len(s) == len(poses) - len(absent) == 3 and s.meta["skipped_frames"] == []
            assert s.split == split and s.meta["frames"] == [0, 1, 2]
            assert s.intrinsics == Intrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)


def test_sample_pose_round_trip(sample):
    for s in load_7scenes(sample, "test"):
        assert np.all(s.q[:, 0] >= 0) and np.allclose(np.linalg.norm(s.q, axis=1), 1)
        for k, name in enumerate(s.images):
            T = np.loadtxt(sample / s.name / name.replace("color.jpg", "pose.txt"))
            back = pose_to_matrix(s.x[k], s.q[k])
            assert np.allclose(back[:3, 3], T[:3, 3], atol=1e-9) and np.array_equal(back[3], T[3])
            # the published rotations shrink by ~5e-5 (not orthonormal): we keep the nearest rotation
            assert np.allclose(back[:3, :3], nearest_rotation(T[:3, :3]), atol=1e-6)
            assert np.abs(back[:3, :3] - T[:3, :3]).max() < 2e-4
            assert rotation_error_deg(s.q[k], wxyz(Rotation.from_matrix(T[:3, :3]))) < 0.01
        assert 1e-6 < s.meta["rotation_deviation_max"] < 1e-3


def test_sample_images_load(sample):
    seqs = load_7scenes(sample, "train")
    img = seqs[0].load_image(0)
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8 and img.std() > 5
    ds = PoseDataset(seqs, size=(64, 48))
    t, x, q, k = ds[4]
    assert tuple(t.shape) == (3, 48, 64) and np.allclose(x.numpy(), seqs[1].x[1])


# ---------------------------------------------------------------------------- synthetic 7-Scenes
def poses(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 3)), wxyz(Rotation.random(n, random_state=seed))


def write_matrix(path, T):
    # the dataset's own style: scientific notation, tabs, CRLF
    path.write_text("".join("\t".join(f" {v:.7e}" for v in row) + "\t\r\n" for row in T))


def make_7scenes(root, n=4, absent=(), train=(1, 2), test=(3,)):
    (root / "TrainSplit.txt").write_text("".join(f"sequence{i}\r\n" for i in train))
    (root / "TestSplit.txt").write_text("".join(f"sequence{i}\r\n" for i in test))
    truth = {}
    for i in (*train, *test):
        folder = root / f"seq-{i:02d}"
        folder.mkdir()
        x, q = poses(n, seed=i)
        truth[folder.name] = (x, q)
        for k in range(n):
            write_matrix(folder / f"frame-{k:06d}.pose.txt", pose_to_matrix(x[k], q[k]))
            if (folder.name, k) not in absent:
                Image.fromarray(np.full((24, 32, 3), 10 * k, np.uint8)).save(folder / f"frame-{k:06d}.color.png")
    return truth


def test_synthetic_7scenes(tmp_path):
    truth = make_7scenes(tmp_path, absent={("seq-02", 1), ("seq-02", 3)})
    with pytest.warns(MissingFramesWarning, match="2 frame"):
        train = load_7scenes(tmp_path, "train")
    assert [s.name for s in train] == ["seq-01", "seq-02"] and [len(s) for s in train] == [4, 2]
    s = train[1]
    assert s.meta["skipped_frames"] == ["seq-02/frame-000001", "seq-02/frame-000003"] and s.meta["frames"] == [0, 2]
    x, q = truth["seq-02"]
    assert np.allclose(s.x, x[[0, 2]], atol=1e-6) and np.all(rotation_error_deg(s.q, q[[0, 2]]) < 1e-4)
    assert s.image_path(1) == tmp_path / "seq-02" / "frame-000002.color.png"
    assert s.load_image(1)[0, 0, 0] == 20
    # intrinsics follow the images' size (585 px at 640x480 -> 29.25 px at 32x24)
    assert s.intrinsics.width == 32 and s.intrinsics.fx == pytest.approx(29.25)
    K = Intrinsics.from_fov(32, 24)
    (test,) = load_7scenes(tmp_path, "test", intrinsics=K)
    assert test.name == "seq-03" and test.intrinsics == K and test.meta["intrinsics"] == "given"


def test_noisy_rotation_is_reorthonormalised(tmp_path):
    R = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3] = R * (1 - 3e-4) + 1e-4 * np.random.default_rng(0).normal(size=(3, 3))
    T[:3, 3] = [1, 2, 3]
    write_matrix(tmp_path / "p.txt", T)
    out, dev = read_7scenes_pose(tmp_path / "p.txt")
    assert 1e-4 < dev < 1e-2 and np.allclose(out[:3, :3].T @ out[:3, :3], np.eye(3), atol=1e-12)
    assert np.abs(out[:3, :3] - R).max() < 1e-3 and np.array_equal(out[:3, 3], [1, 2, 3])


@pytest.mark.parametrize("text, message", [
    ("1 0 0 0\n0 1 0 0\n0 0 1\n0 0 0 1\n", r"line 3: expected 4 numbers, got 3"),
    ("1 0 0 0\n0 1 0 zero\n0 0 1 0\n0 0 0 1\n", r"line 2: non-numeric"),
    ("1 0 0 0\n0 1 0 0\n0 0 1 nan\n0 0 0 1\n", r"line 3: pose values must be finite"),
    ("1.1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", r"lines 1-3: the rotation is not orthonormal"),
    ("-1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", r"det = -1"),
    ("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n", r"line 4: the last row must be 0 0 0 1"),
    ("1 0 0 0\n0 1 0 0\n0 0 1 0\n", r"4 rows\), got 3"),
])
def test_malformed_7scenes_pose(tmp_path, text, message):
    make_7scenes(tmp_path, n=2, train=(1,), test=(2,))
    bad = tmp_path / "seq-01" / "frame-000001.pose.txt"
    bad.write_text(text)
    with pytest.raises(DatasetError, match=message) as e:
        load_7scenes(tmp_path, "train")
    assert str(bad) in str(e.value)


def test_7scenes_split_errors(tmp_path):
    make_7scenes(tmp_path, n=2, train=(1,), test=(2,))
    with pytest.raises(ValueError, match="split must be one of"):
        load_7scenes(tmp_path, "val")
    (tmp_path / "TestSplit.txt").unlink()
    with pytest.raises(DatasetError, match="split file not found: .*TestSplit.txt"):
        load_7scenes(tmp_path, "test")
    (tmp_path / "TrainSplit.txt").write_text("sequence1\nseq 2\n")
    with pytest.raises(DatasetError, match=r"TrainSplit.txt, line 2: expected a line like 'sequence1'"):
        load_7scenes(tmp_path, "train")
    (tmp_path / "TrainSplit.txt").write_text("sequence1\nsequence7\n")
    with pytest.raises(DatasetError, match="names seq-07, but .* is not a folder"):
        load_7scenes(tmp_path, "train")
    (tmp_path / "seq-07").mkdir()
    with pytest.raises(DatasetError, match="seq-07: no frame-NNNNNN.pose.txt files"):
        load_7scenes(tmp_path, "train")


# ---------------------------------------------------------------------------- Cambridge Landmarks
HEADER = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"


def write_cambridge(root, split, rows):
    lines = [f"{n} {' '.join(f'{v:.9f}' for v in (*c, *qcw))}" for n, c, qcw in rows]
    (root / f"dataset_{split}.txt").write_text(HEADER + "\n".join(lines) + "\n")


def test_cambridge_world_to_camera_quaternion(tmp_path):
    """A camera at c looking at a landmark P: the file holds R_cw (scipy, independently of campose);
    the loader must return the known camera-to-world pose, and R_cw (P - c) must lie on the optical axis."""
    c = np.array([3.0, -2.0, 1.5])
    P = np.array([10.0, 5.0, 4.0])
    d = P - c
    yaw, pitch = np.arctan2(d[1], d[0]), np.arcsin(d[2] / np.linalg.norm(d))
    q_c2w = camera_rotation(yaw, pitch, 0.3)  # our convention, the known truth
    R_c2w = Rotation.from_quat(q_c2w[[1, 2, 3, 0]]).as_matrix()
    q_cw = wxyz(Rotation.from_matrix(R_c2w.T))  # what VisualSFM stores
    assert np.allclose(R_c2w.T @ d / np.linalg.norm(d), [0, 0, 1], atol=1e-9)
    (tmp_path / "seq1").mkdir()
    Image.fromarray(np.zeros((27, 48, 3), np.uint8)).save(tmp_path / "seq1" / "frame00001.png")
    write_cambridge(tmp_path, "train", [("seq1/frame00001.png", c, q_cw)])
    (s,) = load_cambridge(tmp_path, "train")
    assert np.allclose(s.x[0], c) and rotation_error_deg(s.q[0], q_c2w) < 1e-5 and s.q[0, 0] >= 0
    # and back to the file's format
    c2, q2 = pose_to_cambridge(s.x[0], s.q[0])
    assert np.allclose(c2, c) and rotation_error_deg(q2, q_cw) < 1e-5
    # approximate intrinsics, rescaled to the 48x27 images
    assert s.meta["intrinsics"].startswith("approximate") and s.intrinsics.width == 48
    assert s.intrinsics.fx == pytest.approx(CAMBRIDGE_APPROX_INTRINSICS.fx * 48 / 852)


def test_cambridge_sequences_and_missing_images(tmp_path):
    x, q = poses(6, seed=3)
    names = ["seq10/frame00002.png", "seq2/frame00002.png", "seq2/frame00001.png", "seq10/frame00001.png",
             "seq2/frame00003.png", "seq10/frame00009.png"]
    for n in names[:5]:  # the last image is absent
        (tmp_path / n).parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((9, 16, 3), np.uint8)).save(tmp_path / n)
    rows = [(n, *pose_to_cambridge(x[k], q[k])) for k, n in enumerate(names)]
    write_cambridge(tmp_path, "test", rows)
    K = Intrinsics.from_fov(16, 9)
    with pytest.warns(MissingFramesWarning, match="1 frame"):
        seqs = load_cambridge(tmp_path, "test", intrinsics=K)
    assert [s.name for s in seqs] == ["seq2", "seq10"] and all(s.split == "test" and s.intrinsics == K for s in seqs)
    assert seqs[0].images == ["frame00001.png", "frame00002.png", "frame00003.png"]
    assert seqs[1].images == ["frame00001.png", "frame00002.png"] and seqs[1].meta["skipped_frames"] == [names[5]]
    assert seqs[0].image_path(0) == tmp_path / "seq2" / "frame00001.png" and seqs[0].load_image(0).shape == (9, 16, 3)
    assert np.allclose(seqs[0].x, x[[2, 1, 4]], atol=1e-8) and np.all(rotation_error_deg(seqs[0].q, q[[2, 1, 4]]) < 1e-5)


def test_cambridge_to_pose_inverts():
    c, q = poses(5, seed=9)
    x2, q2 = cambridge_to_pose(*pose_to_cambridge(c, q))
    assert np.allclose(x2, c) and np.allclose(q2, q)


@pytest.mark.parametrize("body, message", [
    ("seq1/frame00001.png 1 2 3 1 0 0\n", r"line 4: expected 8 columns"),
    ("seq1/frame00001.png 1 2 3 1 0 0 0\nseq1/frame00002.png 1 2 x 1 0 0 0\n", r"line 5: non-numeric"),
    ("seq1/frame00001.png 1 2 3 2 0 0 0\n", r"line 4: quaternion W P Q R is not unit length"),
    ("seq1/frame00001.png 1 inf 3 1 0 0 0\n", r"line 4: pose values must be finite"),
    ("", "no poses"),
])
def test_malformed_cambridge(tmp_path, body, message):
    (tmp_path / "dataset_train.txt").write_text(HEADER + body)
    with pytest.raises(DatasetError, match=message):
        load_cambridge(tmp_path, "train")


def test_cambridge_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="Cambridge pose file not found: .*dataset_test.txt"):
        load_cambridge(tmp_path, "test")
    (tmp_path / "dataset_train.txt").write_text("Visual Landmark Dataset V1\n")
    with pytest.raises(DatasetError, match="three header lines"):
        load_cambridge(tmp_path, "train")
    write_cambridge(tmp_path, "train", [("seq1/frame00001.png", [0, 0, 0], [1, 0, 0, 0])])
    with pytest.warns(MissingFramesWarning), pytest.raises(DatasetError, match="none of the 1 images"):
        load_cambridge(tmp_path, "train")
