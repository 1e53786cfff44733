"""Growth measurements: how structure from motion and training time grow with the number of images.

* :func:`sfm_scaling` times a complete :func:`campose.sfm.reconstruct` (extraction, matching,
  mapping) on the first N frames of the profile's first training walk, for several N, with
  sequential and with exhaustive matching. Both use the incremental mapper (``sfm.reconstruct``'s
  default) and **no image retrieval**, so the two differ in the image pairs alone: sequential
  matching pairs every frame with the frames 1, 2, 4, ..., 2**(overlap - 1) places later
  (``overlap``: the profile's, COLMAP 4's quadratic overlap), about ``overlap`` pairs per frame,
  linear in N; exhaustive matching pairs every two frames, N (N - 1) / 2 (:func:`pair_count`).
  The renderer's intrinsics are given and held fixed, as in the SfM stage. SIFT extraction is the
  same work for both matchers, so by default it runs once per size and is shared.
* :func:`training_scaling` times training one model from scratch (the profile's
  :func:`campose.pipeline.train_config`, no validation) on the first N labelled frames of the
  training walks.
* :func:`fit_exponent` fits time ~ n**k (least squares on the logarithms); :func:`plot_scaling` draws
  both on log-log axes.

Both measurements are cached stages, ``<data>/<profile>/scaling/sfm`` and ``.../scaling/train``
(``rows.json`` and ``rows.csv``, one row per measurement; ``stage.json`` holds the key, the
machine and its load average), so a chapter rerun loads the table; ``force=True`` measures again.
Times are wall-clock seconds on whatever else the machine is doing: every row carries the 1-minute
load average when it finished, and on the shared 2-core machine a change of load in the middle of a
table moved the fitted SfM exponents by 0.3 (docs/design.md, "Growth measurements").
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from campose import pipeline

__all__ = ["SIZES", "STAGE_VERSION", "SFM_COLUMNS", "TRAIN_COLUMNS", "sfm_scaling", "training_scaling",
           "fit_exponent", "exponents", "plot_scaling", "pair_count", "sfm_frames", "sfm_options",
           "training_frames"]

#: Default sizes per profile: ``sfm`` frames of the first training walk, ``train`` labelled images of
#: the training walks (a profile not listed gets the quick sizes). Quick: chosen so that
#: ``sfm_scaling("quick") + training_scaling("quick")`` take about a minute on 2 CPU cores; full:
#: about half an hour (exhaustive matching is quadratic); docs/design.md, "Growth measurements".
SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "quick": {"sfm": (4, 8, 16, 32), "train": (32, 64, 128)},
    "full": {"sfm": (20, 40, 80, 160), "train": (230, 460, 920, 1840)},
}

STAGE_VERSION = {"sfm": 1, "train": 1}
MATCHERS = ("sequential", "exhaustive")

SFM_COLUMNS = ["frames", "matcher", "pairs", "verified_pairs", "extract_s", "match_s", "map_s", "total_s",
               "registered", "models", "seconds_per_image", "extraction", "load"]
TRAIN_COLUMNS = ["images", "epochs", "seconds", "images_per_s", "decode_s", "setup_s", "threads", "status", "load"]


# ---------------------------------------------------------------------------- helpers
def _default_sizes(prof, which: str) -> tuple[int, ...]:
    return SIZES.get(prof.name, SIZES["quick"])[which]


def _check_sizes(sizes, what: str, minimum: int) -> list[int]:
    """Sorted distinct sizes; ValueError when one is not a whole number >= ``minimum``."""
    if isinstance(sizes, (int, np.integer)):
        sizes = [sizes]
    sizes = list(sizes)
    if not sizes:
        raise ValueError(f"{what}: give at least one size")
    out = []
    for s in sizes:
        if isinstance(s, bool) or not float(s).is_integer():
            raise ValueError(f"{what}: sizes must be whole numbers, got {s!r}")
        if int(s) < 1:
            raise ValueError(f"{what}: sizes must be positive, got {s!r}")
        if int(s) < minimum:
            raise ValueError(f"{what}: sizes must be at least {minimum}, got {s!r}")
        out.append(int(s))
    return sorted(set(out))


def _check_available(sizes: list[int], available: int, what: str) -> None:
    too_big = [s for s in sizes if s > available]
    if too_big:
        raise ValueError(f"{what}: {available} frames are available, so sizes {too_big} are too large "
                         f"(choose sizes up to {available})")


def _machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "load_average": None if load is None else [round(v, 2) for v in load]}


def _load1() -> float:
    """The 1-minute load average now (NaN where the system has none): beside every row, since a
    shared machine's other work changes the times (this process's own threads count in it too)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else math.nan


