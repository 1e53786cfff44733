"""Structure from motion with pycolmap (COLMAP) on the CPU: images in, poses and a sparse map out.

This is the only module that touches COLMAP's pose convention (world-to-camera, ``cam_from_world``,
quaternions x, y, z, w); everything it returns is camera-to-world with w-first quaternions.

:func:`reconstruct` runs the whole pipeline (a fresh database every run, SIFT extraction with one
shared camera, sequential or exhaustive matching plus pairs found by image retrieval
(:func:`retrieval_pairs`, a small bag of visual words) and optional explicit loop pairs, then
incremental or global mapping) and returns an :class:`SfmResult`; :func:`read_colmap_text_model` reads a COLMAP model
(e.g. ground truth) into the same convention.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from campose.camera import Intrinsics
from campose.geometry import camera_to_world_from_cw, world_to_camera

__all__ = [
    "IMAGE_EXTENSIONS",
    "COLMAP_MIN_INLIERS",
    "SfmError",
    "SfmWarning",
    "SfmResult",
    "set_colmap_verbosity",
    "to_grey",
    "sift_keypoints",
    "list_images",
    "pose_from_cam_from_world",
    "cam_from_world_from_pose",
    "poses_from_reconstruction",
    "extract_features",
    "match_features",
    "drop_weak_pairs",
    "verified_pair_errors",
    "reconstruct",
    "retrieval_pairs",
    "read_colmap_text_model",
    "read_colmap_camera",
]

#: COLMAP's own minimum of inlier matches for a verified pair (``TwoViewGeometryOptions.min_num_inliers``):
#: the default of :func:`reconstruct`'s ``min_inliers``.
COLMAP_MIN_INLIERS = 15

#: File endings :func:`list_images` treats as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")


class SfmError(RuntimeError):
    """Structure from motion cannot run or built nothing usable; the message says why."""


class SfmWarning(UserWarning):
    """SfM ran but the result is partial (e.g. the scene broke into several models)."""


def set_colmap_verbosity(verbose: bool = False) -> None:
    """COLMAP logs every step at INFO level; keep it to warnings and errors unless asked."""
    import pycolmap

    pycolmap.logging.minloglevel = 0 if verbose else 2


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) or grey (H, W) -> float32 grey in [0, 1], as COLMAP's SIFT expects."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    return (img / 255.0).astype(np.float32)


def sift_keypoints(image: np.ndarray, max_num_features: int = 8192) -> np.ndarray:
    """COLMAP's SIFT keypoints of an image (CPU): (N, 4) rows of x, y (pixels), scale, orientation."""
    import pycolmap

    set_colmap_verbosity(False)
    opts = pycolmap.FeatureExtractionOptions()
    opts.sift.max_num_features = int(max_num_features)
    extractor = pycolmap.FeatureExtractor.create(opts, device=pycolmap.Device.cpu)
    kps, _ = extractor.extract_from_float32_array(to_grey(image))
    return np.array([[k.x, k.y, k.compute_scale(), k.compute_orientation()] for k in kps]).reshape(-1, 4)


# ---------------------------------------------------------------------------- pose conversion
def pose_from_cam_from_world(cam_from_world) -> tuple[np.ndarray, np.ndarray]:
    """Our camera-to-world pose (centre x (3,), q (4,) w-first, w >= 0) of a ``pycolmap.Rigid3d``
    world-to-camera transform (``image.cam_from_world()``). The one place COLMAP poses are converted."""
    return camera_to_world_from_cw(cam_from_world.rotation.matrix(), np.asarray(cam_from_world.translation, float))


def cam_from_world_from_pose(x, q):
    """The ``pycolmap.Rigid3d`` world-to-camera transform of our camera-to-world pose (centre x (3,)
    metres, q (4,) w-first): the inverse of :func:`pose_from_cam_from_world`, for giving COLMAP known poses."""
    import pycolmap

    R_cw, t_cw = world_to_camera(x, q)
    return pycolmap.Rigid3d(pycolmap.Rotation3d(R_cw), t_cw)


