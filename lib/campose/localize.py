"""Camera pose without a neural network: the two baselines a practitioner tries first.

* **Structure-based** (:class:`StructureLocalizer`, the hloc recipe on the CPU): SIFT features of the
  query (COLMAP's, at the image's own resolution), the ``num_retrieved`` most similar map images by
  the bag-of-words descriptor below, nearest-neighbour matching (ratio test and cross check) of the
  query's descriptors against those images' keypoints that have a 3D point, then absolute pose by
  P3P in LO-RANSAC and non-linear refinement (``pycolmap.estimate_and_refine_absolute_pose``) with
  the known intrinsics. A query is *localised* when RANSAC finds a pose with at least
  ``min_inliers`` inliers (30, the count COLMAP's mapper needs to register an image); otherwise it
  gets the pose of the best retrieved map image (hloc's rule; ``fallback=False``: no pose, NaN).
* **Image retrieval** (:class:`RetrievalLocalizer`): the pose of the most similar map image by a
  global descriptor, cosine similarity; with ``k > 1`` the similarity-weighted mean of the top k
  (positions averaged, quaternions by the weighted eigenvector mean, sign-invariant). Descriptors:
  ``"bow"``, a tf-idf weighted bag of SIFT visual words (k-means vocabulary of the map's own
  descriptors, as :func:`campose.sfm.retrieval_pairs` uses for SfM pairs), and ``"thumbnail"``, the
  image shrunk to 32 x 24 grey pixels, zero mean and unit norm (a "tiny image").

The map (:func:`build_map`) is made from **training images with known poses only**: their SIFT
features are matched (sequential pairs plus retrieval pairs, or exhaustive) and triangulated by
COLMAP with the poses held fixed (``pycolmap.triangulate_points``), so its 3D points lie directly
in the poses' frame. :func:`profile_map` builds it from a profile's training walks and their labels
(what the networks train on) and caches it; no test frame enters it (the SfM stage, which made the
labels, reconstructed test walks too, so its own points are not used).

Conventions: poses are camera-to-world, centre ``x`` in metres in the world (building) frame, ``q``
= (w, x, y, z) with w >= 0 rotating OpenCV camera axes into the world; pixels follow COLMAP (centre
of the top-left pixel at (0.5, 0.5)). Times are wall-clock seconds on the CPU, from the image array
to the pose (reading the file not included). :func:`evaluate_localizer` scores a localizer on a
profile's test walks in the shape of :func:`campose.evaluate.evaluate`, plus per-query success and time.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence as Seq

import numpy as np

from campose.camera import Intrinsics
from campose.evaluate import Evaluation, frame_errors, summarize

__all__ = [
    "LocalizeError",
    "DESCRIPTORS",
    "LocalizationMap",
    "Localization",
    "StructureLocalizer",
    "RetrievalLocalizer",
    "RelativePoseLocalizer",
    "LocalizerEvaluation",
    "build_map",
    "profile_map",
    "evaluate_sequences",
    "evaluate_localizer",
]

#: Global descriptors of :class:`RetrievalLocalizer`.
DESCRIPTORS = ("bow", "thumbnail")
MAP_FORMAT = "campose.localize/1"
STAGE_VERSION = 1
#: Visual words of the bag-of-words descriptor, and the thumbnail descriptor's size (width, height).
NUM_WORDS = 1024
THUMBNAIL_SIZE = (32, 24)


class LocalizeError(ValueError):
    """A map cannot be built or used, or a query is malformed; the message says why."""


# ---------------------------------------------------------------------------- features
class _Sift:
    """COLMAP's SIFT on the CPU, one extractor reused for every image."""

    def __init__(self, max_num_features: int):
        import pycolmap

        from campose.sfm import set_colmap_verbosity

        set_colmap_verbosity(False)
        opts = pycolmap.FeatureExtractionOptions()
        opts.sift.max_num_features = int(max_num_features)
        self._extractor = pycolmap.FeatureExtractor.create(opts, device=pycolmap.Device.cpu)

        self.max_num_features = int(max_num_features)
        #: seconds the last call did not spend because the features came from the memo (their
        #: original extraction time): add it to a query's wall time so it stays the full cost
        self.credit = 0.0

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints (N, 2) x, y in pixels, descriptors (N, 128) uint8) of a uint8 image. The last
        image's features are memoised across extractors (several localisers scored on the same
        query extract once; :func:`evaluate_sequences`); :attr:`credit` keeps the timing honest."""
        import hashlib

        from campose.sfm import to_grey

        img = np.ascontiguousarray(image)
        key = (self.max_num_features, img.shape, hashlib.blake2b(img.data, digest_size=16).digest())
        hit = _FEATURE_MEMO.get(key)
        if hit is not None:
            self.credit = hit[2]
            return hit[0], hit[1]
        t0 = time.perf_counter()
        kps, desc = self._extractor.extract_from_float32_array(to_grey(img))
        xy = np.array([[k.x, k.y] for k in kps], float).reshape(-1, 2)
        out = (xy, np.asarray(desc.data, np.uint8).reshape(-1, 128))
        _FEATURE_MEMO.clear()
        _FEATURE_MEMO[key] = (*out, time.perf_counter() - t0)
        self.credit = 0.0
        return out


#: The last query's SIFT features: (max_num_features, shape, digest) -> (xy, descriptors, seconds).
_FEATURE_MEMO: dict = {}


def _unit_rows(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def _bow_vector(desc: np.ndarray, words: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """tf-idf weighted, L2-normalised visual-word histogram (K,) of SIFT descriptors (zeros if none)."""
    from campose.sfm import _nearest

    v = np.zeros(len(words), np.float32)
    if len(desc):
        v = np.bincount(_nearest(np.asarray(desc, np.float32), words), minlength=len(words)).astype(np.float32)
        v = v / v.sum() * idf
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def _thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The grey image averaged down to ``size`` (width, height), zero mean, unit norm; zeros when flat."""
    from PIL import Image

    from campose.sfm import to_grey

    t = np.asarray(Image.fromarray(to_grey(image), mode="F").resize(tuple(size), Image.BOX), np.float32).ravel()
    t = t - t.mean()
    n = np.linalg.norm(t)
    return t / n if n > 1e-6 else np.zeros_like(t)