def _bar(total: int, desc: str, progress: bool | None):
    from tqdm.auto import tqdm

    progress = pipeline.show_progress() if progress is None else progress
    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


def _save_rows(out: Path, key: str, rows: list[dict], info: dict) -> None:
    import pandas as pd

    from campose.dataset import atomic_dir

    with atomic_dir(out) as tmp:
        (tmp / "rows.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
        pd.DataFrame(rows).to_csv(tmp / "rows.csv", index=False)
        pipeline.mark_stage(tmp, key, info)


def _load_rows(out: Path, columns: list[str]):
    import pandas as pd

    rows = json.loads((out / "rows.json").read_text())
    table = pd.DataFrame(rows)
    table = table[[c for c in columns if c in table] + [c for c in table if c not in columns]]
    info = json.loads((out / "stage.json").read_text())
    table.attrs.update({k: v for k, v in info.items() if k != "key"})
    return table


# ---------------------------------------------------------------------------- SfM
def sfm_frames(profile="quick") -> tuple[str, list[str]]:
    """(name of the profile's first training walk, its frames as SfM image names relative to the
    render stage: ``<walk>/images/<frame>.png``)."""
    prof = pipeline.get_profile(profile)
    seqs = pipeline.render_dataset(prof, progress=False)
    walks = [n for n in prof.sequences if seqs[n].split == "train"]
    if not walks:
        raise ValueError(f"profile {prof.name} has no training walk")
    return walks[0], [pipeline.sfm_name(walks[0], img) for img in seqs[walks[0]].images]


def pair_count(frames: int, matcher: str = "sequential", overlap: int = 8) -> int:
    """How many image pairs a matcher proposes for ``frames`` frames of one walk: exhaustive
    N (N - 1) / 2; sequential (COLMAP 4's quadratic overlap) every frame with the frames
    1, 2, 4, ..., 2**(overlap - 1) places later, about ``overlap`` N for long walks. The table's
    ``pairs`` column is what COLMAP matched (the same numbers)."""
    n = int(frames)
    if matcher == "exhaustive":
        return n * (n - 1) // 2
    if matcher != "sequential":
        raise ValueError(f"matcher must be one of {', '.join(MATCHERS)}, got {matcher!r}")
    return sum(max(0, n - 2 ** j) for j in range(int(overlap)))


def sfm_options(profile="quick", matcher: str = "sequential") -> dict:
    """The keyword arguments of :func:`campose.sfm.reconstruct` a scaling run uses: the profile's
    overlap, features and seed, the incremental mapper and no retrieval."""
    prof = pipeline.get_profile(profile)
    if matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {', '.join(MATCHERS)}, got {matcher!r}")
    s = {**pipeline.SFM_DEFAULTS, **prof.sfm}
    return {"matcher": matcher, "overlap": int(s["overlap"]), "retrieval": 0, "mapper": "incremental",
            "max_num_features": int(s["max_num_features"]), "seed": int(s["seed"]), "num_threads": 2}


def sfm_scaling(profile="quick", sizes=None, matchers=MATCHERS, force: bool = False, progress: bool | None = None,
                share_extraction: bool = True):
    """How SfM time grows with the number of frames, sequential against exhaustive matching.

    For each size N (default ``SIZES[profile]["sfm"]``) the first N frames of the profile's first
    training walk (the render stage's images, the renderer's intrinsics given and held fixed) go
    through :func:`campose.sfm.reconstruct` once per matcher, each into a temporary work folder
    with a fresh database. Options (:func:`sfm_options`): the incremental mapper for both matchers
    and **no image retrieval** (the profile's SfM stage uses retrieval and the global mapper; here
    both are held fixed so that the table compares the pairing alone); sequential matching with the
    profile's ``overlap``; the profile's ``max_num_features`` and seed; 2 COLMAP threads.

    ``share_extraction`` (default): SIFT extraction is the same work for every matcher (same
    images, options and seed), so it runs once per size, in the first matcher's run, and the other
    matchers' runs start from a copy of that database (``reconstruct(features_from=...)``); their
    rows report the shared extraction time (``extraction`` = ``"shared"``) and their ``total_s``
    counts it instead of the copy. This halves the extraction work and keeps the quick profile's
    measurement within its minute. ``False``: every run extracts on its own.

    Returns a pandas DataFrame, one row per (frames, matcher): ``frames``, ``matcher``, ``pairs``
    (image pairs matched), ``verified_pairs`` (pairs with geometrically verified inliers),
    ``extract_s``, ``match_s``, ``map_s`` (the steps as ``reconstruct`` times them), ``total_s``
    (wall time of the ``reconstruct`` call, input checks and result building included),
    ``registered`` (frames in the largest model), ``models``, ``seconds_per_image``
    (``total_s / frames``), ``extraction`` (``"own"`` or ``"shared"``), ``load`` (the 1-minute
    load average when the run ended: other work on the machine slows a run down). A run that builds no model
    gets 0 registered and NaN step times (and a warning). ``table.attrs`` holds the stage info
    (machine, load average before and after, options). Cached as the stage ``scaling/sfm``;
    ``force=True`` measures again. Raises ValueError for an unknown profile or matcher, sizes
    below 3, or more frames than the walk has.
    """
    from campose.sfm import SfmError, SfmWarning, reconstruct

    prof = pipeline.get_profile(profile)
    sizes = _check_sizes(_default_sizes(prof, "sfm") if sizes is None else sizes, "sfm_scaling", minimum=3)
    matchers = [matchers] if isinstance(matchers, str) else list(matchers)
    if not matchers or len(set(matchers)) != len(matchers):
        raise ValueError(f"sfm_scaling: give one or more distinct matchers, got {matchers}")
    for m in matchers:
        if m not in MATCHERS:
            raise ValueError(f"sfm_scaling: matcher must be one of {', '.join(MATCHERS)}, got {m!r}")
    walk, names = sfm_frames(prof)
    _check_available(sizes, len(names), f"sfm_scaling: the first training walk {walk!r} of profile {prof.name}")
    options = {m: sfm_options(prof, m) for m in matchers}
    out = pipeline.stage_dir(prof, "scaling/sfm")
    key = pipeline.content_key({"v": STAGE_VERSION["sfm"], "render": pipeline.render_key(prof), "walk": walk,
                                "sizes": sizes, "matchers": matchers, "options": options,
                                "share_extraction": bool(share_extraction)})
    if not force and pipeline.stage_is_current(out, key, needs="rows.json"):
        return _load_rows(out, SFM_COLUMNS)

    root, K = pipeline.stage_dir(prof, "render"), prof.intrinsics()
    rows, before, t_all = [], _machine(), time.perf_counter()
    bar = _bar(len(sizes) * len(matchers), f"sfm scaling ({prof.name})", progress)
    try:
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="campose-scaling-") as work:
                shared = None  # (database, extraction seconds) of this size's first run
                for m in matchers:
                    bar.set_postfix(frames=n, matcher=m)
                    reuse = shared if share_extraction else None
                    row, db = _sfm_run(reconstruct, SfmError, SfmWarning, root, Path(work) / m, names[:n], K,
                                       options[m], reuse)
                    if shared is None and db is not None and math.isfinite(row["extract_s"]):
                        shared = (db, row["extract_s"])
                    rows.append({"frames": n, "matcher": m, **row, "load": _load1()})
                    bar.update(1)
    finally:
        bar.close()
    info = {"profile": prof.name, "walk": walk, "sizes": sizes, "matchers": matchers, "options": options,
            "share_extraction": bool(share_extraction), "machine": before,
            "load_average_after": _machine()["load_average"], "seconds": round(time.perf_counter() - t_all, 1)}
    _save_rows(out, key, rows, info)
    return _load_rows(out, SFM_COLUMNS)