def poses_from_reconstruction(rec, names: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, x (N, 3), q (N, 4)) of the images with a pose in a ``pycolmap.Reconstruction``.

    Images are matched by ``image.name`` (COLMAP's image ids are not in file order). With
    ``names``, the result keeps that order and leaves out names without a pose; otherwise it is
    sorted by name.
    """
    posed = {im.name: im for im in rec.images.values() if im.has_pose}
    order = sorted(posed) if names is None else [n for n in names if n in posed]
    if not order:
        return [], np.zeros((0, 3)), np.zeros((0, 4))
    T = [posed[n].cam_from_world() for n in order]
    R_cw = np.stack([t.rotation.matrix() for t in T])
    t_cw = np.stack([np.asarray(t.translation, float) for t in T])
    x, q = camera_to_world_from_cw(R_cw, t_cw)
    return order, x, q


def _points_from_reconstruction(rec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = sorted(rec.point3D_ids())
    if not ids:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0)
    pts = [rec.points3D[i] for i in ids]
    xyz = np.array([p.xyz for p in pts], float).reshape(-1, 3)
    rgb = np.array([p.color for p in pts], np.uint8).reshape(-1, 3)
    err = np.array([p.error for p in pts], float)
    return xyz, rgb, err


def _camera_dict(cam) -> dict:
    return {"model": cam.model.name, "width": int(cam.width), "height": int(cam.height),
            "params": [float(v) for v in cam.params], "params_info": cam.params_info}


# ---------------------------------------------------------------------------- result
@dataclass(eq=False)
class SfmResult:
    """A reconstruction in our convention (the SfM frame: arbitrary origin, rotation and scale).

    ``names``: registered image names relative to the image root (input order); ``x`` (N, 3) and
    ``q`` (N, 4, w-first) their camera-to-world poses; ``points`` (P, 3), ``point_colors``
    (P, 3) uint8 and ``point_errors`` (P,, mean reprojection error in pixels) the sparse map;
    ``registered`` / ``total`` images; ``num_models`` and ``model_sizes`` (registered images per
    model, largest first: the first one is the one kept); ``timings`` in seconds per step
    (extract, match, map); ``camera`` the shared camera as refined by the mapper (COLMAP model
    name, width, height, params); ``model_dir`` the COLMAP (binary) model folder.
    """

    names: list[str]
    x: np.ndarray
    q: np.ndarray
    points: np.ndarray
    point_colors: np.ndarray
    point_errors: np.ndarray
    registered: int
    total: int
    num_models: int
    model_sizes: list[int]
    timings: dict[str, float]
    camera: dict
    model_dir: Path | None
    unregistered: list[str] = field(default_factory=list)
    database_path: Path | None = None
    options: dict = field(default_factory=dict)
    reconstruction: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def registration_rate(self) -> float:
        """Share of the input images that got a pose (0..1)."""
        return self.registered / self.total if self.total else 0.0

    def pose_of(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x (3,), q (4,)) of one registered image, by its name relative to the image root."""
        try:
            i = self.names.index(name)
        except ValueError:
            why = "was not registered" if name in self.unregistered else "is not one of the input images"
            raise KeyError(f"image {name!r} {why}; {self.registered} of {self.total} images have a pose") from None
        return self.x[i].copy(), self.q[i].copy()

    def summary(self) -> str:
        t = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        models = "" if self.num_models <= 1 else f" (largest of {self.num_models} models: {self.model_sizes})"
        return (f"{self.registered}/{self.total} images registered{models}, {len(self.points)} points, "
                f"camera {self.camera.get('model')} {self.camera.get('params')}; {t}")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``folder/model`` (COLMAP binary), ``folder/poses.csv`` (the design's format) and
        ``folder/sfm.json`` (counts, timings, camera, options); atomically. Returns ``folder``."""
        from campose.dataset import atomic_dir, write_poses

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            model = tmp / "model"
            if self.reconstruction is not None:
                model.mkdir()
                self.reconstruction.write(str(model))
            elif self.model_dir is not None and Path(self.model_dir).is_dir():
                shutil.copytree(self.model_dir, model)
            else:
                raise SfmError("this result has neither a reconstruction nor a model folder to save")
            write_poses(tmp / "poses.csv", self.names, self.x, self.q)
            meta = {
                "format": "campose.sfm/1",
                "names": list(self.names),
                "unregistered": list(self.unregistered),
                "registered": self.registered,
                "total": self.total,
                "num_models": self.num_models,
                "model_sizes": list(self.model_sizes),
                "timings": dict(self.timings),
                "camera": self.camera,
                "options": self.options,
            }
            (tmp / "sfm.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SfmResult":
        """Read a folder written by :meth:`save`."""
        import pycolmap

        folder = Path(folder)
        meta_path, model = folder / "sfm.json", folder / "model"
        if not meta_path.is_file() or not model.is_dir():
            raise SfmError(f"{folder} is not a saved SfM result (needs sfm.json and model/)")
        meta = json.loads(meta_path.read_text())
        rec = pycolmap.Reconstruction()
        rec.read(str(model))
        names, x, q = poses_from_reconstruction(rec, meta["names"])
        if names != meta["names"]:
            raise SfmError(f"{folder}: the model has poses for {len(names)} of the {len(meta['names'])} "
                           "images listed in sfm.json")
        pts, rgb, err = _points_from_reconstruction(rec)
        return cls(names, x, q, pts, rgb, err, meta["registered"], meta["total"], meta["num_models"],
                   meta["model_sizes"], meta["timings"], meta["camera"], model, meta.get("unregistered", []),
                   None, meta.get("options", {}), rec)


# ---------------------------------------------------------------------------- inputs
def list_images(image_root: str | Path, exclude: Iterable[str | Path] = ()) -> list[str]:
    """Image files under ``image_root`` (recursively; hidden files and folders skipped), as
    POSIX paths relative to it, sorted by name: ``["seq-01/000000.png", ...]``."""
    root = Path(image_root)
    skip = [Path(p).resolve() for p in exclude]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in skip)
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                out.append((d / f).relative_to(root).as_posix())
    return sorted(out)


def _image_sizes(root: Path, names: list[str]) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """{name: (width, height)} of the readable images (header only) and the unreadable names."""
    from PIL import Image, UnidentifiedImageError

    sizes, bad = {}, []
    for n in names:
        try:
            with Image.open(root / n) as im:
                sizes[n] = im.size
        except (UnidentifiedImageError, OSError, ValueError):
            bad.append(n)
    return sizes, bad


def _check_inputs(image_root, image_names, intrinsics, out_dir) -> tuple[Path, list[str], list[str], tuple[int, int]]:
    root = Path(image_root)
    if not root.is_dir():
        raise SfmError(f"image folder not found: {root}")
    if image_names is None:
        names = list_images(root, exclude=[out_dir])
        if not names:
            others = [p.name for p in root.iterdir() if not p.name.startswith(".")]
            what = f"it holds {len(others)} other file(s), e.g. {sorted(others)[0]!r}" if others else "it is empty"
            raise SfmError(f"no images in {root}: {what}; expected {', '.join(IMAGE_EXTENSIONS)} files "
                           "(in it or in sub-folders)")
    else:
        names = [Path(str(n)).as_posix() for n in image_names]
        if not names:
            raise SfmError("image_names is empty")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SfmError(f"image_names lists {len(dup)} name(s) twice, e.g. {dup[0]!r}")
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise SfmError(f"{len(missing)} of the {len(names)} images are missing under {root}, e.g. {missing[0]!r}")
    sizes, bad = _image_sizes(root, names)
    if not sizes:
        raise SfmError(f"no readable images in {root}: none of the {len(names)} file(s) could be opened as an "
                       f"image (e.g. {names[0]!r})")
    if bad:
        warnings.warn(f"skipping {len(bad)} unreadable image file(s) in {root}, e.g. {bad[0]!r}", SfmWarning,
                      stacklevel=3)
    readable = [n for n in names if n in sizes]
    if len(readable) < 3:
        raise SfmError(f"structure from motion needs at least 3 images, got {len(readable)} readable in {root}")
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        ex = {s: next(n for n in readable if sizes[n] == s) for s in distinct[:3]}
        raise SfmError("one shared camera needs images of one size; found " +
                       ", ".join(f"{w}x{h} (e.g. {n!r})" for (w, h), n in ex.items()))
    wh = distinct[0]
    if intrinsics is not None and (intrinsics.width, intrinsics.height) != wh:
        raise SfmError(f"the images are {wh[0]}x{wh[1]} but the intrinsics are for {intrinsics.width}x"
                       f"{intrinsics.height}; pass intrinsics.scaled({wh[0]}, {wh[1]}) if it is the same camera")
    return root, readable, bad, wh


def _fresh(path: Path) -> None:
    """Remove a stale file or folder (and SQLite's side files) so a run never reuses old state."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def extract_features(db_path: str | Path, image_root: str | Path, names: Sequence[str],
                     intrinsics: Intrinsics | None = None, *, max_num_features: int = 8192,
                     max_image_size: int | None = None, num_threads: int = 2) -> None:
    """COLMAP SIFT of ``names`` (relative to ``image_root``) into the database ``db_path``.

    All images get one camera: PINHOLE with ``intrinsics`` (pixels) when given, else COLMAP's
    SIMPLE_RADIAL estimate. ``max_num_features`` per image; ``max_image_size``: downscale larger
    images for extraction (keypoints stay in full-size pixels). The caller sets COLMAP's verbosity.
    """
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    if intrinsics is not None:
        reader.camera_model = "PINHOLE"
        reader.camera_params = intrinsics.colmap_params()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = int(num_threads)
    extraction.sift.max_num_features = int(max_num_features)
    if max_image_size:
        extraction.max_image_size = int(max_image_size)
    pycolmap.extract_features(Path(db_path), Path(image_root), image_names=list(names),
                              camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              extraction_options=extraction)


def match_features(db_path: str | Path, names: Sequence[str], pairs_file: str | Path, *,
                   matcher: str = "sequential", overlap: int = 10, retrieval: int = 0,
                   extra_pairs: Sequence[tuple[str, str]] = (), num_threads: int = 2,
                   seed: int = 0) -> list[tuple[str, str]]:
    """Match the features in ``db_path`` and verify every pair geometrically (RANSAC seeded by ``seed``).

    ``matcher``: "sequential" (COLMAP's quadratic ``overlap`` in name order, no loop detection) or
    "exhaustive"; then the ``retrieval`` most similar images of each image (:func:`retrieval_pairs`;
    0: none) and ``extra_pairs`` (name pairs, e.g. loop closures) are matched too, through a pair
    list written to ``pairs_file`` (pairs with an image missing from the database are left out).
    Returns the retrieval pairs found. Raises :class:`SfmError` when a pair list would need names
    with spaces.
    """
    import pycolmap

    db_path = Path(db_path)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = int(num_threads)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(seed)
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(db_path, matching_options=matching, verification_options=verification)
    elif matcher == "sequential":
        seq = pycolmap.SequentialPairingOptions(overlap=int(overlap), loop_detection=False)
        pycolmap.match_sequential(db_path, matching_options=matching, pairing_options=seq,
                                  verification_options=verification)
    else:
        raise SfmError(f"matcher must be 'sequential' or 'exhaustive', got {matcher!r}")
    found = []
    if int(retrieval) > 0:
        found = retrieval_pairs(db_path, int(retrieval), names=list(names),
                                skip_within=int(overlap) if matcher == "sequential" else None, seed=seed)
    pairs = _unique_pairs(list(extra_pairs) + found)
    if pairs:
        if any(any(c.isspace() for c in n) for ab in found for n in ab):
            raise SfmError("COLMAP's pair lists cannot hold image names with spaces; rename the images "
                           "or use retrieval=0")
        with pycolmap.Database.open(db_path) as db:
            in_db = {im.name for im in db.read_all_images()}
        Path(pairs_file).write_text("".join(f"{a} {b}\n" for a, b in pairs if a in in_db and b in in_db))
        imported = pycolmap.ImportedPairingOptions()
        imported.match_list_path = str(pairs_file)
        pycolmap.match_image_pairs(db_path, matching_options=matching, pairing_options=imported,
                                   verification_options=verification)
    return found


def drop_weak_pairs(db_path: str | Path, min_inliers: int) -> tuple[int, int]:
    """Remove the verified two-view geometries with fewer than ``min_inliers`` inlier matches from
    the database ``db_path`` (the raw matches stay), so the mapper never sees them. Returns
    (dropped, kept) among the pairs that had inliers.

    Why: on the rendered floor's 2,620 frames, 8 % of the verified pairs (1,537 of 18,547) were
    false matches between look-alike places 7-44 m apart (their inliers are 5 px or more off the
    true epipolar lines), nearly all verified only by a fundamental matrix and with 15-60 inliers
    (median 16); the global mapper put whole stretches of walks in the wrong place from them.
    With 30 inliers 23 of them stayed and still misplaced four stretches; with 64 none stayed and
    the graph stayed connected (12,544 pairs). COLMAP's own default is 15. A higher threshold also
    drops weak true pairs, which a sparse photo set may need: check the result, e.g. by the
    control-point residuals of :func:`campose.align.align_with_control_points`.
    """
    import pycolmap

    if int(min_inliers) < 1:
        raise SfmError(f"min_inliers must be >= 1, got {min_inliers}")
    with pycolmap.Database.open(str(db_path)) as db:
        pair_ids, counts = db.read_two_view_geometry_num_inliers()
        weak = [p for p, n in zip(pair_ids, counts) if 0 < n < int(min_inliers)]
        for p in weak:
            db.delete_two_view_geometry(*pycolmap.pair_id_to_image_pair(p))
        kept = sum(1 for n in counts if n >= int(min_inliers))
    return len(weak), kept


def verified_pair_errors(db_path: str | Path, poses: dict) -> list[dict]:
    """How well each verified pair of the database ``db_path`` agrees with known poses (ground truth):
    for every pair with inliers, the median Sampson distance (pixels) of its inlier matches to the
    epipolar geometry of the two true poses. A true pair sits near 0-1 px; a false match between
    look-alike places is many pixels off. ``poses``: image name -> (x (3,), q (4,)), our
    camera-to-world convention; pairs with an image missing from it are skipped. Uses the
    database's cameras (their pinhole part: distortion is ignored).

    Returns one dict per pair: ``a``, ``b`` (names), ``config`` (COLMAP's verification: CALIBRATED,
    UNCALIBRATED, ...), ``inliers``, ``sampson_px`` (median), ``distance_m`` (between the true
    camera centres). A diagnostic for benchmarks and studies, not for the pipeline (it needs truth).
    """
    import pycolmap

    with pycolmap.Database.open(str(db_path)) as db:
        images = {im.image_id: im for im in db.read_all_images()}
        K_inv = {c.camera_id: np.linalg.inv(c.calibration_matrix()) for c in db.read_all_cameras()}
        pair_ids, geometries = db.read_two_view_geometries()
        wanted = {i for p in pair_ids for i in pycolmap.pair_id_to_image_pair(p)}
        keypoints = {i: db.read_keypoints(i)[:, :2].astype(float) for i in wanted
                     if i in images and images[i].name in poses}
    rows = []
    for p, g in zip(pair_ids, geometries):
        i1, i2 = pycolmap.pair_id_to_image_pair(p)
        m = np.asarray(g.inlier_matches)
        if len(m) == 0 or i1 not in keypoints or i2 not in keypoints:
            continue
        (x1, q1), (x2, q2) = poses[images[i1].name], poses[images[i2].name]
        R1, t1 = world_to_camera(np.asarray(x1, float), np.asarray(q1, float))
        R2, t2 = world_to_camera(np.asarray(x2, float), np.asarray(q2, float))
        R, t = R2 @ R1.T, t2 - R2 @ R1.T @ t1  # cam2_from_cam1
        tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
        F = K_inv[images[i2].camera_id].T @ tx @ R @ K_inv[images[i1].camera_id]
        a = np.c_[keypoints[i1][m[:, 0]], np.ones(len(m))]
        b = np.c_[keypoints[i2][m[:, 1]], np.ones(len(m))]
        Fa, Ftb = a @ F.T, b @ F
        den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
        sampson = np.abs(np.sum(b * Fa, axis=1)) / np.sqrt(np.maximum(den, 1e-300))
        rows.append({"a": images[i1].name, "b": images[i2].name, "config": pycolmap.TwoViewGeometryConfiguration(int(g.config)).name, "inliers": len(m),
                     "sampson_px": float(np.median(sampson)),
                     "distance_m": float(np.linalg.norm(np.asarray(x1, float) - np.asarray(x2, float)))})
    return rows


# ---------------------------------------------------------------------------- pipeline
def reconstruct(
    image_root: str | Path,
    out_dir: str | Path,
    image_names: Sequence[str] | None = None,
    intrinsics: Intrinsics | None = None,
    matcher: str = "sequential",
    overlap: int = 10,
    loop_pairs: Sequence[tuple[str, str]] | None = None,
    retrieval: int = 0,
    mapper: str = "incremental",
    features_from: str | Path | None = None,
    reuse_matches: bool = False,
    max_image_size: int | None = None,
    max_num_features: int = 8192,
    global_tracks_per_view: int | None = None,
    global_retriangulation: bool = True,
    min_inliers: int = COLMAP_MIN_INLIERS,
    num_threads: int = 2,
    seed: int = 0,
    verbose: bool = False,
    progress: bool = True,
) -> SfmResult:
    """Images -> camera poses and a sparse map, with pycolmap on the CPU.

    ``image_root``: folder of images; ``image_names``: names relative to it (nested folders such as
    ``"seq-01/000000.png"`` are fine, so several sequences can be reconstructed together); default
    all images under it. All images share one camera: PINHOLE with ``intrinsics`` held fixed when
    given (they must be for the images' size), COLMAP's SIMPLE_RADIAL estimate otherwise.

    ``matcher``: "sequential" (each image with the images 1, 2, 4, ..., 2**(overlap - 1) places
    later in name order: COLMAP 4's quadratic overlap, which replaces the linear one; no loop
    detection) or "exhaustive" (all pairs; cost grows with the square of the image count). ``loop_pairs``: extra (name_a, name_b) pairs matched in addition.
    ``retrieval``: also match every image with its ``retrieval`` most similar images by
    :func:`retrieval_pairs` (0: off); this is what links separate sequences of the same place and
    closes loops, in time linear in the image count. ``mapper``: "incremental" (COLMAP's default,
    image by image) or "global" (GLOMAP: rotation averaging and global positioning, then bundle
    adjustment). On the walk-throughs of the default floor the global mapper was the more accurate
    and put all frames into one model; on castle-P30 (30 wide-baseline photos) it registered every
    photo but got the geometry wrong (5.4 m median error against 7 cm for the incremental mapper)
    until the false pairs were dropped: 72 of its 207 verified pairs had 15-51 inliers and did not
    fit the true geometry, and with ``min_inliers=64`` the global mapper gave 1.9 cm / 0.04 deg
    (``benchmarks/castle_p30.py``). Use the global mapper with a high ``min_inliers``, and check
    its result against a few known positions. ``features_from``: the ``database.db`` of an earlier
    run on the same images; its keypoints and descriptors are reused (matches are dropped), so
    matcher and mapper settings can be compared without extracting again. ``reuse_matches``
    (with ``features_from``): keep that run's verified matches as well and go straight to mapping
    (``matcher``, ``overlap``, ``loop_pairs`` and ``retrieval`` are then ignored), to compare mappers.
    ``max_image_size``: downscale larger images for extraction (poses stay in full-size pixels).
    ``global_tracks_per_view`` (global mapper only): build the global positioning and bundle
    adjustment problems from just enough of the longest tracks to give every image this many
    (GLOMAP's ``required_tracks_per_view``; None: all tracks); retriangulation afterwards still
    triangulates every track. On the full profile's 2,620 frames all 600k tracks made mapping run
    for over an hour; 256 per image kept 39k. ``global_retriangulation`` (global mapper only): after
    bundle adjustment, triangulate all tracks again and refine (GLOMAP's last step; False skips it:
    the cameras come from the selected tracks alone and the sparse map holds only those). On the
    full profile it was still running after 27 minutes, so the full profile skips it.
    ``min_inliers``: verified pairs with fewer inlier matches are dropped before mapping
    (:func:`drop_weak_pairs`; also applied to reused matches). COLMAP's default, 15, let false
    matches between look-alike places break the global mapper's models of the full profile and
    of castle-P30; both use 64. It stays the default here because a few weak images may have no
    pair that strong (at 320x240 a walk's first frame lost its only pairs at 40).

    ``out_dir`` gets a fresh ``database.db`` and the models in ``sparse/<i>`` every run. When the
    mapper builds several models the largest is kept and an :class:`SfmWarning` names the sizes.
    Raises :class:`SfmError` for missing/empty folders, no readable images, fewer than 3 images,
    or when no model could be built.
    """
    import pycolmap

    if matcher not in ("sequential", "exhaustive"):
        raise SfmError(f"matcher must be 'sequential' or 'exhaustive', got {matcher!r}")
    if mapper not in ("incremental", "global"):
        raise SfmError(f"mapper must be 'incremental' or 'global', got {mapper!r}")
    if int(retrieval) < 0:
        raise SfmError(f"retrieval must be >= 0 (images retrieved per image), got {retrieval}")
    if int(overlap) < 1:
        raise SfmError(f"overlap must be >= 1, got {overlap}")
    if int(min_inliers) < 1:
        raise SfmError(f"min_inliers must be >= 1 (inlier matches a verified pair needs), got {min_inliers}")
    if global_tracks_per_view is not None and int(global_tracks_per_view) < 1:
        raise SfmError(f"global_tracks_per_view must be >= 1 or None, got {global_tracks_per_view}")
    if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
        raise SfmError(f"intrinsics must be a campose.camera.Intrinsics, got {type(intrinsics).__name__}")
    out = Path(out_dir)
    root, names, skipped, (width, height) = _check_inputs(image_root, image_names, intrinsics, out)
    pairs = _check_loop_pairs(loop_pairs, names)

    out.mkdir(parents=True, exist_ok=True)
    db_path, sparse = out / "database.db", out / "sparse"
    _fresh(db_path)
    _fresh(sparse)
    sparse.mkdir()
    num_threads = int(num_threads)
    timings: dict[str, float] = {}

    def report(step: str, seconds: float, what: str) -> None:
        timings[step] = round(seconds, 3)
        if progress:
            print(f"sfm {step:<8s} {seconds:7.1f} s  {what}", flush=True)

    old_level = pycolmap.logging.minloglevel
    set_colmap_verbosity(verbose)
    try:
        pycolmap.set_random_seed(int(seed))
        # -- extract
        t0 = time.perf_counter()
        if features_from is not None:
            _reuse_features(Path(features_from), db_path, names, keep_matches=reuse_matches)
        elif reuse_matches:
            raise SfmError("reuse_matches needs features_from (the database whose matches to reuse)")
        else:
            extract_features(db_path, root, names, intrinsics, max_num_features=max_num_features,
                             max_image_size=max_image_size, num_threads=num_threads)
        with pycolmap.Database.open(db_path) as db:
            n_db, n_kp = db.num_images(), db.num_keypoints()
            in_db = {im.name for im in db.read_all_images()}
        if n_db < 3:
            raise SfmError(f"COLMAP could read only {n_db} of the {len(names)} images in {root}; "
                           "structure from motion needs at least 3")
        report("extract", time.perf_counter() - t0,
               f"{n_db} images {width}x{height}, {n_kp / n_db:.0f} keypoints/image"
               + (f" (reused from {features_from})" if features_from is not None else ""))

        # -- match
        t0 = time.perf_counter()
        if reuse_matches:
            pairs, found = [], []
        else:
            found = match_features(db_path, names, out / "extra_pairs.txt", matcher=matcher, overlap=overlap,
                                   retrieval=retrieval, extra_pairs=pairs, num_threads=num_threads, seed=seed)
        dropped, n_verified = drop_weak_pairs(db_path, min_inliers)
        with pycolmap.Database.open(db_path) as db:
            n_pairs = db.num_matched_image_pairs()
        extra = (f" + {len(pairs)} loop pairs" if pairs else "") + (f" + {len(found)} retrieval pairs" if found else "")
        what = (f"reused from {features_from}" if reuse_matches
                else f"{matcher}{f' (overlap {overlap})' if matcher == 'sequential' else ''}{extra}")
        report("match", time.perf_counter() - t0, f"{what}: {n_verified} verified of {n_pairs} matched pairs"
               + (f" ({dropped} with fewer than {min_inliers} inliers dropped)" if dropped else ""))

        # -- map
        t0 = time.perf_counter()
        if mapper == "global":
            gopts = pycolmap.GlobalPipelineOptions()
            gopts.num_threads = num_threads
            gopts.random_seed = int(seed)
            gopts.mapper.skip_retriangulation = not global_retriangulation
            if global_tracks_per_view is not None:
                gopts.mapper.track_required_tracks_per_view = int(global_tracks_per_view)
            if intrinsics is not None:
                ba = gopts.mapper.bundle_adjustment
                ba.refine_focal_length = False
                ba.refine_principal_point = False
                ba.refine_extra_params = False
            models = pycolmap.global_mapping(db_path, root, sparse, options=gopts)
        else:
            mapping = pycolmap.IncrementalPipelineOptions()
            mapping.num_threads = num_threads
            mapping.random_seed = int(seed)
            if intrinsics is not None:
                mapping.ba_refine_focal_length = False
                mapping.ba_refine_principal_point = False
                mapping.ba_refine_extra_params = False
            models = pycolmap.incremental_mapping(db_path, root, sparse, options=mapping)
    finally:
        pycolmap.logging.minloglevel = old_level

    ranked = sorted(models.items(), key=lambda kv: -kv[1].num_reg_images())
    sizes = [int(r.num_reg_images()) for _, r in ranked]
    if not ranked or sizes[0] == 0:
        report("map", time.perf_counter() - t0, "no model")
        raise SfmError(f"no model could be built from {len(in_db)} images in {root} ({n_verified} image pairs "
                       "passed geometric verification): check texture/overlap between the images, or try "
                       "exhaustive matching, more features or loop pairs")
    key, rec = ranked[0]
    reg_names, x, q = poses_from_reconstruction(rec, names)
    pts, rgb, err = _points_from_reconstruction(rec)
    report("map", time.perf_counter() - t0,
           f"{sizes[0]}/{len(names)} images registered, {len(pts)} points"
           + (f", {len(sizes)} models {sizes}" if len(sizes) > 1 else ""))
    if len(sizes) > 1:
        warnings.warn(f"the reconstruction broke into {len(sizes)} models of {sizes} images; keeping the "
                      f"largest ({sizes[0]} of {len(names)} images)", SfmWarning, stacklevel=2)
    cam = rec.images[rec.reg_image_ids()[0]].camera
    model_dir = sparse / str(key)
    if not model_dir.is_dir():  # mapping writes sparse/<i>; keep the kept one on disk whatever happened
        model_dir.mkdir(parents=True)
        rec.write(str(model_dir))
    options = {"image_root": str(root), "matcher": matcher, "overlap": int(overlap), "loop_pairs": len(pairs),
               "retrieval": int(retrieval), "retrieval_pairs": len(found), "mapper": mapper,
               "features_from": None if features_from is None else str(features_from),
               "reuse_matches": bool(reuse_matches),
               "intrinsics": None if intrinsics is None else intrinsics.to_dict(),
               "max_image_size": max_image_size, "max_num_features": int(max_num_features),
               "global_tracks_per_view": global_tracks_per_view, "global_retriangulation": bool(global_retriangulation),
               "min_inliers": int(min_inliers), "weak_pairs_dropped": int(dropped),
               "num_threads": num_threads, "seed": int(seed)}
    registered = set(reg_names)
    return SfmResult(
        names=reg_names, x=x, q=q, points=pts, point_colors=rgb, point_errors=err,
        registered=len(reg_names), total=len(names) + len(skipped), num_models=len(sizes), model_sizes=sizes,
        timings=timings, camera=_camera_dict(cam), model_dir=model_dir,
        unregistered=[n for n in names if n not in registered] + skipped,
        database_path=db_path, options=options, reconstruction=rec,
    )


def _reuse_features(source: Path, db_path: Path, names: list[str], keep_matches: bool = False) -> None:
    """Copy an earlier run's database, keep its cameras, images and features; drop its matches
    unless ``keep_matches``."""
    import pycolmap

    if not source.is_file():
        raise SfmError(f"features_from: no database at {source}")
    if source.resolve() == db_path.resolve():
        raise SfmError("features_from must be another run's database, not this run's own")
    with pycolmap.Database.open(str(source)) as src:
        have = {im.name for im in src.read_all_images()}
    missing = [n for n in names if n not in have]
    if missing:
        raise SfmError(f"features_from: {source} has no features for {len(missing)} of the images, e.g. {missing[0]}")
    shutil.copyfile(source, db_path)
    with pycolmap.Database.open(str(db_path)) as db:
        if not keep_matches:
            db.clear_matches()
            db.clear_two_view_geometries()
        extra = [im for im in db.read_all_images() if im.name not in set(names)]
    if extra:
        raise SfmError(f"features_from: {source} holds {len(extra)} image(s) that are not inputs of this run, "
                       f"e.g. {extra[0].name}; reuse a database of exactly these images")


def _unique_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs without repeats (in either order) or self-pairs, first occurrence kept."""
    seen, out = set(), []
    for a, b in pairs:
        key = frozenset((a, b))
        if a != b and key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def _kmeans(X: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """(k, D) centres of plain Lloyd k-means on the rows of X (float32), seeded by ``rng``."""
    C = X[rng.choice(len(X), size=k, replace=False)].copy()
    for _ in range(iterations):
        label = _nearest(X, C)
        for j in range(k):
            members = X[label == j]
            C[j] = members.mean(0) if len(members) else X[rng.integers(len(X))]
    return C


def _nearest(X: np.ndarray, C: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest row of C for each row of X (squared Euclidean distance)."""
    cc = (C * C).sum(1)
    return np.concatenate([np.argmin(cc[None] - 2.0 * X[i:i + chunk] @ C.T, axis=1)
                           for i in range(0, len(X), chunk)]) if len(X) else np.zeros(0, np.int64)


def retrieval_pairs(
    database_path: str | Path,
    num_neighbors: int = 5,
    names: Sequence[str] | None = None,
    skip_within: int | None = None,
    num_words: int = 256,
    per_image: int = 500,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Pairs of similar-looking images, found from the SIFT features already in a COLMAP database.

    A small bag of visual words: k-means (``num_words`` words) on a sample of the descriptors,
    then one tf-idf weighted, L2-normalised word histogram per image (from at most ``per_image``
    descriptors each); each image is paired with its ``num_neighbors`` most similar images by
    cosine similarity. ``skip_within``: leave out pairs in the same folder whose positions in the
    name order differ by at most this much (sequential matching has them already), so retrieval
    spends its neighbours on other sequences and revisits. ``names``: restrict to these images.
    Cost is linear in the image count (plus an N x N similarity matrix), unlike exhaustive matching.
    Returns pairs of image names, each pair once.
    """
    import pycolmap

    if num_neighbors < 1:
        raise SfmError(f"num_neighbors must be >= 1, got {num_neighbors}")
    rng = np.random.default_rng(seed)
    with pycolmap.Database.open(str(database_path)) as db:
        images = sorted(db.read_all_images(), key=lambda im: im.name)
        if names is not None:
            wanted = set(names)
            images = [im for im in images if im.name in wanted]
        descs = []
        for im in images:
            d = np.asarray(db.read_descriptors(im.image_id).data, dtype=np.float32)
            if len(d) > per_image:
                d = d[rng.choice(len(d), size=per_image, replace=False)]
            descs.append(d)
    n = len(images)
    if n < 2:
        return []
    all_d = np.concatenate(descs) if descs else np.zeros((0, 128), np.float32)
    k = int(min(num_words, max(2, len(all_d) // 20)))
    if len(all_d) < 2 * k:
        return []
    sample = all_d[rng.choice(len(all_d), size=min(len(all_d), 200 * k), replace=False)]
    words = _kmeans(sample, k, iterations=8, rng=rng)
    H = np.zeros((n, k), np.float32)
    for i, d in enumerate(descs):
        if len(d):
            H[i] = np.bincount(_nearest(d, words), minlength=k)
    idf = np.log(n / np.maximum((H > 0).sum(0), 1)).astype(np.float32)
    H = H / np.maximum(H.sum(1, keepdims=True), 1) * idf
    H /= np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-12)
    S = H @ H.T
    np.fill_diagonal(S, -np.inf)
    if skip_within is not None:
        folder = np.array([str(Path(im.name).parent) for im in images])
        order = np.arange(n)
        near = (folder[:, None] == folder[None, :]) & (np.abs(order[:, None] - order[None, :]) <= int(skip_within))
        S[near] = -np.inf
    top = np.argsort(-S, axis=1)[:, :num_neighbors]
    pairs = [(images[i].name, images[j].name) for i in range(n) for j in top[i] if np.isfinite(S[i, j])]
    return _unique_pairs(pairs)


def _check_loop_pairs(loop_pairs, names: list[str]) -> list[tuple[str, str]]:
    """Validate explicit pairs against the image names; drop repeats (either order) and self-pairs."""
    if not loop_pairs:
        return []
    known, out = set(names), []
    for pair in loop_pairs:
        try:
            a, b = (Path(str(n)).as_posix() for n in pair)
        except (TypeError, ValueError):
            raise SfmError(f"loop_pairs must hold (name_a, name_b) pairs, got {pair!r}") from None
        for n in (a, b):
            if n not in known:
                raise SfmError(f"loop pair {pair!r}: {n!r} is not one of the (readable) input images")
            if any(c.isspace() for c in n):
                raise SfmError(f"loop pair {pair!r}: COLMAP's pair lists cannot hold names with spaces ({n!r})")
        out.append((a, b))
    return _unique_pairs(out)


# ---------------------------------------------------------------------------- reading models
def _read_model(folder: str | Path):
    import pycolmap

    folder = Path(folder)
    if not folder.is_dir():
        raise SfmError(f"COLMAP model folder not found: {folder}")
    text = [f for f in ("cameras.txt", "images.txt", "points3D.txt") if (folder / f).is_file()]
    binary = [f for f in ("cameras.bin", "images.bin", "points3D.bin") if (folder / f).is_file()]
    if len(text) < 3 and len(binary) < 3:
        raise SfmError(f"{folder} holds no complete COLMAP model (cameras, images and points3D as .txt or .bin)")
    rec = pycolmap.Reconstruction()
    try:
        if len(binary) == 3:
            rec.read_binary(str(folder))
        else:
            rec.read_text(str(folder))
    except Exception as e:  # pycolmap raises ValueError/RuntimeError with COLMAP's message
        raise SfmError(f"cannot read the COLMAP model in {folder}: {e}") from e
    return rec


def read_colmap_text_model(folder: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names sorted, x (N, 3), q (N, 4)) camera-to-world poses of a COLMAP model folder
    (cameras/images/points3D as .txt, or .bin), e.g. ground truth stored as world-to-camera."""
    return poses_from_reconstruction(_read_model(folder))


def read_colmap_camera(folder: str | Path) -> Intrinsics:
    """The one PINHOLE (or SIMPLE_PINHOLE) camera of a COLMAP model folder as :class:`Intrinsics`."""
    rec = _read_model(folder)
    cams = [rec.cameras[i] for i in sorted(c.camera_id for c in rec.cameras.values())]
    if len(cams) != 1:
        raise SfmError(f"{folder}: expected one camera, found {len(cams)}")
    c = cams[0]
    p = [float(v) for v in c.params]
    if c.model.name == "PINHOLE":
        fx, fy, cx, cy = p
    elif c.model.name == "SIMPLE_PINHOLE":
        fx, cx, cy = p
        fy = fx
    else:
        raise SfmError(f"{folder}: camera model {c.model.name} is not a pinhole; only PINHOLE and SIMPLE_PINHOLE "
                       "map to Intrinsics")
    return Intrinsics(int(c.width), int(c.height), fx, fy, cx, cy)
