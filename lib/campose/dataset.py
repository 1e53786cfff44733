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
from campose.geometry import relative_pose

POSE_COLUMNS = ["image", "x", "y", "z", "qw", "qx", "qy", "qz"]


class DatasetError(ValueError):
    """A sequence on disk is malformed; the message names the file and the problem."""


@dataclass
class Sequence:
    """One sequence: image paths, camera-to-world poses (metres, w-first quaternions), intrinsics.

    Image ``i`` is ``image_dir / images[i]``; ``image_dir`` defaults to ``root / "images"`` (our
    own layout) and is set by readers of other layouts (e.g. :mod:`campose.public_datasets`).
    """

    name: str
    root: Path
    images: list[str]
    x: np.ndarray  # (N, 3)
    q: np.ndarray  # (N, 4)
    intrinsics: Intrinsics
    meta: dict = field(default_factory=dict)
    image_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def split(self) -> str:
        return self.meta.get("split", "train")

    @property
    def ordered(self) -> bool:
        """True for a walk (frames in time order; the default); False for a set of views without an
        order (:mod:`campose.densify`), which relative-pose pairs and MapNet windows skip."""
        return bool(self.meta.get("ordered", True))

    @property
    def paired(self) -> bool:
        """True for rendered pairs (:func:`campose.densify.render_pairs`): frames 2m and 2m + 1 are
        pair m, the only frames :class:`PairDataset` pairs in it."""
        return bool(self.meta.get("paired", False))

    @property
    def image_folder(self) -> Path:
        """The folder the image names are relative to."""
        return Path(self.image_dir) if self.image_dir is not None else Path(self.root) / "images"

    def image_path(self, i: int) -> Path:
        return self.image_folder / self.images[i]

    def load_image(self, i: int) -> np.ndarray:
        """Frame ``i``'s image as uint8 (H, W, 3) RGB (:func:`read_rgb`)."""
        return read_rgb(self.image_path(i))


def pil_to_rgb(im) -> np.ndarray:
    """A PIL image -> uint8 (H, W, 3) RGB. 16- and 32-bit grey (PNG depth maps, some scans) is
    scaled from 0..65535 to 0..255 (PIL's own conversion would clip it); a palette with a
    transparent colour goes through RGBA first, as PIL advises; alpha is dropped."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.clip(np.asarray(im, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def read_rgb(path) -> np.ndarray:
    """The image file ``path`` (any format PIL reads) as uint8 (H, W, 3) RGB (:func:`pil_to_rgb`).
    Raises FileNotFoundError for a missing file."""
    from PIL import Image

    with Image.open(path) as im:
        return pil_to_rgb(im)


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


def parse_pose_row(path, line: int, fields: list[str], count: int, what: str = "columns", skip: int = 0) -> list[float]:
    """The numbers ``fields[skip:]`` of one row of a pose file, which must have ``count`` fields; a
    DatasetError naming the file and line for a wrong count, a non-numeric or a non-finite value."""
    if len(fields) != count:
        raise DatasetError(f"{path}, line {line}: expected {count} {what}, got {len(fields)}")
    try:
        v = [float(c) for c in fields[skip:]]
    except ValueError:
        raise DatasetError(f"{path}, line {line}: non-numeric pose value in {fields[skip:]}") from None
    if not np.all(np.isfinite(v)):
        raise DatasetError(f"{path}, line {line}: pose values must be finite, got {fields[skip:]}")
    return v


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
        vals.append(parse_pose_row(path, i, r, 8, skip=1))
        names.append(r[0])
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


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) RGB at ``size`` = (width, height), PIL bilinear: the one resampling of the
    networks' inputs (training, evaluation, serving, the stored dense views); unchanged if already so."""
    from PIL import Image

    if (img.shape[1], img.shape[0]) == tuple(size):
        return img
    return np.asarray(Image.fromarray(img).resize(tuple(size), Image.BILINEAR))