def _sfm_run(reconstruct, SfmError, SfmWarning, root: Path, work: Path, names: list[str], K, options: dict,
             shared) -> tuple[dict, Path | None]:
    """One timed reconstruction: (row without frames and matcher, its database or None)."""
    import pycolmap

    n = len(names)
    extra = {} if shared is None else {"features_from": shared[0]}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SfmWarning)  # several models: counted in the row
            res = reconstruct(root, work, image_names=names, intrinsics=K, progress=False, **options, **extra)
    except SfmError as e:
        res = None
        warnings.warn(f"sfm_scaling: {n} frames, {options['matcher']} matching built no model: {e}", stacklevel=3)
    wall = time.perf_counter() - t0
    db = work / "database.db"
    pairs = verified = 0
    if db.is_file():
        with pycolmap.Database.open(str(db)) as d:
            pairs = int(d.num_matched_image_pairs())
            verified = len(d.read_two_view_geometry_num_inliers()[0])
    t = {step: math.nan for step in ("extract", "match", "map")}
    if res is not None:
        t.update({k: float(v) for k, v in res.timings.items()})
    total = wall
    if shared is not None:  # count the shared extraction instead of this run's database copy
        total = wall - (t["extract"] if math.isfinite(t["extract"]) else 0.0) + shared[1]
        t["extract"] = shared[1]
    row = {"pairs": pairs, "verified_pairs": verified, "extract_s": t["extract"], "match_s": t["match"],
           "map_s": t["map"], "total_s": round(total, 3), "registered": res.registered if res is not None else 0,
           "models": res.num_models if res is not None else 0, "seconds_per_image": round(total / n, 4),
           "extraction": "own" if shared is None else "shared"}
    return row, (db if db.is_file() else None)


