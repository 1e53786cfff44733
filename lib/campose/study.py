"""The chapters' training studies: sets of runs that differ in one thing, trained, scored and tabled.

A study is a dict ``label -> TrainConfig changes`` on top of the profile's training settings
(:func:`campose.pipeline.train_config`). :func:`run_study` trains every run through the cached
``models`` stage (:func:`campose.pipeline.train_model`, one folder per run) and scores it on the
profile's test walks against the SfM labels and the true poses
(:func:`campose.pipeline.evaluate_model`). The :class:`Study` it returns gives the table, the
training curves and the error curves the chapters show.

Errors are in metres and degrees (:mod:`campose.evaluate`); a run that stopped on a NaN or a
diverging loss stays in the table with its status, as the report's own table shows ``NaN`` for MSE.

:data:`REPORT` holds the numbers of the report this book revisits, measured on its real floor
(Povo 1, second floor), so they are shown beside ours but never mixed with them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

#: MapNet's loss weights in its study: the rotation weight that made PoseNet learn the heading
#: (alpha = 10, chapter 07) and a relative weight of 0.1. With alpha_rel = 1 the relative terms
#: between neighbouring frames (decimetres apart) outweigh the absolute ones and the network settles
#: near a constant pose: on the full profile the absolute translation term went 5.8 -> 5.5 in 15
#: epochs with alpha_rel = 1 and 5.8 -> 1.4 with 0.1 (the last run of the study shows it).
MAPNET_WEIGHTS = {"alpha": 10.0, "alpha_rel": 0.1}

#: The chapters' studies: label -> TrainConfig changes. The first run of each is the chapter's
#: model as the report built it; the others change one thing.
STUDIES: dict[str, dict[str, dict]] = {
    "menet": {
        "stacked (6-channel)": {"kind": "menet", "loss": "l1"},
        # the walks' pairs plus pairs rendered around them (campose.densify.render_pairs), for the
        # profile's pair epochs: on the walks alone MeNet memorises places, not motion
        "stacked, rendered pairs": {"kind": "menet", "loss": "l1", "dense": True},
        "siamese, rendered pairs": {"kind": "menet_siamese", "loss": "l1", "dense": True},
        # a shared encoder to stride 8, the local correlation of the two images' feature maps, then
        # the rest of the backbone (FlowNetC's correlation layer; models.CorrelationMeNet)
        "correlation, rendered pairs": {"kind": "menet_corr", "loss": "l1", "dense": True},
    },
    "posenet": {
        "SmoothL1": {"kind": "posenet", "loss": "smoothl1"},
        "L1": {"kind": "posenet", "loss": "l1"},
        "MSE": {"kind": "posenet", "loss": "mse"},
        "L1, alpha = 10": {"kind": "posenet", "loss": "l1", "alpha": 10.0},
        "L1, learned weights": {"kind": "posenet", "loss": "l1", "learn_weights": True},
        # the walks plus views rendered around them (campose.densify), for the profile's dense epochs
        "L1, alpha = 10, dense views": {"kind": "posenet", "loss": "l1", "alpha": 10.0, "dense": True},
    },
    "mapnet": {
        "L1": {"kind": "mapnet", "loss": "l1", **MAPNET_WEIGHTS},
        "SmoothL1": {"kind": "mapnet", "loss": "smoothl1", **MAPNET_WEIGHTS},
        "RMSE": {"kind": "mapnet", "loss": "rmse", **MAPNET_WEIGHTS},
        "L1, relative weight 1": {"kind": "mapnet", "loss": "l1", **{**MAPNET_WEIGHTS, "alpha_rel": 1.0}},
        # the views of the PoseNet study, as absolute-only items beside the windows
        "L1, dense views": {"kind": "mapnet", "loss": "l1", **MAPNET_WEIGHTS, "dense": True},
    },
}

#: The report's results on its real floor (not ours): median position error in metres where it
#: gave one. PoseNet's figure is approximate in the report's text ("about 20 m").
REPORT = {
    "posenet": {"position_m": 20.0, "note": "about 20 m (the report's PoseNet, real floor)"},
    "mapnet": {"position_m": 1.53, "note": "1.53 m (the report's MapNet, real floor)"},
}


def slug(text: str) -> str:
    """A file-name-safe form of a label: lower case, every other run of characters one hyphen
    (``retrieval (bag of words, k=1)`` -> ``retrieval-bag-of-words-k-1``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_name(study: str, label: str) -> str:
    """The ``models`` stage folder of a run: ``<study>-<label as a slug>`` (``=`` dropped first)."""
    return f"{study}-{slug(label.replace('=', ''))}"


@dataclass
class StudyRun:
    """One trained run: its ``label``, the stage folder ``name``, the TrainConfig ``changes``, the
    :class:`campose.train.TrainResult` and its score on the test walks (``evaluation``: a
    :class:`campose.evaluate.Evaluation` for absolute models, the pair table for MeNet) and the
    time the scoring took (``eval_seconds``)."""

    label: str
    name: str
    changes: dict
    result: object
    evaluation: object
    eval_seconds: float

    @property
    def relative(self) -> bool:
        return getattr(self.result.model, "in_channels", 3) == 6


@dataclass
class Study:
    """The runs of one study on one profile (``runs``: label -> :class:`StudyRun`)."""

    profile: str
    name: str
    labels: str
    runs: dict = field(default_factory=dict)

    def table(self, reference: str = "truth", sequence: str = "all"):
        """One row per run: loss, alpha, status, best epoch / epochs run, training minutes, and the
        errors on the test walks against ``reference`` (``truth`` or ``labels``), pooled over the
        test walks (``sequence="all"``) or for one walk. Absolute models: median and mean position (m)
        and rotation (deg), % within each threshold. MeNet: pairs, median t_rel error (m),
        direction (deg) and relative rotation (deg)."""
        import pandas as pd

        rows = []
        for label, run in self.runs.items():
            r = run.result
            row = {"run": label, "model": r.model.kind, "loss": r.config.loss,
                   "alpha": "learned" if r.config.learn_weights else r.config.alpha, "status": r.status,
                   "best epoch": r.best_epoch, "epochs run": len(r.history), "train min": r.seconds / 60,
                   "dense views": int(r.meta.get("dense_views", 0)),
                   "rendered pairs": int(r.meta.get("dense_pairs", 0))}
            t = run.evaluation if run.relative else run.evaluation.table
            seqs = list(t.loc[reference].index)
            key = seqs[0] if sequence == "all" and len(seqs) == 1 else sequence  # one walk: no 'all' row
            stats = t.loc[(reference, key)].to_dict()
            rows.append({**row, **stats})
        return pd.DataFrame(rows).set_index("run")

    def frames(self, label: str, reference: str = "truth"):
        """Per-frame errors of an absolute run against ``reference``."""
        f = self.runs[label].evaluation.frames
        return f[f["reference"] == reference]

    def best(self, reference: str = "truth", walks_only: bool = False) -> str:
        """The label of the run with the lowest median position error (MeNet: direction error)
        against ``reference``, among runs that did not fail; ``walks_only``: among runs trained on
        the walks alone (no extra views of :mod:`campose.densify`), for like-for-like comparisons."""
        t = self.table(reference)
        if walks_only:
            t = t[(t["dense views"] == 0) & (t["rendered pairs"] == 0)]
        ok = t[~t["status"].isin(["nan", "diverged"])]
        if ok.empty:
            ok = t
        col = next(c for c in ("median position (m)", "median direction (deg)") if c in t.columns)
        return str(ok[col].astype(float).idxmin())

    def plot_training(self, axes=None):
        """Training curves of every run: training loss (log scale) and validation median position
        error (m; MeNet: direction error, deg) per epoch; the best epoch is marked."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(13, 4))
        a1, a2 = axes
        for i, (label, run) in enumerate(self.runs.items()):
            h = run.result.history_frame()
            c = f"C{i}"
            loss = h["train_loss"].astype(float)
            a1.plot(h.index, loss.where(np.isfinite(loss)), "-", color=c, label=f"{label} ({run.result.status})")
            if "val_loss" in h:
                a1.plot(h.index, h["val_loss"].astype(float), ":", color=c)
            col = "val_direction_deg" if run.relative else "val_position_m"
            if col in h:
                a2.plot(h.index, h[col].astype(float), "-", color=c, label=label)
                b = run.result.best_epoch
                if b is not None and b in h.index:
                    a2.plot([b], [h.loc[b, col]], "o", color=c)
        a1.set(xlabel="epoch", ylabel="loss (solid: training, dotted: validation)", yscale="log",
               title="loss")
        rel = any(r.relative for r in self.runs.values())
        a2.set(xlabel="epoch", ylabel="median direction error (deg)" if rel else "median position error (m)",
               title="validation (held-out tails of the training walks); dot: kept epoch")
        a1.legend(fontsize=8)
        a2.legend(fontsize=8)
        return axes

    def plot_cumulative(self, reference: str = "truth", axes=None, thresholds=((0.25, 0.5, 1.0), (2.0, 5.0)),
                        only=None):
        """Cumulative position (m) and rotation (deg) error curves of every absolute run (or of the
        labels in ``only``) on the test walks against ``reference``; the thresholds are marked.
        Returns the two axes."""
        import matplotlib.pyplot as plt

        from campose.evaluate import plot_cumulative_errors

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(13, 4))
        unknown = sorted(set(only or ()) - set(self.runs))
        if unknown:
            raise ValueError(f"no run(s) {unknown} in study {self.name}; its runs are {list(self.runs)}")
        runs = {k: self.frames(k, reference) for k, r in self.runs.items()
                if not r.relative and (only is None or k in only)}
        plot_cumulative_errors({k: f["position_m"] for k, f in runs.items()}, ax=axes[0],
                               thresholds=thresholds[0])
        plot_cumulative_errors({k: f["rotation_deg"] for k, f in runs.items()}, ax=axes[1],
                               xlabel="rotation error (deg)", thresholds=thresholds[1])
        axes[0].set_title(f"position, against the {reference}")
        axes[1].set_title(f"rotation, against the {reference}")
        return axes

    def plot_predictions(self, plan, label: str | None = None, reference: str = "truth", vmax: float | None = None):
        """The prediction maps of one run (default: :meth:`best`): one panel per test walk with the
        reference path, each prediction joined to its reference position and coloured by its
        position error (m). Returns the figure."""
        import matplotlib.pyplot as plt

        from campose.evaluate import plot_prediction_map

        label = label or self.best(reference)
        f = self.frames(label, reference)
        walks = list(dict.fromkeys(f["sequence"]))
        vmax = vmax if vmax is not None else float(np.percentile(f["position_m"], 95))
        fig, axes = plt.subplots(1, len(walks), figsize=(8.5 * len(walks), 4.6), squeeze=False)
        for ax, walk in zip(axes[0], walks):
            g = f[f["sequence"] == walk]
            plot_prediction_map(plan, g[["x_ref", "y_ref", "z_ref"]].to_numpy(), g[["x", "y", "z"]].to_numpy(),
                                g["position_m"].to_numpy(), ax=ax, vmax=vmax)
            ax.set_title(f"{walk}: median {g['position_m'].median():.2f} m, "
                         f"{g['rotation_deg'].median():.1f} deg", fontsize=10)
        fig.suptitle(f"{label}: predictions on the test walks (against the {reference})")
        fig.tight_layout()
        return fig

    def summary(self, reference: str = "truth", report: bool = True):
        """The table the chapters print: per run the status, epochs, training minutes and the pooled
        test errors against ``reference``, with the report's own figure as a last, labelled row
        (``report``; absolute studies with a :data:`REPORT` entry only)."""
        import pandas as pd

        t = self.table(reference)
        keep = [c for c in ("status", "best epoch", "epochs run", "train min", "pairs", "median position (m)",
                            "mean position (m)", "median rotation (deg)", "mean rotation (deg)",
                            "median translation (m)", "median direction (deg)") if c in t.columns]
        keep += [c for c in t.columns if c.startswith("within")]
        for c in ("rendered pairs", "dense views"):  # only when a run trained on rendered data (campose.densify)
            if t[c].any():
                keep.insert(keep.index("train min") + 1, c)
        t = t[keep]
        if report and self.name in REPORT:
            row = {c: np.nan for c in t.columns}
            row.update({"status": "report, real floor", "median position (m)": REPORT[self.name]["position_m"]})
            t = pd.concat([t, pd.DataFrame([row], index=[f"{self.name} in the report (its floor, not ours)"])])
        return t


def run_study(profile, study: str, labels: str | None = None, only=None, force: bool = False,
              progress: bool | None = None, **common) -> Study:
    """Train (cached) and score the runs of ``STUDIES[study]`` on ``profile``.

    ``labels``: ``sfm`` (the aligned SfM labels), ``truth``, or None (the profile's); ``only``: a subset of run labels;
    ``common``: TrainConfig changes applied to every run (e.g. ``epochs=5`` in a test)."""
    from campose import pipeline

    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    runs = STUDIES[study]
    if only is not None:
        missing = sorted(set(only) - set(runs))
        if missing:
            raise ValueError(f"study {study} has no run(s) {missing}; its runs are {list(runs)}")
        runs = {k: v for k, v in runs.items() if k in only}
    prof = pipeline.get_profile(profile)
    labels = prof.labels if labels is None else labels
    out = Study(prof.name, study, labels)
    for label, changes in runs.items():
        changes = {**changes, **common}
        name = run_name(study, label)
        result = pipeline.train_model(prof, name, labels=labels, force=force, progress=progress, **changes)
        t0 = time.perf_counter()
        evaluation = pipeline.evaluate_model(prof, result, labels=labels)
        out.runs[label] = StudyRun(label, name, changes, result, evaluation, time.perf_counter() - t0)
    return out


def _train_one(profile, name: str, labels: str, changes: dict) -> dict:
    """Worker of :func:`train_all` (a separate process): one cached training run."""
    import warnings

    from campose import pipeline
    from campose.train import TrainingWarning

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)  # the status says it
        r = pipeline.train_model(profile, name, labels=labels, progress=False, **changes)
    return {"name": name, "status": r.status, "best_epoch": r.best_epoch, "epochs": len(r.history),
            "train_seconds": r.seconds, "wall_seconds": time.perf_counter() - t0}


#: model kinds from the slowest to train per epoch to the fastest (benchmarks/train_speed.py)
_KIND_COST = ("menet_siamese", "menet_corr", "mapnet", "menet", "posenet")


def train_all(profile, studies=None, labels: str | None = None, jobs: int = 2, progress: bool | None = None,
              **common) -> dict:
    """Train every run of ``studies`` (names in :data:`STUDIES`, default all) on ``profile`` into
    the cache, ``jobs`` runs at a time in separate processes (each with the trainer's own thread
    choice: one thread on a 2-core machine, so two jobs use both cores). Cached runs return at once.
    The chapters then load the runs from the cache. Returns ``{"runs": [per-run dicts: name,
    status, best_epoch, epochs, train_seconds, wall_seconds], "wall_seconds": total}``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from campose import pipeline

    prof = pipeline.get_profile(profile)
    labels = prof.labels if labels is None else labels
    names = list(STUDIES) if studies is None else list(studies)
    unknown = sorted(set(names) - set(STUDIES))
    if unknown:
        raise ValueError(f"unknown study(ies) {unknown}; choose from {', '.join(STUDIES)}")
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    # build the data stages once, here, not in every worker: labels, dense views and pairs, resized images
    pipeline.labelled_sequences(prof, labels)
    tasks = [(run_name(st, label), {**changes, **common}) for st in names for label, changes in STUDIES[st].items()]
    splits = set()  # the validation splits of the runs with rendered data: one set of views (or pairs) each
    for _, changes in tasks:
        if changes.get("dense"):
            cfg = pipeline.train_config(prof, **{k: v for k, v in changes.items() if k != "dense"})
            splits.add((cfg.kind.startswith("menet"), cfg.val_fraction, cfg.val_gap))
    for pairs, fraction, gap in sorted(splits):  # pairs for MeNet, views for PoseNet and MapNet
        render = pipeline.dense_pairs if pairs else pipeline.dense_views
        render(prof, None, labels, progress=progress, val_fraction=fraction, val_gap=gap)
    pipeline.cache_images(prof, labels, progress=progress)
    order = {name: i for i, (name, _) in enumerate(tasks)}  # the rows come back in the studies' order
    # longest first (dense views, then rendered pairs, then the slower models), so the last job to
    # finish is a short one
    cost = {k: i for i, k in enumerate(_KIND_COST)}
    tasks.sort(key=lambda t: (not t[1].get("dense", False), str(t[1].get("kind", "posenet")).startswith("menet"),
                              cost.get(t[1].get("kind", "posenet"), len(cost))))
    progress = pipeline.show_progress() if progress is None else progress
    t0, rows = time.perf_counter(), []
    bar = tqdm(total=len(tasks), desc=f"train {prof.name} studies", disable=not progress)
    if int(jobs) == 1:
        for name, changes in tasks:
            rows.append(_train_one(prof, name, labels, changes))
            bar.update()
    else:
        with ProcessPoolExecutor(int(jobs), mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_train_one, prof, name, labels, changes) for name, changes in tasks]
            for f in as_completed(futures):
                rows.append(f.result())
                bar.update()
    bar.close()
    rows.sort(key=lambda r: order[r["name"]])
    return {"profile": prof.name, "labels": labels, "jobs": int(jobs), "runs": rows,
            "wall_seconds": time.perf_counter() - t0}