def image_to_tensor(img: np.ndarray, size: tuple[int, int] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (H, W, 3) RGB -> float tensor (3, h, w), resized to ``size`` = (width, height)
    (:func:`resize_rgb`) and normalised per channel. The one preprocessing used for training,
    evaluation and serving."""
    import torch

    img = np.asarray(img if size is None else resize_rgb(img, size))
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image_to_tensor takes a uint8 (H, W, 3) RGB image, got {img.dtype} {img.shape}")
    return images_to_tensor(img[None], mean, std)[0]


def images_to_tensor(images: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A batch of uint8 (B, H, W, 3k) RGB images (k images side by side in the channels, as MeNet
    stacks a pair) -> float tensor (B, 3k, H, W): x / 255, then minus ``mean`` and over ``std`` per
    channel, in float32 (the arithmetic every model of the book was trained with), in channels-last
    memory order (the networks' training layout), with no per-image work: the trainer's batches,
    and through :func:`image_to_tensor` every single image."""
    import torch

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] % 3 or not images.shape[-1]:
        raise ValueError(f"images_to_tensor takes uint8 (B, H, W, 3k) images, got {images.dtype} {images.shape}")
    k = images.shape[-1] // 3
    a = images.astype(np.float32)  # in place from here, channels last: 2-3 times faster than in torch
    a /= np.float32(255.0)
    a -= np.tile(np.asarray(mean, np.float32), k)
    a /= np.tile(np.asarray(std, np.float32), k)
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def resized_image(seq: Sequence, i: int, size: tuple[int, int]) -> np.ndarray:
    """Image ``i`` of ``seq`` as uint8 (H, W, 3) RGB at ``size`` = (width, height) (:func:`resize_rgb`)."""
    return resize_rgb(seq.load_image(i), size)