# ---------------------------------------------------------------------------- training
def training_frames(profile="quick", labels: str | None = None) -> list:
    """The profile's training walks with their labels (:func:`campose.pipeline.labelled_sequences`:
    the profile's label source unless ``labels`` is given), in the profile's order."""
    prof = pipeline.get_profile(profile)
    seqs, _ = pipeline.labelled_sequences(prof, labels, progress=False)
    walks = [s for s in seqs.values() if s.split == "train"]
    if not walks:
        raise ValueError(f"profile {prof.name} has no training walks")
    return walks


def _first_frames(walks: list, n: int) -> list:
    """The first ``n`` frames of the walks taken in order (the whole first walk, then the next...)."""
    from campose.dataset import Sequence

    out, left = [], n
    for s in walks:
        if left <= 0:
            break
        k = min(left, len(s))
        out.append(Sequence(s.name, s.root, list(s.images[:k]), s.x[:k].copy(), s.q[:k].copy(), s.intrinsics,
                            dict(s.meta), s.image_dir))
        left -= k
    return out


def _network_copies(walks: list, size: tuple[int, int], folder: Path) -> tuple[list, np.ndarray]:
    """Write the walks' images at the network's input size into ``folder`` (lossless PNG; the
    pixels :class:`campose.dataset.PoseDataset` would compute: same reading and resizing code), so
    that the timed runs do not decode full-size images. Returns (the walks on those copies, the
    seconds each image took to read and resize, in walk order)."""
    from PIL import Image

    from campose.dataset import PoseDataset, Sequence

    data = PoseDataset(walks, size)
    seconds = np.zeros(len(data))
    out = []
    for s_idx, s in enumerate(walks):
        (folder / s.name / "images").mkdir(parents=True)
        for i, name in enumerate(s.images):
            k = int(data.offsets[s_idx]) + i
            t0 = time.perf_counter()
            img = data.raw_image(k)
            seconds[k] = time.perf_counter() - t0
            target = folder / s.name / "images" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(target, compress_level=1)
        out.append(Sequence(s.name, folder / s.name, list(s.images), s.x, s.q, s.intrinsics, dict(s.meta)))
    data._cache = None
    return out, seconds


