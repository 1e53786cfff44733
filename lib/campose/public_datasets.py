"""Readers for public relocalisation benchmarks, mapped onto :class:`campose.dataset.Sequence`.

Both readers return poses in the one campose convention (:mod:`campose.geometry`): camera-to-world,
centre ``x`` in the dataset's world frame (metres for 7-Scenes, the SfM model's units for Cambridge),
unit quaternion ``q`` = (w, x, y, z) with w >= 0 rotating camera axes (x right, y down, z forward)
into the world. Images stay where the dataset keeps them (``Sequence.image_dir``); nothing is copied.

* **7-Scenes** (Shotton et al., CVPR 2013): ``<scene>/seq-NN/frame-NNNNNN.color.png`` (or
  ``.color.jpg``), ``frame-NNNNNN.pose.txt`` (4x4 camera-to-world, metres), and ``TrainSplit.txt`` /
  ``TestSplit.txt`` with lines ``sequence1`` meaning ``seq-01``: :func:`load_7scenes`.
* **Cambridge Landmarks** (Kendall et al., ICCV 2015): ``<scene>/dataset_train.txt`` and
  ``dataset_test.txt``, three header lines, then ``seq1/frame00001.png X Y Z W P Q R``:
  :func:`load_cambridge`. The quaternion there is world-to-camera; see :func:`cambridge_to_pose`.

Frames whose image is absent are skipped with a :class:`MissingFramesWarning` and listed in
``Sequence.meta["skipped_frames"]``; malformed files raise :class:`campose.dataset.DatasetError`
naming the file and line.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from campose.camera import Intrinsics
from campose.dataset import DatasetError, Sequence, parse_pose_row
from campose.geometry import matrix_to_quat, quat_conjugate, quat_normalize

SPLITS = ("train", "test")

#: The Kinect defaults of the 7-Scenes page (Microsoft Research, "RGB-D Dataset 7-Scenes"): "The RGB
#: and depth camera have not been calibrated [...] In the KinectFusion pipeline we used the following
#: default intrinsics for the depth camera: Principle point (320,240), Focal length (585,585)." (quoted
#: e.g. by naver/kapture's 7-Scenes importer, which uses the same figures for the colour images).
#: Approximate for the colour camera: DSAC* uses 525 px for it; the poses are the depth camera's.
SEVEN_SCENES_INTRINSICS = Intrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)

#: Cambridge Landmarks ships no calibration in its text files (VisualSFM refined one focal length per
#: image in reconstruction.nvm). This is the single value of the DSAC/DSAC* configuration for Cambridge
#: (vislearn/LessMore ``cambridge/default.config``: fl 744.375 at 852x480, principal point at the centre),
#: i.e. about 1677 px at the original 1920x1080. Approximate: pass ``intrinsics=`` when it matters.
CAMBRIDGE_APPROX_INTRINSICS = Intrinsics(852, 480, 744.375, 744.375, 426.0, 240.0)

_ORTHO_TOL = 1e-2  # max |R^T R - I| accepted (and re-orthonormalised) in a pose file


class MissingFramesWarning(UserWarning):
    """Some frames listed by a dataset have no image on disk and were skipped."""


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _image_intrinsics(reference: Intrinsics, image: Path | None) -> Intrinsics:
    """``reference`` rescaled to the size of ``image`` (read from its header) when that differs."""
    if image is None:
        return reference
    from PIL import Image

    with Image.open(image) as im:
        w, h = im.size
    return reference if (w, h) == (reference.width, reference.height) else reference.scaled(w, h)


def _warn_skipped(root: Path, split: str, skipped: list[str]) -> None:
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} frame(s) of the {split} split have no image and were skipped "
                      f"(e.g. {skipped[0]}); see Sequence.meta['skipped_frames']", MissingFramesWarning,
                      stacklevel=3)


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The rotation matrix closest to ``R`` (3, 3) in the Frobenius norm (SVD projection onto SO(3))."""
    U, _, Vt = np.linalg.svd(np.asarray(R, float))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