def _match(query: np.ndarray, db: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i into query, j into db) of matches between unit descriptor rows: j is i's nearest
    neighbour, nearer than ``ratio`` times the second nearest (Euclidean), and i is j's nearest."""
    if len(query) == 0 or len(db) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    S = query @ db.T  # cosine similarity; distance^2 = 2 - 2 S
    rows = np.arange(len(query))
    first = S.argmax(1)
    s1 = S[rows, first]
    S[rows, first] = -np.inf
    s2 = S.max(1)
    S[rows, first] = s1
    d1, d2 = np.sqrt(np.maximum(2 - 2 * s1, 0)), np.sqrt(np.maximum(2 - 2 * s2, 0))
    keep = (d1 < ratio * d2) & (S.argmax(0)[first] == rows)
    return rows[keep], first[keep]


def _weighted_pose(x: np.ndarray, q: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean position and the weighted quaternion mean (largest eigenvector of sum w q q^T)."""
    from campose.geometry import quat_normalize

    w = np.asarray(w, float)
    w = w / w.sum()
    M = np.einsum("n,ni,nj->ij", w, q, q)
    return w @ x, quat_normalize(np.linalg.eigh(M)[1][:, -1])


# ---------------------------------------------------------------------------- the map
@dataclass(eq=False)
class LocalizationMap:
    """Map images with known poses, their triangulated SIFT points and global descriptors.

    ``names`` (N) map images (relative to the folder they were read from), ``x`` (N, 3) metres and
    ``q`` (N, 4) w-first their camera-to-world poses (the world frame of the points); ``intrinsics``
    the one pinhole camera; ``points`` (P, 3) the 3D points (metres, world frame); observations: the
    keypoints of image ``i`` that have a 3D point are rows ``offsets[i]:offsets[i + 1]`` of
    ``obs_point`` (M,) (index into ``points``) and ``obs_descriptors`` (M, 128) uint8 (COLMAP SIFT);
    ``words`` (K, 128) the visual vocabulary, ``idf`` (K,), ``bow`` (N, K) the images' tf-idf
    vectors; ``thumbnails`` (N, w * h) at ``thumbnail_size`` (w, h); ``max_num_features`` of the
    SIFT extraction; ``info``: counts, timings (s) and the options it was built with.
    """

    names: list[str]
    x: np.ndarray
    q: np.ndarray
    intrinsics: Intrinsics
    points: np.ndarray
    offsets: np.ndarray
    obs_point: np.ndarray
    obs_descriptors: np.ndarray
    words: np.ndarray
    idf: np.ndarray
    bow: np.ndarray
    thumbnails: np.ndarray
    thumbnail_size: tuple[int, int]
    max_num_features: int
    info: dict = field(default_factory=dict)

    _ARRAYS = ("x", "q", "points", "offsets", "obs_point", "obs_descriptors", "words", "idf", "bow", "thumbnails")

    def __len__(self) -> int:
        return len(self.names)

    def megabytes(self, *arrays: str) -> float:
        """Size in MB (1e6 bytes) of the named arrays (default: all), as held in memory."""
        return sum(getattr(self, a).nbytes for a in (arrays or self._ARRAYS)) / 1e6

    def observations(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(point indices (m,), descriptors (m, 128) uint8) of map image ``i``'s keypoints with a 3D point."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.obs_point[a:b], self.obs_descriptors[a:b]

    def summary(self) -> str:
        per = np.diff(self.offsets)
        return (f"{len(self)} map images, {len(self.points)} points, {len(self.obs_point)} observations "
                f"({np.median(per) if len(per) else 0:.0f} per image, median), {len(self.words)} visual words, "
                f"{self.megabytes():.1f} MB")

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/map.npz`` (arrays) and ``folder/map.json`` (names, camera, info), atomically."""
        from campose.dataset import atomic_dir

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            np.savez(tmp / "map.npz", **{a: getattr(self, a) for a in self._ARRAYS})
            meta = {"format": MAP_FORMAT, "names": list(self.names), "intrinsics": self.intrinsics.to_dict(),
                    "thumbnail_size": list(self.thumbnail_size), "max_num_features": int(self.max_num_features),
                    "info": self.info}
            (tmp / "map.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "LocalizationMap":
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / "map.json").is_file() or not (folder / "map.npz").is_file():
            raise LocalizeError(f"{folder} is not a saved localization map (needs map.json and map.npz)")
        meta = json.loads((folder / "map.json").read_text())
        if meta.get("format") != MAP_FORMAT:
            raise LocalizeError(f"{folder}: unknown map format {meta.get('format')!r}, expected {MAP_FORMAT}")
        with np.load(folder / "map.npz") as z:
            arrays = {a: z[a] for a in cls._ARRAYS}
        return cls(names=meta["names"], intrinsics=Intrinsics.from_dict(meta["intrinsics"]),
                   thumbnail_size=tuple(meta["thumbnail_size"]), max_num_features=meta["max_num_features"],
                   info=meta["info"], **arrays)


def _check_map_inputs(root: Path, names, x, q, intrinsics) -> tuple[list[str], np.ndarray, np.ndarray]:
    from PIL import Image

    from campose.geometry import check_unit_quaternion

    if not isinstance(intrinsics, Intrinsics):
        raise LocalizeError(f"intrinsics must be a campose.camera.Intrinsics, got {type(intrinsics).__name__}")
    names = [Path(str(n)).as_posix() for n in names]
    if len(names) < 2:
        raise LocalizeError(f"a map needs at least 2 images with known poses, got {len(names)}")
    if len(set(names)) != len(names):
        raise LocalizeError("the map's image names must be unique")
    x, q = np.asarray(x, float), np.asarray(q, float)
    if x.shape != (len(names), 3) or q.shape != (len(names), 4):
        raise LocalizeError(f"{len(names)} images need x (N, 3) and q (N, 4) poses, got {x.shape} and {q.shape}")
    if not np.all(np.isfinite(x)):
        raise LocalizeError("map positions must be finite")
    try:
        q = check_unit_quaternion(q)
    except ValueError as e:
        raise LocalizeError(f"map orientations: {e}") from None
    if not root.is_dir():
        raise LocalizeError(f"image folder not found: {root}")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise LocalizeError(f"{len(missing)} of the {len(names)} map images are missing under {root}, e.g. {missing[0]!r}")
    if any(any(c.isspace() for c in n) for n in names):
        raise LocalizeError("COLMAP's pair lists cannot hold image names with spaces; rename the images")
    for n in names:
        with Image.open(root / n) as im:
            if im.size != (intrinsics.width, intrinsics.height):
                raise LocalizeError(f"map image {n!r} is {im.size[0]}x{im.size[1]} but the intrinsics are for "
                                    f"{intrinsics.width}x{intrinsics.height}")
    return names, x, q


def build_map(
    image_root: str | Path,
    names: Seq[str],
    x: np.ndarray,
    q: np.ndarray,
    intrinsics: Intrinsics,
    work_dir: str | Path,
    matcher: str = "sequential",
    overlap: int = 8,
    retrieval: int = 5,
    max_num_features: int = 8192,
    num_words: int = NUM_WORDS,
    thumbnail_size: tuple[int, int] = THUMBNAIL_SIZE,
    num_threads: int = 2,
    seed: int = 0,
    progress: bool = True,
    database: str | Path | None = None,
) -> LocalizationMap:
    """Triangulate a SIFT map from images with known camera-to-world poses (metres, w-first).

    ``names`` relative to ``image_root``; ``x`` (N, 3), ``q`` (N, 4) their poses, which become the
    map's world frame; ``intrinsics`` the images' one pinhole camera (held fixed). Features: COLMAP
    SIFT (``max_num_features`` per image) into a fresh ``work_dir/database.db``; pairs: ``matcher``
    "sequential" (name order, COLMAP's ``overlap``) plus each image's ``retrieval`` most similar
    images (:func:`campose.sfm.retrieval_pairs`; 0: none), or "exhaustive"; then
    ``pycolmap.triangulate_points`` with the poses fixed. Global descriptors: a ``num_words``-word
    vocabulary of the map's descriptors, and thumbnails of ``thumbnail_size`` (width, height).

    ``database``: an existing COLMAP database that already holds these images' features and
    verified matches (e.g. the SfM run that made the labels, which may hold more images, such as
    test walks): extraction and matching are skipped, it is only read, and only the map images'
    features and the matches among them are used (COLMAP's triangulator loads the images of the
    reconstruction it is given). Its camera must be ``intrinsics``. ``matcher``, ``overlap``,
    ``retrieval`` and ``max_num_features`` then describe how it was made and are only recorded.
    Raises :class:`LocalizeError` on bad inputs or when no 3D point could be triangulated.
    """
    import pycolmap

    from campose.dataset import read_rgb
    from campose.sfm import (_fresh, _kmeans, cam_from_world_from_pose, extract_features, match_features,
                              set_colmap_verbosity)

    if matcher not in ("sequential", "exhaustive"):
        raise LocalizeError(f"matcher must be 'sequential' or 'exhaustive', got {matcher!r}")
    if int(num_words) < 2:
        raise LocalizeError(f"num_words must be >= 2, got {num_words}")
    root = Path(image_root)
    names, x, q = _check_map_inputs(root, names, x, q, intrinsics)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    db_path, model_dir = work / "database.db", work / "model"
    if database is not None:
        db_path = Path(database)
        if not db_path.is_file():
            raise LocalizeError(f"database: no COLMAP database at {db_path}")
    else:
        _fresh(db_path)
    _fresh(model_dir)
    model_dir.mkdir()
    timings: dict[str, float] = {}

    def report(step: str, t0: float, what: str) -> None:
        timings[step] = round(time.perf_counter() - t0, 3)
        if progress:
            print(f"map {step:<12s} {timings[step]:7.1f} s  {what}", flush=True)

    old_level = pycolmap.logging.minloglevel
    set_colmap_verbosity(False)
    try:
        pycolmap.set_random_seed(int(seed))
        t0 = time.perf_counter()
        if database is None:
            extract_features(db_path, root, names, intrinsics, max_num_features=max_num_features,
                             num_threads=num_threads)
            report("extract", t0, f"{len(names)} images")

            t0 = time.perf_counter()
            # exhaustive matching already pairs everything: retrieval only with sequential matching
            match_features(db_path, names, work / "pairs.txt", matcher=matcher, overlap=overlap,
                           retrieval=retrieval if matcher == "sequential" else 0, num_threads=num_threads, seed=seed)
        with pycolmap.Database.open(db_path) as db:
            wanted = set(names)
            images = {im.name: im for im in db.read_all_images() if im.name in wanted}
            cameras = {im.camera_id: db.read_camera(im.camera_id) for im in images.values()}
            ids = {im.image_id for im in images.values()}
            pair_ids, _ = db.read_two_view_geometry_num_inliers()
            n_verified = sum(1 for p in pair_ids if set(pycolmap.pair_id_to_image_pair(p)) <= ids)
            keypoints = {im.image_id: np.asarray(db.read_keypoints(im.image_id))[:, :2] for im in images.values()}
            descriptors = {im.image_id: np.asarray(db.read_descriptors(im.image_id).data, np.uint8)
                           for im in images.values()}
        if database is None:
            report("match", t0, f"{matcher}: {n_verified} verified image pairs")
        else:
            report("read", t0, f"features and {n_verified} verified pairs of the map images from {db_path}")
        if len(images) != len(names) or len(cameras) != 1:
            raise LocalizeError(f"the database {db_path} holds {len(images)} of the {len(names)} map images in "
                                f"{len(cameras)} camera(s); expected all of them and one camera")
        camera = next(iter(cameras.values()))
        if database is not None and (camera.model.name != "PINHOLE" or not np.allclose(
                camera.params, [float(v) for v in intrinsics.colmap_params().split(",")], rtol=1e-6, atol=1e-6)):
            raise LocalizeError(f"the database's camera ({camera.model.name}, {list(camera.params)}) is not the "
                                f"map's intrinsics ({intrinsics.colmap_params()})")

        t0 = time.perf_counter()
        rec = pycolmap.Reconstruction()
        rec.add_camera_with_trivial_rig(camera)
        for n, xi, qi in zip(names, x, q):
            im = images[n]
            rec.add_image_with_trivial_frame(
                pycolmap.Image(name=n, camera_id=im.camera_id, image_id=im.image_id,
                               keypoints=keypoints[im.image_id].astype(float)),
                cam_from_world_from_pose(xi, qi))
        options = pycolmap.IncrementalPipelineOptions()
        options.num_threads = int(num_threads)
        options.random_seed = int(seed)
        rec = pycolmap.triangulate_points(rec, db_path, root, model_dir, options=options)
    finally:
        pycolmap.logging.minloglevel = old_level

    point_ids = sorted(rec.point3D_ids())
    if not point_ids:
        report("triangulate", t0, "no points")
        raise LocalizeError(f"no 3D point could be triangulated from the {len(names)} map images ({n_verified} "
                            "verified image pairs): they need texture and overlapping views")
    index = {pid: k for k, pid in enumerate(point_ids)}
    points = np.array([rec.points3D[pid].xyz for pid in point_ids], float).reshape(-1, 3)
    obs_point, obs_desc, offsets = [], [], [0]
    for n in names:
        image = rec.find_image_with_name(n)
        rows = list(image.get_observation_point2D_idxs())
        obs_point.append(np.array([index[p.point3D_id] for p in image.get_observation_points2D()], np.int32))
        obs_desc.append(descriptors[images[n].image_id][rows])
        offsets.append(offsets[-1] + len(rows))
    report("triangulate", t0, f"{len(points)} points, {offsets[-1]} observations")

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_image = [descriptors[images[n].image_id] for n in names]
    all_d = np.concatenate(per_image).astype(np.float32)
    k = int(min(num_words, max(2, len(all_d) // 20)))
    sample = all_d[rng.choice(len(all_d), size=min(len(all_d), 100 * k), replace=False)]
    words = _kmeans(sample, k, iterations=8, rng=rng)
    tf = np.stack([_bow_vector(d, words, np.ones(k, np.float32)) for d in per_image])
    idf = np.log(len(names) / np.maximum((tf > 0).sum(0), 1)).astype(np.float32)
    bow = np.stack([_bow_vector(d, words, idf) for d in per_image])
    thumbs = []
    for n in names:
        thumbs.append(_thumbnail(read_rgb(root / n), thumbnail_size))
    report("describe", t0, f"{k} visual words, thumbnails {thumbnail_size[0]}x{thumbnail_size[1]}")

    info = {"images": len(names), "points": len(points), "observations": int(offsets[-1]),
            "verified_pairs": n_verified, "timings": timings,
            "options": {"matcher": matcher, "overlap": int(overlap), "retrieval": int(retrieval),
                        "max_num_features": int(max_num_features), "num_words": int(num_words),
                        "thumbnail_size": list(thumbnail_size), "seed": int(seed),
                        "database": None if database is None else str(database)}}
    return LocalizationMap(names, x, q, intrinsics, points, np.array(offsets, np.int64), np.concatenate(obs_point),
                           np.concatenate(obs_desc).reshape(-1, 128), words.astype(np.float32), idf, bow,
                           np.stack(thumbs), tuple(thumbnail_size), int(max_num_features), info)


# ---------------------------------------------------------------------------- localizers
@dataclass
class Localization:
    """One query's answer: camera-to-world ``x`` (3,) metres and ``q`` (4,) w-first (NaN when there
    is no pose at all), ``localized`` (the method's own success test passed), ``seconds`` (wall time,
    image array to pose), ``num_matches`` and ``num_inliers`` (2D-3D; structure-based only), and
    ``retrieved``: the map images it retrieved, most similar first."""

    x: np.ndarray
    q: np.ndarray
    localized: bool
    seconds: float
    num_matches: int = 0
    num_inliers: int = 0
    retrieved: list[str] = field(default_factory=list)


def _check_query(image, K: Intrinsics) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise LocalizeError(f"a query must be a uint8 RGB (H, W, 3) or grey (H, W) image, got {img.dtype} {img.shape}")
    if img.shape[:2] != (K.height, K.width):
        raise LocalizeError(f"the map's camera is {K.width}x{K.height} but the query is {img.shape[1]}x{img.shape[0]}; "
                            "localise images of the map's camera at its resolution")
    return img


def _no_pose() -> tuple[np.ndarray, np.ndarray]:
    return np.full(3, np.nan), np.full(4, np.nan)


def _check_map(m) -> LocalizationMap:
    if not isinstance(m, LocalizationMap):
        raise LocalizeError(f"expected a LocalizationMap, got {type(m).__name__}")
    if len(m) == 0:
        raise LocalizeError("the map has no images")
    return m


class RetrievalLocalizer:
    """The pose of the most similar map image(s) by a global descriptor (``"bow"`` or ``"thumbnail"``;
    see the module docstring). ``k``: average the top k, weighted by cosine similarity. A query
    whose descriptor is empty (no SIFT features, or a flat image) is not localised (NaN pose)."""

    def __init__(self, localization_map: LocalizationMap, descriptor: str = "bow", k: int = 1):
        self.map = _check_map(localization_map)
        if descriptor not in DESCRIPTORS:
            raise LocalizeError(f"descriptor must be one of {', '.join(DESCRIPTORS)}, got {descriptor!r}")
        if int(k) < 1 or int(k) > len(self.map):
            raise LocalizeError(f"k must be in 1..{len(self.map)} (the map's images), got {k}")
        self.descriptor, self.k = descriptor, int(k)
        self.name = f"retrieval ({'bag of words' if descriptor == 'bow' else 'thumbnail'}, k={self.k})"
        self._sift = _Sift(self.map.max_num_features) if descriptor == "bow" else None

    @property
    def size_mb(self) -> float:
        """What it keeps in memory to answer queries (MB): poses and descriptors (and vocabulary)."""
        m = self.map
        return m.megabytes("x", "q", "words", "idf", "bow") if self.descriptor == "bow" else m.megabytes("x", "q", "thumbnails")

    def _vector(self, img: np.ndarray) -> np.ndarray:
        if self.descriptor == "thumbnail":
            return _thumbnail(img, self.map.thumbnail_size)
        return _bow_vector(self._sift(img)[1], self.map.words, self.map.idf)

    def localize(self, image: np.ndarray) -> Localization:
        """Pose of a uint8 query image of the map's camera and size."""
        img = _check_query(image, self.map.intrinsics)
        t0 = time.perf_counter()
        v = self._vector(img)
        if not np.any(v):
            x, q = _no_pose()
            return Localization(x, q, False, self._seconds(t0))
        sims = (self.map.thumbnails if self.descriptor == "thumbnail" else self.map.bow) @ v
        top = np.argsort(-sims, kind="stable")[:self.k]
        w = np.maximum(sims[top], 0.0)
        if self.k == 1 or w.sum() <= 0:
            x, q = self.map.x[top[0]].copy(), self.map.q[top[0]].copy()
        else:
            x, q = _weighted_pose(self.map.x[top], self.map.q[top], w)
        return Localization(x, q, True, self._seconds(t0), retrieved=[self.map.names[i] for i in top])

    def _seconds(self, t0: float) -> float:
        """Wall time since ``t0``, plus feature extraction skipped thanks to the memo."""
        return time.perf_counter() - t0 + (self._sift.credit if self._sift is not None else 0.0)


class RelativePoseLocalizer:
    """Image retrieval, then relative pose regression from the retrieved map image (Laskar et al.
    2017): MeNet, which on its own only tells how two views relate, turned into a localiser. The
    ``k`` most similar map images by the bag-of-words descriptor; the relative-pose ``model``
    (MeNet, stacked or siamese: (B, 6, H, W) with the map image's channels first, as it was trained)
    gives t_rel (metres, map camera axes) and q_rel from each to the query, composed with that map
    image's known pose (x = x_i + R_i t_rel, q = q_i q_rel; :func:`campose.geometry.apply_relative_pose`);
    with ``k > 1`` the similarity-weighted mean of the k estimates. ``size``: the model's input
    (width, height); ``image_root``: the folder the map's image names are relative to. The map images
    are read and shrunk to ``size`` once, here, and kept in memory (counted in :attr:`size_mb`)."""

    def __init__(self, localization_map: LocalizationMap, model, size: tuple[int, int], image_root: str | Path,
                 k: int = 1, label: str | None = None):
        from campose.dataset import read_rgb, resize_rgb

        self.map = _check_map(localization_map)
        if getattr(model, "in_channels", 3) != 6:
            raise LocalizeError(f"{type(model).__name__} is not a relative-pose model (MeNet): it takes "
                                f"{getattr(model, 'in_channels', '?')} channels, not a 6-channel image pair")
        self.model, self.size = model.eval(), (int(size[0]), int(size[1]))
        self._retrieval = RetrievalLocalizer(self.map, "bow", k)
        self.k = self._retrieval.k
        self.name = f"retrieval + {label or type(model).__name__} (k={self.k})"
        root = Path(image_root)
        missing = [n for n in self.map.names if not (root / n).is_file()]
        if missing:
            raise LocalizeError(f"{len(missing)} map image(s) are not under {root}, e.g. {missing[0]}")
        self._images = []
        for n in self.map.names:  # the networks' own resampling (resize_rgb), as in training
            self._images.append(resize_rgb(read_rgb(root / n), self.size))

    @property
    def size_mb(self) -> float:
        """Retrieval's descriptors, the shrunk map images and the model's float32 parameters (MB)."""
        params = sum(p.numel() for p in self.model.parameters()) * 4 / 1e6
        return self._retrieval.size_mb + sum(im.nbytes for im in self._images) / 1e6 + params

    def localize(self, image: np.ndarray) -> Localization:
        """Pose of a uint8 query image of the map's camera and size."""
        import torch

        from campose.dataset import image_to_tensor
        from campose.geometry import apply_relative_pose

        img = _check_query(image, self.map.intrinsics)
        t0 = time.perf_counter()
        v = self._retrieval._vector(img)
        if not np.any(v):
            x, q = _no_pose()
            return Localization(x, q, False, self._retrieval._seconds(t0))
        sims = self.map.bow @ v
        top = np.argsort(-sims, kind="stable")[:self.k]
        rgb = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        query = image_to_tensor(np.ascontiguousarray(rgb), self.size)
        pairs = torch.stack([torch.cat([image_to_tensor(self._images[i]), query], 0) for i in top])
        with torch.no_grad():
            t_rel, q_rel = self.model.predict_pose(pairs)
        xs, qs = apply_relative_pose(self.map.x[top], self.map.q[top], t_rel.double().numpy(), q_rel.double().numpy())
        w = np.maximum(sims[top], 0.0)
        if self.k == 1 or w.sum() <= 0:
            x, q = xs[0], qs[0]
        else:
            x, q = _weighted_pose(xs, qs, w)
        return Localization(x, q, True, self._retrieval._seconds(t0), retrieved=[self.map.names[i] for i in top])


class StructureLocalizer:
    """SIFT matches of the query against the map's 3D points, absolute pose by PnP + LO-RANSAC and
    refinement (see the module docstring). ``num_retrieved``: map images (bag of words) whose points
    are matched; ``ratio``: Lowe's ratio test; ``max_error_px``: RANSAC inlier threshold (pixels);
    ``min_inliers``: fewest inliers that count as localised; ``max_distance_m``: a pose whose camera
    centre is farther than this from every map camera is rejected as implausible (None: no check;
    it depends on the scene: indoors, where every query is taken near a mapped walk, 5 m removed
    the quick profile's few poses accepted hundreds of metres away with 30+ false inliers); ``fallback``: an unlocalised query gets the best retrieved map image's pose (else
    NaN); ``seed``: RANSAC's."""

    name = "structure-based (SIFT, PnP + RANSAC)"

    def __init__(self, localization_map: LocalizationMap, num_retrieved: int = 30, ratio: float = 0.8,
                 max_error_px: float = 8.0, min_inliers: int = 30, max_distance_m: float | None = None,
                 fallback: bool = True, seed: int = 0):
        import pycolmap

        self.map = _check_map(localization_map)
        if len(self.map.points) == 0:
            raise LocalizeError("the map has no 3D points: nothing to match a query against")
        if int(num_retrieved) < 1:
            raise LocalizeError(f"num_retrieved must be >= 1, got {num_retrieved}")
        if not 0 < ratio <= 1:
            raise LocalizeError(f"ratio must be in (0, 1], got {ratio}")
        if max_error_px <= 0:
            raise LocalizeError(f"max_error_px must be > 0, got {max_error_px}")
        if int(min_inliers) < 4:
            raise LocalizeError(f"min_inliers must be >= 4 (a pose from P3P needs a fourth point), got {min_inliers}")
        if max_distance_m is not None and not max_distance_m > 0:
            raise LocalizeError(f"max_distance_m must be > 0 metres or None, got {max_distance_m}")
        self.max_distance_m = None if max_distance_m is None else float(max_distance_m)
        self.num_retrieved = min(int(num_retrieved), len(self.map))
        self.ratio, self.min_inliers, self.fallback = float(ratio), int(min_inliers), bool(fallback)
        K = self.map.intrinsics
        self._camera = pycolmap.Camera(model="PINHOLE", width=K.width, height=K.height,
                                       params=[K.fx, K.fy, K.cx, K.cy])
        self._estimation = pycolmap.AbsolutePoseEstimationOptions()
        self._estimation.ransac.max_error = float(max_error_px)
        self._estimation.ransac.random_seed = int(seed)
        self._sift = _Sift(self.map.max_num_features)

    @property
    def size_mb(self) -> float:
        """What it keeps in memory to answer queries (MB): points, observed descriptors, vocabulary,
        image descriptors and poses."""
        return self.map.megabytes()

    def localize(self, image: np.ndarray) -> Localization:
        """Pose of a uint8 query image of the map's camera and size."""
        import pycolmap

        from campose.sfm import pose_from_cam_from_world

        img = _check_query(image, self.map.intrinsics)
        t0 = time.perf_counter()
        xy, desc = self._sift(img)
        m = self.map
        v = _bow_vector(desc, m.words, m.idf)
        if not np.any(v):
            x, q = _no_pose()
            return Localization(x, q, False, time.perf_counter() - t0 + self._sift.credit)
        top = np.argsort(-(m.bow @ v), kind="stable")[:self.num_retrieved]
        qd = _unit_rows(desc)
        p2, p3 = [], []
        for i in top:
            pid, dd = m.observations(i)
            qi, di = _match(qd, _unit_rows(dd), self.ratio)
            p2.append(qi)
            p3.append(pid[di])
        pairs = np.unique(np.stack([np.concatenate(p2), np.concatenate(p3)], 1).reshape(-1, 2), axis=0)
        retrieved = [m.names[i] for i in top]
        ret = None
        if len(pairs) >= 4:
            ret = pycolmap.estimate_and_refine_absolute_pose(xy[pairs[:, 0]], m.points[pairs[:, 1]], self._camera,
                                                              self._estimation)
        inliers = int(ret["num_inliers"]) if ret is not None else 0
        ok = inliers >= self.min_inliers
        if ok:
            x, q = pose_from_cam_from_world(ret["cam_from_world"])
            ok = self.max_distance_m is None or bool(np.min(np.linalg.norm(m.x - x, axis=1)) <= self.max_distance_m)
        if not ok:
            x, q = (m.x[top[0]].copy(), m.q[top[0]].copy()) if self.fallback else _no_pose()
        return Localization(x, q, ok, time.perf_counter() - t0 + self._sift.credit, len(pairs), inliers, retrieved)


# ---------------------------------------------------------------------------- the profile's map
def profile_map(profile="quick", labels: str | None = None, force: bool = False,
                progress: bool | None = None) -> LocalizationMap:
    """Stage ``localize/map-<labels>``: the map of a profile's **training** walks with their label
    poses (``labels``: "sfm" or "truth", default the profile's: what its networks train on), images
    from the render stage, the renderer's intrinsics, SfM settings of ``profile.sfm`` (overlap,
    retrieval, features). Where the profile's SfM stage kept its COLMAP database (``sfm/work/``),
    its features and matches among the training images are reused (``build_map(database=...)``).
    Cached by the renders, the labels, the SfM stage and these settings; a rerun loads it."""
    from campose import pipeline

    prof = pipeline.get_profile(profile)
    labels = prof.labels if labels is None else labels
    seqs, _ = pipeline.labelled_sequences(prof, labels, progress=progress)
    train = {n: s for n, s in seqs.items() if s.split == "train"}
    if not train:
        raise LocalizeError(f"profile {prof.name} has no training walks to build a map from")
    names = [pipeline.sfm_name(n, img) for n, s in train.items() for img in s.images]
    x = np.concatenate([s.x for s in train.values()])
    q = np.concatenate([s.q for s in train.values()])
    settings = {"matcher": "sequential", "overlap": int(prof.sfm.get("overlap", 8)),
                "retrieval": int(prof.sfm.get("retrieval", 5)),
                "max_num_features": int(prof.sfm.get("max_num_features", 8192)), "num_words": NUM_WORDS,
                "thumbnail_size": THUMBNAIL_SIZE, "seed": int(prof.sfm.get("seed", 0))}
    # the SfM stage's database already holds these images' features and verified matches (made with
    # the same settings): reuse it rather than extract and match again (quick: ~100 s saved)
    sfm_db = pipeline.stage_dir(prof, "sfm") / "work" / "database.db"
    sfm_key = pipeline.sfm_database_key(prof)  # what the database holds, not how it was mapped
    out = pipeline.stage_dir(prof, "localize") / f"map-{labels}"
    key = pipeline.content_key({"v": STAGE_VERSION, "render": pipeline.render_key(prof), "labels": labels,
                                "labels_stage": pipeline.stage_key(prof, "labels") if labels == "sfm" else None,
                                "features_from_sfm": sfm_key, "train": sorted(train), **settings})
    if force or not pipeline.stage_is_current(out, key, needs="map/map.json"):
        progress = pipeline.show_progress() if progress is None else progress
        t0 = time.perf_counter()
        m = build_map(pipeline.stage_dir(prof, "render"), names, x, q, prof.intrinsics(), out / "work",
                      progress=progress, database=sfm_db if sfm_key else None, **settings)
        m.save(out / "map")
        shutil.rmtree(out / "work", ignore_errors=True)
        pipeline.mark_stage(out, key, {"labels": labels, "images": len(m), "points": len(m.points),
                                       "timings": m.info["timings"], "seconds": time.perf_counter() - t0})
    return LocalizationMap.load(out / "map")


# ---------------------------------------------------------------------------- evaluation
@dataclass
class LocalizerEvaluation(Evaluation):
    """:class:`campose.evaluate.Evaluation` of a localizer (``predictions``, ``frames``, ``table``),
    plus ``method`` (its name), ``localizations`` (sequence -> list of :class:`Localization`, every
    frame) and ``size_mb`` (what the method keeps in memory). ``frames`` has two more columns,
    ``localized`` and ``ms`` (time per query); a frame with no pose at all (NaN) gets infinite
    errors there, so it counts as a failure in medians and shares (and makes the mean infinite).
    ``table`` adds ``localized (%)``, ``median ms`` and ``mean ms``."""

    method: str = ""
    localizations: dict = field(default_factory=dict)
    size_mb: float = float("nan")

    def overall(self, reference: str = "truth") -> dict:
        """One row for a comparison table: the method, its pooled scores against ``reference``
        (the ``all`` row, or the one sequence), and its size in MB."""
        t = self.table.xs(reference, level="reference")
        row = t.loc["all"] if "all" in t.index else t.iloc[0]
        return {"method": self.method, **row.to_dict(), "size (MB)": self.size_mb}


def evaluate_sequences(localizer, sequences, references: dict, progress: bool | None = None):
    """Localise every frame of ``sequences`` (name -> :class:`campose.dataset.Sequence`, or a list)
    and score against each reference (name -> {sequence name -> Sequence}, e.g. ``{"labels": ...,
    "truth": ...}``) as :func:`campose.evaluate.evaluate` does. ``localizer``: one localiser, or a
    list of them, scored in one pass over the frames (each image is read once and its SIFT
    features are extracted once for all of them; every method's time still includes extraction).
    Returns a :class:`LocalizerEvaluation`, or a list of them for a list."""
    from tqdm.auto import tqdm

    from campose.pipeline import show_progress

    many = isinstance(localizer, (list, tuple))
    locs = list(localizer) if many else [localizer]
    if not locs:
        raise LocalizeError("no localiser to evaluate")
    seqs = dict(sequences) if isinstance(sequences, dict) else {s.name: s for s in sequences}
    progress = show_progress() if progress is None else progress
    found = [{} for _ in locs]
    for name, s in seqs.items():
        desc = locs[0].name if len(locs) == 1 else f"{len(locs)} localisers"
        for r in found:
            r[name] = []
        for i in tqdm(range(len(s)), desc=f"{desc}: {name}", disable=not progress, leave=False):
            image = s.load_image(i)
            for k, loc in enumerate(locs):
                found[k][name].append(loc.localize(image))
    out = [_score(loc, f, seqs, references) for loc, f in zip(locs, found)]
    return out if many else out[0]


def _score(localizer, found: dict, seqs: dict, references: dict) -> LocalizerEvaluation:
    """A :class:`LocalizerEvaluation` of one localiser's answers (sequence -> list of Localization)."""
    preds, named = {}, {}
    for name, results in found.items():
        x = np.array([r.x for r in results], float).reshape(-1, 3)
        q = np.array([r.q for r in results], float).reshape(-1, 4)
        preds[name], named[name] = (x, q), (list(seqs[name].images), x, q)
    frames = frame_errors(named, references)
    ok = {(n, i): (r.localized, 1e3 * r.seconds) for n, rs in found.items() for i, r in enumerate(rs)}
    keys = list(zip(frames["sequence"], frames["frame"]))
    frames["localized"] = [ok[k][0] for k in keys]
    frames["ms"] = [ok[k][1] for k in keys]
    no_pose = ~np.isfinite(frames[["x", "y", "z"]].to_numpy(float)).all(axis=1)
    frames.loc[no_pose, ["position_m", "rotation_deg"]] = np.inf
    table = summarize(frames)
    extra = {"localized (%)": [], "median ms": [], "mean ms": []}
    for ref, seq in table.index:
        g = frames[(frames["reference"] == ref) & ((frames["sequence"] == seq) | (seq == "all"))]
        extra["localized (%)"].append(100.0 * float(g["localized"].mean()))
        extra["median ms"].append(float(g["ms"].median()))
        extra["mean ms"].append(float(g["ms"].mean()))
    for k, v in extra.items():
        table[k] = v
    return LocalizerEvaluation(preds, frames, table, localizer.name, found, float(localizer.size_mb))


def evaluate_localizer(profile, localizer, labels: str | None = None, progress: bool | None = None):
    """Score a localizer (or a list of them, in one pass: :func:`evaluate_sequences`) on the
    profile's test walks (every rendered frame) against the labels and the truth
    (:func:`campose.pipeline.test_walks`), like :func:`campose.pipeline.evaluate_model`."""
    from campose.pipeline import test_walks

    test, refs = test_walks(profile, labels)
    return evaluate_sequences(localizer, test, refs, progress)