def training_scaling(profile="quick", sizes=None, kind: str = "posenet", epochs: int = 1, force: bool = False,
                     progress: bool | None = None, labels: str | None = None):
    """How training time grows with the number of images.

    For each size N (default ``SIZES[profile]["train"]``) one ``kind`` model is trained from
    scratch with :func:`campose.train.train` and the profile's settings
    (``pipeline.train_config(profile, kind=kind, epochs=epochs)``, no validation:
    ``val_fraction=0``) on the first N labelled frames of the training walks (the whole first walk,
    then the next; labels: the profile's, or ``labels``: ``"sfm"``/``"truth"``). Nothing is saved.

    One-off costs are kept out of ``seconds``, which is the sum of the epochs' training passes
    (forward, backward, optimiser step):

    * reading and resizing the full-size renders happens once, before the timed runs: the images
      are written at the network's input size into a temporary folder (the same pixels the data
      set would compute; lossless) and ``decode_s`` reports what reading and resizing the N
      images took (a training run pays it once, whatever the number of epochs);
    * one short untimed run first warms torch up (thread pool, allocator, first kernel calls);
    * ``setup_s`` is the rest of each ``train`` call: data set and model construction and the
      final BatchNorm recalibration (up to 512 images).

    Returns a pandas DataFrame: ``images``, ``epochs``, ``seconds``, ``images_per_s``
    (``images * epochs / seconds``), ``decode_s``, ``setup_s``, ``threads`` (torch CPU threads;
    0 on a GPU), ``status`` (the run's :data:`campose.train.STATUSES`), ``load`` (the 1-minute
    load average after the run). Cached as the stage
    ``scaling/train``. Raises ValueError for an unknown profile, sizes below 2 (batch
    normalisation needs two images) or more images than the walks hold.
    """
    prof = pipeline.get_profile(profile)
    sizes = _check_sizes(_default_sizes(prof, "train") if sizes is None else sizes, "training_scaling", minimum=2)
    if int(epochs) < 1:
        raise ValueError(f"training_scaling: epochs must be >= 1, got {epochs}")
    from campose.train import choose_device, cpu_threads, train

    cfg = pipeline.train_config(prof, kind=kind, epochs=int(epochs), val_fraction=0.0)
    labels = prof.labels if labels is None else labels
    walks = training_frames(prof, labels)
    available = sum(len(s) for s in walks)
    _check_available(sizes, available, f"training_scaling: the training walks of profile {prof.name} "
                                       f"({', '.join(s.name for s in walks)}, labels {labels!r})")
    out = pipeline.stage_dir(prof, "scaling/train")
    label_key = pipeline.stage_key(prof, "labels") if labels == "sfm" else None
    key = pipeline.content_key({"v": STAGE_VERSION["train"], "render": pipeline.render_key(prof), "labels": labels,
                                "labels_stage": label_key, "sizes": sizes, "config": cfg.to_dict()})
    if not force and pipeline.stage_is_current(out, key, needs="rows.json"):
        return _load_rows(out, TRAIN_COLUMNS)

    device = choose_device(cfg.device)
    threads = cpu_threads(cfg.num_threads) if device.type == "cpu" else 0
    rows, before, t_all = [], _machine(), time.perf_counter()
    bar = _bar(len(sizes) + 2, f"training scaling ({prof.name}, {kind})", progress)
    try:
        with tempfile.TemporaryDirectory(prefix="campose-scaling-") as tmp:
            small, decode = _network_copies(_first_frames(walks, sizes[-1]), cfg.image_size, Path(tmp))
            bar.update(1)
            # warm-up, untimed: one epoch on a couple of batches
            warm = pipeline.train_config(prof, kind=kind, epochs=1, val_fraction=0.0, bn_recalibration_images=0)
            train(warm, _first_frames(small, min(sizes[0], 2 * warm.batch_size)), progress=False)
            bar.update(1)
            for n in sizes:
                bar.set_postfix(images=n)
                t0 = time.perf_counter()
                res = train(cfg, _first_frames(small, n), progress=False)
                wall = time.perf_counter() - t0
                seconds = float(sum(r["seconds"] for r in res.history))
                done = len(res.history)
                rows.append({"images": n, "epochs": done, "seconds": round(seconds, 3),
                             "images_per_s": round(n * done / seconds, 2) if seconds > 0 else math.nan,
                             "decode_s": round(float(decode[:n].sum()), 6), "setup_s": round(wall - seconds, 3),
                             "threads": threads, "status": res.status, "load": _load1()})
                bar.update(1)
    finally:
        bar.close()
    info = {"profile": prof.name, "kind": kind, "labels": labels, "sizes": sizes, "config": cfg.to_dict(),
            "device": str(device), "machine": before, "load_average_after": _machine()["load_average"],
            "seconds": round(time.perf_counter() - t_all, 1)}
    _save_rows(out, key, rows, info)
    return _load_rows(out, TRAIN_COLUMNS)