class ImageCache:
    """A folder of sequences' images at a network input size: one ``.npy`` file, (N, H, W, 3) uint8,
    per sequence and size, so that training and evaluation runs (each its own process) decode and
    resize the full-size images once instead of every run (a 640 x 480 render takes about 18 ms).

    A file's name holds the sequence's name, its length, the size, a digest of what it holds (the
    image folder, the size and the image names) and one of the image files' state (byte sizes and
    modification times): a changed image gets a new file, and writing it removes the files of the
    same images in an older state. Sequences whose images are already at the size are not cached
    (reading them is as cheap as reading the cache). Files are written to a temporary name and
    renamed; a run still reading a removed file keeps its data (the mapping holds it)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def path(self, seq: Sequence, size: tuple[int, int]) -> Path:
        import hashlib

        what = hashlib.sha256(f"{seq.image_folder.resolve()}|{tuple(size)}|".encode())
        state = hashlib.sha256()
        for name in seq.images:
            st = (seq.image_folder / name).stat()
            what.update(f"{name}|".encode())
            state.update(f"{name}|{st.st_size}|{st.st_mtime_ns}|".encode())
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in seq.name)
        stem = f"{safe}-{len(seq)}-{size[0]}x{size[1]}-{what.hexdigest()[:12]}"
        return self.folder / f"{stem}-{state.hexdigest()[:8]}.npy"

    def images(self, seq: Sequence, size: tuple[int, int]) -> np.ndarray | None:
        """All of ``seq``'s images at ``size`` (read-only, memory-mapped), built on first use; None
        where the images already have that size."""
        from PIL import Image

        if not len(seq):
            return None
        with Image.open(seq.image_path(0)) as im:
            if im.size == tuple(size):
                return None
        path = self.path(seq, size)
        if not path.is_file():
            arr = np.stack([resized_image(seq, i, size) for i in range(len(seq))])
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
            same_images = path.stem.rsplit("-", 1)[0]  # the name without the state digest
            for old in self.folder.glob(f"{same_images}-*.npy"):
                if old != path:
                    old.unlink(missing_ok=True)
        return np.load(path, mmap_mode="r")


class PoseDataset:
    """torch Dataset over one or more sequences: item i -> (image (3, h, w), x (3,), q (4,), index).

    Images are resized to ``size`` = (width, height) once and cached in memory as uint8 (a few MB
    for small sizes), so epochs do not re-decode PNGs; with ``image_cache`` (an :class:`ImageCache`
    or its folder) also on disk, across runs. ``transform`` acts on the float tensor.
    """

    def __init__(self, sequences: list[Sequence], size: tuple[int, int], transform=None, cache: bool = True,
                 image_cache=None):
        if not sequences:
            raise ValueError("PoseDataset needs at least one sequence")
        self.sequences = sequences
        self.size = tuple(size)
        self.transform = transform
        self.index = [(s, i) for s, seq in enumerate(sequences) for i in range(len(seq))]
        self.offsets = np.cumsum([0] + [len(seq) for seq in sequences])  # item of (s, i) = offsets[s] + i
        self.x = np.concatenate([s.x for s in sequences]).astype(np.float32)
        self.q = np.concatenate([s.q for s in sequences]).astype(np.float32)
        self._cache: list | None = [None] * len(self.index) if cache else None
        self.image_cache = (image_cache if isinstance(image_cache, ImageCache) or image_cache is None
                            else ImageCache(image_cache))
        self._stored: dict[int, np.ndarray | None] = {}  # sequence -> its ImageCache array

    def __len__(self) -> int:
        return len(self.index)

    def raw_image(self, k: int) -> np.ndarray:
        if self._cache is not None and self._cache[k] is not None:
            return self._cache[k]
        s, i = self.index[k]
        if self.image_cache is not None and s not in self._stored:
            self._stored[s] = self.image_cache.images(self.sequences[s], self.size)
        stored = self._stored.get(s)
        img = stored[i] if stored is not None else resized_image(self.sequences[s], i, self.size)
        if self._cache is not None:
            self._cache[k] = img
        return img

    def __getitem__(self, k: int):
        import torch

        t = image_to_tensor(self.raw_image(k))
        if self.transform is not None:
            t = self.transform(t)
        return t, torch.from_numpy(self.x[k]), torch.from_numpy(self.q[k]), k

    def batch(self, idx):
        """Items ``idx`` at once: (images (B, 3, h, w), x (B, 3), q (B, 4)), the values of stacking
        ``self[k][:3]`` for k in ``idx``, made by :func:`images_to_tensor` (channels-last) rather
        than image by image; ``transform``, which acts per image, is applied to each."""
        import torch

        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        images = images_to_tensor(np.stack([self.raw_image(int(k)) for k in idx]))
        if self.transform is not None:
            images = torch.stack([self.transform(t) for t in images])
        return images, torch.from_numpy(self.x[idx]), torch.from_numpy(self.q[idx])


class PairDataset:
    """torch Dataset of image pairs from one sequence each, for relative-pose models (MeNet).

    A pair (i, j) holds items of :attr:`frames` (a :class:`PoseDataset`, whose uint8 image cache it
    uses: pass a PoseDataset to share its cache, or sequences and ``size`` to get a new one) from the
    **same** sequence, 1 <= |position of j - position of i| <= ``max_gap`` (pairs never cross
    sequences). For every frame up to ``pairs_per_image`` partners are drawn without replacement, both
    directions allowed, from ``numpy.random.default_rng(seed)``; :meth:`resample` draws a new set (e.g.
    per epoch). A paired sequence (``Sequence.paired``, rendered pairs) gives each of its pairs
    (2m, 2m + 1) once per draw, in an order drawn at random; other unordered sequences give none.
    Relative poses come from :func:`campose.geometry.relative_pose`.

    Item k -> (image_i (3, h, w), image_j (3, h, w), t_rel (3,), q_rel (4,), x_i, q_i, x_j, q_j, i, j):
    t_rel = R_i^T (x_j - x_i) (metres, camera-i axes), q_rel = q_i^-1 q_j (w-first, w >= 0), x/q the
    camera-to-world poses, i and j the items of :attr:`frames`. With ``stacked=True`` the two images
    come as one (6, h, w) tensor (image i's channels first), MeNet's input. ``transform`` acts on each
    (3, h, w) float tensor separately, before stacking.
    """

    def __init__(self, sequences, size: tuple[int, int] | None = None, max_gap: int = 10, pairs_per_image: int = 1,
                 seed: int = 0, transform=None, stacked: bool = False):
        if isinstance(sequences, PoseDataset):
            if size is not None and tuple(size) != sequences.size:
                raise ValueError(f"size {tuple(size)} differs from the PoseDataset's {sequences.size}")
            frames = sequences
        else:
            if size is None:
                raise ValueError("size (width, height) is required when PairDataset is built from sequences")
            frames = PoseDataset(list(sequences), size)
        if int(max_gap) < 1 or int(pairs_per_image) < 1:
            raise ValueError(f"max_gap and pairs_per_image must be >= 1, got {max_gap} and {pairs_per_image}")
        self.frames = frames
        self.size = frames.size
        self.max_gap, self.pairs_per_image = int(max_gap), int(pairs_per_image)
        self.transform, self.stacked = transform, stacked
        self._x = np.concatenate([s.x for s in frames.sequences]).astype(float)
        self._q = np.concatenate([s.q for s in frames.sequences]).astype(float)
        self.resample(seed)

    def resample(self, seed: int) -> None:
        """Draw the pairs (:attr:`pairs`, (P, 2) items of :attr:`frames`) and their relative poses."""
        rng = np.random.default_rng(seed)
        pairs = []
        for s, seq in enumerate(self.frames.sequences):
            n, off = len(seq), int(self.frames.offsets[s])
            if seq.paired:  # rendered pairs: (2m, 2m + 1), either way round
                if n % 2:
                    raise ValueError(f"paired sequence {seq.name} has an odd number of frames ({n})")
                a = off + np.arange(0, n, 2)
                flip = rng.random(len(a)) < 0.5
                pairs += [(int(j), int(i)) if f else (int(i), int(j)) for i, j, f in zip(a, a + 1, flip)]
                continue
            if not seq.ordered:  # neighbours in an unordered set are not neighbours in space
                continue
            for i in range(n):
                cand = np.r_[max(0, i - self.max_gap):i, i + 1:min(n, i + self.max_gap + 1)]
                if len(cand):
                    js = rng.choice(cand, size=min(self.pairs_per_image, len(cand)), replace=False)
                    pairs += [(off + i, off + int(j)) for j in js]
        if not pairs:
            raise ValueError("no pairs: every ordered sequence (walk) has a single frame, and none is paired")
        self.pairs = np.array(pairs, dtype=np.int64)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        t, q = relative_pose(self._x[i], self._q[i], self._x[j], self._q[j])
        self.t_rel, self.q_rel = t.astype(np.float32), q.astype(np.float32)

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, k: int):
        t = image_to_tensor(self.frames.raw_image(k))
        return self.transform(t) if self.transform is not None else t

    def __getitem__(self, k: int):
        import torch

        i, j = (int(v) for v in self.pairs[k])
        a, b = self._image(i), self._image(j)
        images = (torch.cat([a, b], 0),) if self.stacked else (a, b)
        f = self.frames
        return (*images, torch.from_numpy(self.t_rel[k]), torch.from_numpy(self.q_rel[k]),
                torch.from_numpy(f.x[i]), torch.from_numpy(f.q[i]), torch.from_numpy(f.x[j]), torch.from_numpy(f.q[j]),
                i, j)

    def batch(self, idx):
        """Pairs ``idx`` at once: (images, t_rel (B, 3), q_rel (B, 4)), the values of stacking
        ``self[k]``'s images and relative pose for k in ``idx``; images: one (B, 6, h, w) tensor
        with ``stacked``, else two (B, 3, h, w), made by :func:`images_to_tensor` (channels-last);
        ``transform``, which acts per image, is applied to each."""
        import torch

        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        raw = self.frames.raw_image
        images = images_to_tensor(np.stack([np.concatenate([raw(int(i)), raw(int(j))], axis=-1)
                                            for i, j in self.pairs[idx]]))
        if self.transform is not None:
            images = torch.stack([torch.cat([self.transform(t[:3]), self.transform(t[3:])], 0) for t in images])
        return (*((images,) if self.stacked else (images[:, :3], images[:, 3:])),
                torch.from_numpy(self.t_rel[idx]), torch.from_numpy(self.q_rel[idx]))


# ---------------------------------------------------------------------------- MapNet windows
def sequence_windows(dataset, window: int, stride: int = 1, step: int = 1) -> list[list[int]]:
    """Windows of ``window`` frames of one sequence each, as items of ``dataset`` (a PoseDataset, or the
    list of sequences it was built from): [k, k + step, ..., k + (window - 1) step] in a sequence,
    k = 0, stride, 2 stride, ... Windows never cross sequences; a sequence shorter than
    (window - 1) step + 1 frames gives none, and so does an unordered one (``Sequence.ordered``).
    ``step`` is MapNet's "skip" between frames of a tuple."""
    if int(window) < 2 or int(stride) < 1 or int(step) < 1:
        raise ValueError(f"need window >= 2, stride >= 1 and step >= 1, got {window}, {stride}, {step}")
    seqs = dataset.sequences if isinstance(dataset, PoseDataset) else list(dataset)
    out, off, span = [], 0, (window - 1) * step
    for seq in seqs:
        if seq.ordered:
            out += [[off + k + m * step for m in range(window)] for k in range(0, len(seq) - span, stride)]
        off += len(seq)
    return out


class WindowBatchSampler:
    """Batch sampler (``DataLoader(dataset, batch_sampler=...)``) for MapNet's relative terms.

    Each batch is ``windows_per_batch`` windows of :func:`sequence_windows`, concatenated: items
    [w * window, (w + 1) * window) of a batch are one window, frames of one sequence in time order.
    The trainer computes the absolute loss on every frame and reshapes predictions and labels to
    (windows, window, ...) for the relative terms (e.g. between neighbours, [:, 1:] against [:, :-1]).
    Chosen over a dataset of tuples so that the :class:`PoseDataset` (its items, cache and collate)
    serves both PoseNet and MapNet unchanged. Windows are shuffled per epoch with seed + epoch
    (:meth:`set_epoch`), so the order is deterministic.
    """

    def __init__(self, dataset, window: int, windows_per_batch: int, stride: int = 1, step: int = 1,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if int(windows_per_batch) < 1:
            raise ValueError(f"windows_per_batch must be >= 1, got {windows_per_batch}")
        self.windows = sequence_windows(dataset, window, stride, step)
        if not self.windows:
            raise ValueError(f"no sequence has the {(window - 1) * step + 1} frames a window of {window} "
                             f"with step {step} needs")
        self.window, self.windows_per_batch = int(window), int(windows_per_batch)
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = len(self.windows), self.windows_per_batch
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        order = np.arange(len(self.windows))
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
        b = self.windows_per_batch
        for start in range(0, len(self) * b, b):
            yield [k for w in order[start:start + b] for k in self.windows[w]]
