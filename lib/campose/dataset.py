"""Image sequences with poses on disk, and the torch datasets that read them.

On-disk layout of one sequence (the same for renders, SfM labels and a user's own photos)::

    <sequence>/images/000000.png ...   RGB uint8
    <sequence>/poses.csv              image,x,y,z,qw,qx,qy,qz   (camera-to-world, metres, w-first)
    <sequence>/intrinsics.json        PINHOLE width, height, fx, fy, cx, cy (pixels)
    <sequence>/sequence.json          free metadata: split, fps, route, seeds, source

Sequences are written to a temporary folder and renamed into place when complete, so an
interrupted run never leaves a half-written sequence behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from campose.camera import Intrinsics

POSE_COLUMNS = ["image", "x", "y", "z", "qw", "qx", "qy", "qz"]


class DatasetError(ValueError):
    """A sequence on disk is malformed; the message names the file and the problem."""


@dataclass
class Sequence:
    """One sequence: image paths, camera-to-world poses (metres, w-first quaternions), intrinsics."""

    name: str
    root: Path
    images: list[str]
    x: np.ndarray  # (N, 3)
    q: np.ndarray  # (N, 4)
    intrinsics: Intrinsics
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def split(self) -> str:
        return self.meta.get("split", "train")

    def image_path(self, i: int) -> Path:
        return self.root / "images" / self.images[i]

    def load_image(self, i: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.image_path(i)) as im:
            return np.asarray(im.convert("RGB"))


def write_poses(path: Path, names: list[str], x: np.ndarray, q: np.ndarray) -> None:
    """Write a poses CSV (the design's format, 9 significant digits)."""
    x, q = np.asarray(x, float), np.asarray(q, float)
    if len(names) != len(x) or len(x) != len(q):
        raise ValueError(f"names ({len(names)}), positions ({len(x)}) and quaternions ({len(q)}) differ in length")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(POSE_COLUMNS)
        for n, xi, qi in zip(names, x, q):
            w.writerow([n] + [f"{v:.9g}" for v in xi] + [f"{v:.9g}" for v in qi])


def read_poses(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read and validate a poses CSV; returns (image names, x (N, 3), q (N, 4))."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"poses file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != POSE_COLUMNS:
        raise DatasetError(f"{path}: the header must be {','.join(POSE_COLUMNS)}, got {','.join(rows[0]) if rows else 'an empty file'}")
    names, vals = [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != 8:
            raise DatasetError(f"{path}, line {i}: expected 8 columns, got {len(r)}")
        try:
            v = [float(c) for c in r[1:]]
        except ValueError:
            raise DatasetError(f"{path}, line {i}: non-numeric pose value in {r[1:]}") from None
        if not np.all(np.isfinite(v)):
            raise DatasetError(f"{path}, line {i}: pose values must be finite")
        names.append(r[0])
        vals.append(v)
    if not names:
        raise DatasetError(f"{path}: no poses")
    a = np.array(vals)
    n = np.linalg.norm(a[:, 3:], axis=1)
    bad = np.nonzero(np.abs(n - 1) > 1e-3)[0]
    if len(bad):
        raise DatasetError(f"{path}, line {bad[0] + 2}: quaternion is not unit length (norm {n[bad[0]]:.4f})")
    q = a[:, 3:] / n[:, None]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return names, a[:, :3], q


def load_sequence(root: str | Path) -> Sequence:
    """Read a sequence folder, checking that every listed image exists."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"sequence folder not found: {root}")
    names, x, q = read_poses(root / "poses.csv")
    K = Intrinsics.load(root / "intrinsics.json")
    missing = [n for n in names if not (root / "images" / n).is_file()]
    if missing:
        raise DatasetError(f"{root}: {len(missing)} image(s) listed in poses.csv are missing, e.g. {missing[0]}")
    meta_path = root / "sequence.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return Sequence(root.name, root, names, x, q, K, meta)


class _AtomicDir:
    """Write into ``<final>.tmp-<id>`` and rename to ``final`` on success; remove on failure."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.tmp = self.final.with_name(f"{self.final.name}.tmp-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return False


def atomic_dir(final: str | Path) -> _AtomicDir:
    """Context manager: build a folder in a temporary sibling, move it into place when done."""
    return _AtomicDir(Path(final))


def write_sequence(root: str | Path, images, x, q, intrinsics: Intrinsics, meta: dict | None = None,
                   names: list[str] | None = None, progress: bool = False) -> Sequence:
    """Write a sequence atomically. ``images`` is an iterable of (H, W, 3) uint8 arrays (it may be
    a generator, e.g. a renderer producing frames on the fly)."""
    from PIL import Image
    from tqdm import tqdm

    x, q = np.asarray(x, float), np.asarray(q, float)
    names = names or [f"{i:06d}.png" for i in range(len(x))]
    root = Path(root)
    with atomic_dir(root) as tmp:
        (tmp / "images").mkdir()
        it = tqdm(images, total=len(names), desc=f"writing {root.name}", disable=not progress, leave=False)
        count = 0
        for n, img in zip(names, it):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {n} must be (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}")
            Image.fromarray(img).save(tmp / "images" / n, compress_level=1)
            count += 1
        if count != len(names):
            raise ValueError(f"got {count} images for {len(names)} poses")
        write_poses(tmp / "poses.csv", names, x, q)
        intrinsics.save(tmp / "intrinsics.json")
        (tmp / "sequence.json").write_text(json.dumps(meta or {}, indent=2, default=_json_default) + "\n")
    return load_sequence(root)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def render_sequence(renderer, walk, intrinsics: Intrinsics, root: str | Path, meta: dict | None = None,
                    progress: bool = True) -> Sequence:
    """Render every pose of a :class:`campose.trajectory.Walk` and write the sequence to ``root``."""
    frames = (renderer.render(walk.x[i], walk.q[i], intrinsics) for i in range(len(walk)))
    m = {"source": "render", "route": walk.route, "t": walk.t, **(meta or {})}
    return write_sequence(root, frames, walk.x, walk.q, intrinsics, m, progress=progress)


# ---------------------------------------------------------------------------- torch datasets
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(img: np.ndarray, size: tuple[int, int] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (H, W, 3) RGB -> float tensor (3, h, w), resized to ``size`` = (width, height) and
    normalised per channel. The one preprocessing used for training, evaluation and serving."""
    import torch
    from PIL import Image

    if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
        img = np.asarray(Image.fromarray(img).resize(tuple(size), Image.BILINEAR))
    t = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (t - m) / s


class PoseDataset:
    """torch Dataset over one or more sequences: item i -> (image (3, h, w), x (3,), q (4,), index).

    Images are resized to ``size`` = (width, height) once and cached in memory as uint8 (a few MB
    for small sizes), so epochs do not re-decode PNGs. ``transform`` acts on the float tensor.
    """

    def __init__(self, sequences: list[Sequence], size: tuple[int, int], transform=None, cache: bool = True):
        if not sequences:
            raise ValueError("PoseDataset needs at least one sequence")
        self.sequences = sequences
        self.size = tuple(size)
        self.transform = transform
        self.index = [(s, i) for s, seq in enumerate(sequences) for i in range(len(seq))]
        self.x = np.concatenate([s.x for s in sequences]).astype(np.float32)
        self.q = np.concatenate([s.q for s in sequences]).astype(np.float32)
        self._cache: list | None = [None] * len(self.index) if cache else None

    def __len__(self) -> int:
        return len(self.index)

    def raw_image(self, k: int) -> np.ndarray:
        from PIL import Image

        if self._cache is not None and self._cache[k] is not None:
            return self._cache[k]
        s, i = self.index[k]
        img = self.sequences[s].load_image(i)
        if (img.shape[1], img.shape[0]) != self.size:
            img = np.asarray(Image.fromarray(img).resize(self.size, Image.BILINEAR))
        if self._cache is not None:
            self._cache[k] = img
        return img

    def __getitem__(self, k: int):
        import torch

        t = image_to_tensor(self.raw_image(k))
        if self.transform is not None:
            t = self.transform(t)
        return t, torch.from_numpy(self.x[k]), torch.from_numpy(self.q[k]), k