# ---------------------------------------------------------------------------- analysis
def fit_exponent(n, seconds) -> float:
    """The exponent k of time ~ c n**k: the slope of the least-squares line of log(seconds) against
    log(n). Pairs with a non-finite time (a failed run) are left out; needs at least two distinct
    positive n and positive times."""
    n = np.asarray(n, float).ravel()
    s = np.asarray(seconds, float).ravel()
    if n.shape != s.shape:
        raise ValueError(f"fit_exponent: n and seconds differ in length ({len(n)} and {len(s)})")
    keep = np.isfinite(n) & np.isfinite(s)
    n, s = n[keep], s[keep]
    if np.any(n <= 0) or np.any(s <= 0):
        raise ValueError("fit_exponent: sizes and times must be positive (a log-log fit)")
    if len(np.unique(n)) < 2:
        raise ValueError(f"fit_exponent: needs at least two distinct sizes, got {sorted(set(n.tolist()))}")
    return float(np.polyfit(np.log(n), np.log(s), 1)[0])


def exponents(sfm_table=None, train_table=None) -> dict:
    """``{"sfm_<matcher>": k, ..., "training": k}``: :func:`fit_exponent` of SfM ``total_s``
    against ``frames`` per matcher (runs that registered nothing left out) and of training
    ``seconds`` against ``images``; NaN where a fit is impossible."""
    out = {}

    def fit(n, s):
        try:
            return fit_exponent(n, s)
        except ValueError:
            return math.nan

    if sfm_table is not None and len(sfm_table):
        for m, g in sfm_table.groupby("matcher", sort=False):
            if "registered" in g:  # a run that built no model is not a comparable time
                g = g[g["registered"] > 0]
            out[f"sfm_{m}"] = fit(g["frames"], g["total_s"])
    if train_table is not None and len(train_table):
        out["training"] = fit(train_table["images"], train_table["seconds"])
    return out


_STEP_COLOURS = {"extract": "#2ca02c", "match": "#ff7f0e", "map": "#9467bd"}
_MATCHER_STYLE = {"sequential": ("#1f77b4", "o", "-"), "exhaustive": ("#d62728", "s", "--")}