# ---------------------------------------------------------------------------- 7-Scenes
def read_7scenes_split(path: str | Path) -> list[str]:
    """Sequence folders named by a 7-Scenes split file: ``sequence1`` -> ``seq-01`` (in file order)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"7-Scenes split file not found: {path} (the root must be a scene folder holding "
                           "TrainSplit.txt, TestSplit.txt and the seq-NN folders)")
    folders = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"sequence\s*(\d+)", line, flags=re.IGNORECASE)
        if m is None:
            raise DatasetError(f"{path}, line {n}: expected a line like 'sequence1', got {line!r}")
        folders.append(f"seq-{int(m.group(1)):02d}")
    if not folders:
        raise DatasetError(f"{path}: names no sequences")
    return folders


def read_7scenes_pose(path: str | Path, ortho_tol: float = _ORTHO_TOL) -> tuple[np.ndarray, float]:
    """Read a 7-Scenes ``frame-NNNNNN.pose.txt`` (4x4 camera-to-world, metres).

    Returns (T (4, 4) with its rotation projected onto SO(3), deviation max |R^T R - I| of the file's
    rotation). Raises DatasetError (file and line) for a wrong shape, a non-numeric or non-finite
    value, a last row other than (0, 0, 0, 1), or a rotation further than ``ortho_tol`` from SO(3).
    """
    path = Path(path)
    rows, lines = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.split():
            rows.append(parse_pose_row(path, n, line.split(), 4, "numbers"))
            lines.append(n)
    if len(rows) != 4:
        raise DatasetError(f"{path}: expected a 4x4 matrix (4 rows), got {len(rows)} row(s)")
    T = np.array(rows)
    if np.any(np.abs(T[3] - [0, 0, 0, 1]) > 1e-6):
        raise DatasetError(f"{path}, line {lines[3]}: the last row must be 0 0 0 1, got {rows[3]}")
    R = T[:3, :3]
    dev = float(np.max(np.abs(R.T @ R - np.eye(3))))
    det = float(np.linalg.det(R))
    if dev > ortho_tol or det <= 0:
        raise DatasetError(f"{path}, lines {lines[0]}-{lines[2]}: the rotation is not orthonormal "
                           f"(max |R^T R - I| = {dev:.3g}, tolerance {ortho_tol:g}; det = {det:.3g}, must be +1)")
    T[:3, :3] = nearest_rotation(R)
    return T, dev


def _load_7scenes_sequence(folder: Path, split: str, K: Intrinsics | None, ortho_tol: float):
    """(Sequence, or None when no frame has a colour image; the skipped frames as ``seq-NN/frame-NNNNNN``)."""
    pose_files = sorted(folder.glob("frame-*.pose.txt"), key=lambda p: _natural_key(p.name))
    names, frames, skipped, Ts, devs = [], [], [], [], []
    for pf in pose_files:
        stem = pf.name[: -len(".pose.txt")]
        image = next((f"{stem}.color.{ext}" for ext in ("png", "jpg") if (folder / f"{stem}.color.{ext}").is_file()),
                     None)
        if image is None:
            skipped.append(f"{folder.name}/{stem}")
            continue
        T, dev = read_7scenes_pose(pf, ortho_tol)
        devs.append(dev)
        names.append(image)
        frames.append(int(re.sub(r"\D", "", stem) or -1))
        Ts.append(T)
    if not names:
        return None, skipped
    Ts = np.array(Ts)
    meta = {"split": split, "source": "7scenes", "scene": folder.parent.name, "frames": frames,
            "skipped_frames": skipped, "rotation_deviation_max": max(devs),
            "intrinsics": "given" if K is not None else "approximate (7-Scenes Kinect defaults)"}
    K = _image_intrinsics(SEVEN_SCENES_INTRINSICS, folder / names[0]) if K is None else K
    return Sequence(folder.name, folder, names, Ts[:, :3, 3].copy(), matrix_to_quat(Ts[:, :3, :3]), K, meta,
                    image_dir=folder), skipped


def load_7scenes(root: str | Path, split: str = "train", intrinsics: Intrinsics | None = None,
                 ortho_tol: float = _ORTHO_TOL) -> list[Sequence]:
    """The sequences of one 7-Scenes scene folder named by ``TrainSplit.txt`` or ``TestSplit.txt``.

    Poses: the files' 4x4 camera-to-world matrices (metres), rotations projected onto SO(3) (SVD)
    when within ``ortho_tol`` of it, converted with :func:`campose.geometry.matrix_to_quat`. The
    published rotations are not quite orthonormal (max |R^T R - I| about 1e-4, a uniform shrink of
    ~5e-5: ``meta["rotation_deviation_max"]``), so our (x, q) gives back the file's matrix to ~1e-4
    in the rotation and exactly in the position. Frames without a colour image are skipped
    (``meta["skipped_frames"]``, one :class:`MissingFramesWarning` per call); ``meta["frames"]`` holds
    the frame numbers kept. Intrinsics: :data:`SEVEN_SCENES_INTRINSICS` (585 px at 640x480, principal
    point at the centre) rescaled to the images' size, unless ``intrinsics`` is given.
    """
    root = Path(root)
    _check_split(split)
    split_file = root / ("TrainSplit.txt" if split == "train" else "TestSplit.txt")
    folders = read_7scenes_split(split_file)
    sequences, skipped = [], []
    for name in folders:
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(f"{split_file} names {name}, but {folder} is not a folder")
        seq, sk = _load_7scenes_sequence(folder, split, intrinsics, ortho_tol)
        skipped += sk
        if seq is None:
            if not sk:
                raise DatasetError(f"{folder}: no frame-NNNNNN.pose.txt files")
            continue
        sequences.append(seq)
    _warn_skipped(root, split, skipped)
    if not sequences:
        raise DatasetError(f"{root}: no frame of the {split} split has a colour image")
    return sequences


# ---------------------------------------------------------------------------- Cambridge Landmarks
def cambridge_to_pose(c, q_cw):
    """Cambridge's (camera centre ``c`` (..., 3), world-to-camera quaternion W P Q R (..., 4)) -> our
    camera-to-world (x, q): x = c, q = q_cw^-1 (w >= 0).

    The convention is VisualSFM's (the labels come from its NVM model): the NVM camera holds the
    world-to-camera rotation R as a quaternion and the camera centre C, projection K [R | -R C]
    (T. Sattler in tsattler/visuallocalizationbenchmark#22: "The NVM model stores the rotation (as a
    quaternion) from the world coordinate system to the camera coordinate system as well as the camera
    position in world coordinates"). DSAC*'s ``datasets/setup_cambridge.py`` (vislearn/dsacstar) reads
    the dataset_*.txt files the same way (R from W P Q R, t = -R c, world-to-camera [R | t] used to
    project the SfM points into the image) and inverts it for its camera-to-world labels; treating
    W P Q R as camera-to-world gives large rotation errors with correct positions (vislearn/LessMore#2).
    Camera axes are OpenCV's (x right, y down, z forward), as in our convention.
    """
    c = np.asarray(c, float)
    return c.copy(), quat_normalize(quat_conjugate(quat_normalize(q_cw)))


def pose_to_cambridge(x, q):
    """Inverse of :func:`cambridge_to_pose`: our (x, q) -> (camera centre, world-to-camera W P Q R, W >= 0)."""
    return np.asarray(x, float).copy(), quat_normalize(quat_conjugate(quat_normalize(q)))


def read_cambridge_poses(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read a Cambridge ``dataset_train.txt`` / ``dataset_test.txt``.

    Returns (image names relative to the scene folder, x (N, 3), q (N, 4)) in our camera-to-world
    convention (:func:`cambridge_to_pose`). Raises DatasetError (file and line) when malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Cambridge pose file not found: {path} (the root must be a scene folder such as "
                           ".../KingsCollege holding dataset_train.txt and dataset_test.txt)")
    lines = path.read_text().splitlines()
    if len(lines) < 3:
        raise DatasetError(f"{path}: expected three header lines, then 'seqN/frameNNNNN.png X Y Z W P Q R' lines")
    names, vals = [], []
    for n, line in enumerate(lines[3:], start=4):
        tokens = line.split()
        if not tokens:
            continue
        v = parse_pose_row(path, n, tokens, 8, "columns (image X Y Z W P Q R)", skip=1)
        norm = float(np.linalg.norm(v[3:]))
        if abs(norm - 1) > 1e-3:
            raise DatasetError(f"{path}, line {n}: quaternion W P Q R is not unit length (norm {norm:.4f})")
        names.append(tokens[0])
        vals.append(v)
    if not names:
        raise DatasetError(f"{path}: no poses")
    a = np.array(vals)
    x, q = cambridge_to_pose(a[:, :3], a[:, 3:])
    return names, x, q


def load_cambridge(root: str | Path, split: str = "train", intrinsics: Intrinsics | None = None) -> list[Sequence]:
    """The sequences of one Cambridge Landmarks scene folder, frames grouped by their folder (``seq1`` ...).

    Poses from ``dataset_<split>.txt`` via :func:`read_cambridge_poses` (positions in the SfM model's
    units, about metres). Sequences and frames are in natural order (seq2 before seq10). Frames whose
    image is absent are skipped (``meta["skipped_frames"]``, one :class:`MissingFramesWarning`).
    Intrinsics: ``intrinsics`` if given, else :data:`CAMBRIDGE_APPROX_INTRINSICS` rescaled to the
    images' size (``meta["intrinsics"]`` says which).
    """
    root = Path(root)
    _check_split(split)
    names, x, q = read_cambridge_poses(root / f"dataset_{split}.txt")
    groups: dict[str, list[int]] = {}
    skipped = []
    for k, name in enumerate(names):
        if (root / name).is_file():
            groups.setdefault(str(PurePosixPath(name).parent), []).append(k)
        else:
            skipped.append(name)
    _warn_skipped(root, split, skipped)
    if not groups:
        raise DatasetError(f"{root}: none of the {len(names)} images of dataset_{split}.txt exists")
    K = intrinsics
    if K is None:
        first = next(iter(groups.values()))[0]
        K = _image_intrinsics(CAMBRIDGE_APPROX_INTRINSICS, root / names[first])
    sequences = []
    for folder in sorted(groups, key=_natural_key):
        ks = sorted(groups[folder], key=lambda k: _natural_key(names[k]))
        seq_dir = root if folder == "." else root / folder
        mine = [s for s in skipped if str(PurePosixPath(s).parent) == folder]
        meta = {"split": split, "source": "cambridge", "scene": root.name, "skipped_frames": mine,
                "intrinsics": "given" if intrinsics is not None else "approximate (DSAC* Cambridge default)"}
        sequences.append(Sequence(root.name if folder == "." else folder, seq_dir,
                                  [PurePosixPath(names[k]).name for k in ks], x[ks], q[ks], K, meta,
                                  image_dir=seq_dir))
    return sequences