def _reference_lines(ax, n, s, slopes=(1, 2)) -> None:
    """Faint lines of slope 1 (and 2) through the first point, to read the exponents against."""
    n0, s0 = float(n[0]), float(s[0])
    xs = np.array([float(np.min(n)), float(np.max(n))])
    for k, ls in zip(slopes, (":", "-.")):
        ax.plot(xs, s0 * (xs / n0) ** k, color="0.55", lw=0.9, ls=ls,
                label=f"∝ n{'²' if k == 2 else ''} (for reference)")


def _log_axes(ax, sizes) -> None:
    """Log-log axes with the measured sizes as plain x ticks and plain numbers on y."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(int(v) for v in sizes)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_scaling(sfm_table, train_table=None):
    """Log-log figure of the growth tables: (1) SfM total seconds against frames per matcher (the
    fitted exponent k of time ~ frames**k in the legend, lines of slope 1 and 2 for reference),
    (2) the same runs split into extraction, matching and mapping (a shared extraction drawn once),
    (3) when ``train_table`` is given, training seconds against images. Returns the matplotlib
    Figure."""
    import matplotlib.pyplot as plt

    panels = 3 if train_table is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.2))
    ok = sfm_table[sfm_table["registered"] > 0] if "registered" in sfm_table else sfm_table
    ax = axes[0]
    for m, g in sfm_table.groupby("matcher", sort=False):
        g = g.sort_values("frames")
        colour, marker, ls = _MATCHER_STYLE.get(m, ("k", "^", "-"))
        k = exponents(g).get(f"sfm_{m}", math.nan)
        ax.plot(g["frames"], g["total_s"], marker=marker, ls=ls, color=colour, label=f"{m} (k = {k:.2f})")
    if len(ok):
        g = ok[ok["matcher"] == ok["matcher"].iloc[0]].sort_values("frames")
        if len(g) > 1:
            _reference_lines(ax, g["frames"].to_numpy(), g["total_s"].to_numpy())
    ax.set_title("structure from motion, whole run")
    ax = axes[1]
    shared = "extraction" in sfm_table and (sfm_table["extraction"] == "shared").any()
    for m, g in sfm_table.groupby("matcher", sort=False):
        g = g.sort_values("frames")
        _, marker, ls = _MATCHER_STYLE.get(m, ("k", "^", "-"))
        for step, colour in _STEP_COLOURS.items():
            col = f"{step}_s"
            if col not in g:
                continue
            label = f"{step}, {m}"
            if step == "extract" and shared:
                if (g["extraction"] == "shared").all():
                    continue  # the same numbers as the run it was shared with
                label = "extract (shared by the matchers)"
            ax.plot(g["frames"], g[col], marker=marker, ls=ls, color=colour, label=label)
    ax.set_title("structure from motion, per step")
    for ax in axes[:2]:
        ax.set_xlabel("frames (images)")
        ax.set_ylabel("time (s)")
        _log_axes(ax, sfm_table["frames"])
    if train_table is not None:
        ax = axes[2]
        g = train_table.sort_values("images")
        k = exponents(train_table=g).get("training", math.nan)
        epochs = sorted(set(int(e) for e in g["epochs"])) if "epochs" in g else []
        what = f"{epochs[0]} epoch{'s' if epochs[0] != 1 else ''}" if len(epochs) == 1 else "training"
        ax.plot(g["images"], g["seconds"], marker="o", color="#8c564b", label=f"{what} (k = {k:.2f})")
        if len(g) > 1:
            _reference_lines(ax, g["images"].to_numpy(), g["seconds"].to_numpy(), slopes=(1,))
        ax.set_title("training from scratch")
        ax.set_xlabel("training images")
        ax.set_ylabel("time (s)")
        _log_axes(ax, g["images"])
    fig.tight_layout()
    return fig
