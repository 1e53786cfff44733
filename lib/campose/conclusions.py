"""Every method of the book side by side on the same test walks (chapter 11).

A :class:`MethodScore` holds one method's per-frame errors against the **true** poses of a
profile's test walks (metres, degrees), its time per query and its size; :func:`compare` gathers
them for a profile:

* the networks of chapters 07 and 08 (every PoseNet and MapNet run of their loss studies, from the
  cached ``models`` stage), timed one image at a time (batch 1, from the uint8 image to the pose:
  resizing and normalisation included, on the CPU threads the trainer chose);
* the baselines of :mod:`campose.localize` on the map of the training walks: structure-based
  localisation (SIFT, PnP + RANSAC), image retrieval (bag of words), and MeNet put to use as a
  localiser (retrieval, then MeNet's relative pose from the retrieved image: the only way a
  relative-pose network gives a position).

:meth:`Comparison.table` adds, for every method, the same predictions snapped onto the walkable
map (:mod:`campose.walkable`), with the snapping time added to the time per query, and the report's
own numbers (its floor, not ours) as labelled rows. :meth:`Comparison.plot_accuracy` draws accuracy
against time per query. Sizes are what a method keeps in memory to answer: a network's float32
parameters, a baseline's map (3D points and descriptors, or global descriptors), MB = 10^6 bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from campose.evaluate import THRESHOLDS, error_stats

__all__ = ["MethodScore", "Comparison", "time_network", "network_scores", "localizer_score", "compare", "styled",
           "FAMILY_STYLE"]

#: Marker and colour of each family in :meth:`Comparison.plot_accuracy`.
FAMILY_STYLE = {
    "PoseNet": ("o", "tab:blue"),
    "MapNet": ("s", "tab:orange"),
    "MeNet + retrieval": ("D", "tab:purple"),
    "retrieval": ("v", "tab:green"),
    "structure-based": ("*", "tab:red"),
}


@dataclass
class MethodScore:
    """One method on a profile's test walks: ``family`` (a key of :data:`FAMILY_STYLE`), ``method``
    (its label), ``frames`` (per-frame table against the truth: ``sequence``, ``image``, predicted
    ``x, y, z``, true ``x_ref, y_ref, z_ref``, ``position_m``, ``rotation_deg``), ``ms_per_query``
    (median wall time of one query, milliseconds), ``size_mb`` and ``localized`` (% of queries the
    method itself accepted; None for networks, which always answer)."""

    family: str
    method: str
    frames: object
    ms_per_query: float
    size_mb: float
    localized: float | None = None

    def stats(self, thresholds=THRESHOLDS) -> dict:
        """Median and mean position (m) and rotation (deg) errors and the % within each threshold,
        pooled over the test walks (a query without any pose counts as an infinite error)."""
        f = self.frames
        return error_stats(f["position_m"].to_numpy(float), f["rotation_deg"].to_numpy(float), thresholds)


def time_network(model, images, size, repeats: int = 1, threads: int = 1) -> float:
    """Median milliseconds to turn one uint8 (H, W, 3) image into a pose with ``model`` (batch 1:
    :func:`campose.dataset.image_to_tensor` at ``size`` = (width, height), then ``predict_pose``),
    over ``images`` (a few test frames), each ``repeats`` times, after one warm-up call, on
    ``threads`` torch threads (1, as the server of chapter 10 runs: on a small CPU a second thread
    mostly waits for the other)."""
    import torch

    from campose.dataset import image_to_tensor
    from campose.train import cpu_thread_limit

    images = list(images)
    if not images:
        raise ValueError("time_network needs at least one image")
    model.eval()
    with cpu_thread_limit("cpu", int(threads)):
        with torch.no_grad():
            model.predict_pose(image_to_tensor(images[0], size))  # warm-up: first-call allocations
            times = []
            for img in images:
                for _ in range(int(repeats)):
                    t0 = time.perf_counter()
                    model.predict_pose(image_to_tensor(img, size))
                    times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _parameters_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


def _truth_frames(frames):
    f = frames[frames["reference"] == "truth"] if "reference" in frames.columns else frames
    if f.empty:
        raise ValueError("no frame is scored against the true poses")
    return f.reset_index(drop=True)


def network_scores(study, timing_images, family: str | None = None) -> list[MethodScore]:
    """A :class:`MethodScore` for every absolute run (PoseNet, MapNet) of a
    :class:`campose.study.Study`, timed on ``timing_images`` (uint8 test frames)."""
    family = family or {"posenet": "PoseNet", "mapnet": "MapNet"}.get(study.name, study.name)
    out = []
    for label, run in study.runs.items():
        if run.relative:
            continue
        model = run.result.model
        size = tuple(run.result.config.image_size)
        out.append(MethodScore(family, f"{family}, {label}", _truth_frames(run.evaluation.frames),
                               time_network(model, timing_images, size), _parameters_mb(model)))
    return out


def localizer_score(evaluation, family: str, method: str | None = None) -> MethodScore:
    """A :class:`MethodScore` from a :class:`campose.localize.LocalizerEvaluation`."""
    f = _truth_frames(evaluation.frames)
    return MethodScore(family, method or evaluation.method, f, float(f["ms"].median()), float(evaluation.size_mb),
                       100.0 * float(f["localized"].mean()))


@dataclass
class Comparison:
    """The methods of :func:`compare` on one profile (``scores``), the ``walkable`` map used to
    snap them, what snapping one prediction costs (``snap_ms``) and the report's figures
    (``report``: name -> median position error in metres on the report's own floor)."""

    profile: str
    scores: list
    walkable: object = None
    snap_ms: float = 0.0
    report: dict = field(default_factory=dict)

    def snapped(self, score: MethodScore) -> MethodScore:
        """The same predictions snapped onto the walkable map (rotations unchanged)."""
        from campose.walkable import snap_evaluation

        s = snap_evaluation(self.walkable, score.frames)
        f = score.frames.copy()
        f[["x", "y", "z"]] = s[["x_snap", "y_snap", "z_snap"]].to_numpy()
        f["position_m"] = s["snapped_m"].to_numpy()
        # a query without a pose stays a failure (snap_evaluation leaves it NaN)
        f.loc[~np.isfinite(score.frames["position_m"].to_numpy(float)), "position_m"] = np.inf
        return MethodScore(score.family, score.method, f, score.ms_per_query + self.snap_ms,
                           score.size_mb + self.walkable.nbytes / 1e6, score.localized)

    def table(self, snapping: bool = True, report: bool = True, thresholds=THRESHOLDS):
        """One row per method (and per method snapped, with ``snapping``, right below it), best
        median position first within each family: family, method, snapped, median and mean position (m) and
        rotation (deg), % within each threshold, % localised, ms per query, size (MB); with
        ``report`` the report's own figures as last rows, labelled as such."""
        import pandas as pd

        rows = []
        for s in self.scores:
            variants = [(False, s)] + ([(True, self.snapped(s))] if snapping and self.walkable is not None else [])
            for snapped, v in variants:
                st = v.stats(thresholds)
                st.pop("frames", None)
                rows.append({"family": v.family, "method": v.method, "snapped": snapped, **st,
                             "localised (%)": np.nan if v.localized is None else v.localized,
                             "ms per query": v.ms_per_query, "size (MB)": v.size_mb})
        t = pd.DataFrame(rows)
        order = {f: k for k, f in enumerate(FAMILY_STYLE)}
        # families in FAMILY_STYLE's order, methods by their own median, each snapped row under its method
        base = t[~t["snapped"]].set_index("method")["median position (m)"]
        t = t.assign(_family=t["family"].map(order).fillna(len(order)), _base=t["method"].map(base))
        t = t.sort_values(["_family", "_base", "method", "snapped"], kind="stable").drop(columns=["_family", "_base"])
        if report:
            extra = [{"family": "the report (its own floor)", "method": f"the report's {name}", "snapped": False,
                      "median position (m)": m} for name, m in self.report.items()]
            t = pd.concat([t, pd.DataFrame(extra)], ignore_index=True)
        return t.reset_index(drop=True)

    def best(self, family: str | None = None, snapped: bool = False) -> dict:
        """The row of :meth:`table` with the lowest median position error (within ``family``)."""
        t = self.table(report=False)
        t = t[t["snapped"] == snapped]
        if family is not None:
            t = t[t["family"] == family]
        if t.empty:
            raise ValueError(f"no method of family {family!r}")
        return t.loc[t["median position (m)"].astype(float).idxmin()].to_dict()

    def best_scores(self) -> list:
        """The :class:`MethodScore` with the lowest median position error of each family, in the
        order of :data:`FAMILY_STYLE`."""
        out = {}
        for s in self.scores:
            m = float(np.median(s.frames["position_m"].to_numpy(float)))
            if s.family not in out or m < out[s.family][0]:
                out[s.family] = (m, s)
        order = list(FAMILY_STYLE)
        return [out[f][1] for f in sorted(out, key=lambda f: order.index(f) if f in order else len(order))]

    def plot_cumulative(self, axes=None):
        """Cumulative position and rotation error curves of the best method of each family (against
        the truth; a query without a pose never counts as within)."""
        import matplotlib.pyplot as plt

        from campose.evaluate import plot_cumulative_errors

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        best = self.best_scores()
        pos = {s.method: s.frames["position_m"].to_numpy(float) for s in best}
        rot = {s.method: s.frames["rotation_deg"].to_numpy(float) for s in best}
        top = max(float(np.nanpercentile(np.where(np.isfinite(v), v, np.nan), 95)) for v in pos.values())
        plot_cumulative_errors(pos, axes[0], "position error (m)", thresholds=(0.25, 0.5, 5.0), xmax=max(top, 1.0))
        plot_cumulative_errors(rot, axes[1], "rotation error (deg)", thresholds=(2.0, 5.0, 10.0), xmax=180.0)
        return axes[0].figure

    def plot_accuracy(self, ax=None, metric: str = "median position (m)", snapping: bool = True):
        """Accuracy against time per query (both axes logarithmic): one marker per method, family
        by marker and colour; snapped variants hollow, joined to their unsnapped point; the report's
        figures as dashed horizontal lines (their time is unknown)."""
        import matplotlib.pyplot as plt

        t = self.table(snapping=snapping, report=False)
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 5))
        for fam, g in t.groupby("family", sort=False):
            marker, colour = FAMILY_STYLE.get(fam, ("x", "grey"))
            raw, snap = g[~g["snapped"]], g[g["snapped"]]
            ax.scatter(raw["ms per query"], raw[metric], marker=marker, color=colour, s=60, label=fam, zorder=3)
            if len(snap):
                ax.scatter(snap["ms per query"], snap[metric], marker=marker, facecolors="none", edgecolors=colour,
                           s=60, zorder=3)
                for (_, a), (_, b) in zip(raw.iterrows(), snap.set_index("method").loc[raw["method"]].reset_index().iterrows()):
                    ax.plot([a["ms per query"], b["ms per query"]], [a[metric], b[metric]], color=colour, lw=0.6,
                            alpha=0.6)
        if metric == "median position (m)":
            for k, (name, m) in enumerate(self.report.items()):
                ax.axhline(m, color="grey", ls="--", lw=1)
                ax.annotate(f"the report's {name} (its floor)", (0.01, m), xycoords=("axes fraction", "data"),
                            va="bottom", fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time per query (ms, CPU, one image)")
        ax.set_ylabel(metric.replace("(m)", "(m, against the truth)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="filled: as predicted; hollow: snapped", fontsize=8, title_fontsize=8)
        return ax.figure


def compare(profile="quick", labels: str | None = None, studies=("posenet", "mapnet"), menet: bool = True,
            structure: dict | None = None, timing_frames: int = 20, walkable=None,
            progress: bool | None = None) -> Comparison:
    """Score every method on ``profile``'s test walks against the true poses.

    ``studies``: the loss studies whose PoseNet/MapNet runs enter (trained through the cache, as the
    chapters train them); ``menet``: add every MeNet run of its study behind bag-of-words retrieval;
    ``structure``: keyword arguments of :class:`campose.localize.StructureLocalizer` (default
    ``max_distance_m=5``: indoors every query is taken near a mapped walk); ``timing_frames``: test
    frames the networks are timed on; ``walkable``: the map predictions are snapped onto (default:
    :meth:`campose.walkable.WalkableMap.from_plan` of the default floor at 5 cm).

    The baselines' scores are cached, one file per localiser under the ``localize/evaluations``
    stage folder, keyed by the map, the renders, the labels, the localiser's settings and (MeNet)
    its checkpoint: a rerun localises the test walks only with what changed. Their times per query
    are those of the run that scored them."""
    from campose import localize, pipeline, study
    from campose.floorplan import load_floorplan
    from campose.walkable import WalkableMap, time_snap

    prof = pipeline.get_profile(profile)
    labels = prof.labels if labels is None else labels
    test, _ = pipeline.test_walks(prof, labels)
    first = next(iter(test.values()))
    step = max(1, len(first) // max(1, int(timing_frames)))
    timing_images = [first.load_image(i) for i in range(0, len(first), step)][: int(timing_frames)]

    scores: list[MethodScore] = []
    for name in studies:
        scores += network_scores(study.run_study(prof, name, labels=labels, progress=progress), timing_images)

    m = localize.profile_map(prof, labels, progress=progress)
    structure = {"max_distance_m": 5.0, **(structure or {})}
    # (family, label, localiser, what its scores depend on besides the map and the test walks)
    locs = [("structure-based", None, localize.StructureLocalizer(m, **structure), structure),
            ("retrieval", None, localize.RetrievalLocalizer(m, "bow", k=1), {"descriptor": "bow", "k": 1})]
    if menet:
        st = study.run_study(prof, "menet", labels=labels, progress=progress)
        for label, run in st.runs.items():
            size = tuple(run.result.config.image_size)
            loc = localize.RelativePoseLocalizer(m, run.result.model, size, pipeline.stage_dir(prof, "render"),
                                                 k=1, label=f"MeNet {label}")
            ckpt = run.result.checkpoint  # None for a run kept in memory only: scored, not cached
            locs.append(("MeNet + retrieval", f"retrieval + MeNet, {label}", loc,
                         {"k": 1, "size": size, "checkpoint": pipeline.file_stamp(ckpt)} if ckpt else None))
    from campose.train import cpu_thread_limit

    # each localiser's scores are cached by what they depend on, so a rerun after retraining one
    # network does not localise the test walks again with the others (the full profile: ~30 min)
    common = {"v": localize.STAGE_VERSION, "map": pipeline.stage_key(prof, f"localize/map-{labels}"),
              "render": pipeline.render_key(prof), "labels": labels,
              "labels_stage": pipeline.stage_key(prof, "labels") if labels == "sfm" else None}
    keys = [None if settings is None else
            pipeline.content_key({**common, "family": family, "method": label, "name": loc.name, "settings": settings})
            for family, label, loc, settings in locs]
    folder = pipeline.stage_dir(prof, "localize") / "evaluations"
    files = [folder / f"{labels}-{study.slug(loc.name)}.pkl" for _, _, loc, _ in locs]
    evaluations = [None if k is None else pipeline.load_cached(f, k) for f, k in zip(files, keys)]
    todo = [i for i, ev in enumerate(evaluations) if ev is None]
    if todo:
        # one torch thread: MeNet answers one query at a time, as the networks are timed; one pass
        # over the test frames for all the localisers left, so each query's SIFT is extracted once
        with cpu_thread_limit("cpu", 1):
            fresh = localize.evaluate_localizer(prof, [locs[i][2] for i in todo], labels, progress)
        for i, ev in zip(todo, fresh):
            if keys[i] is not None:
                pipeline.store_cached(files[i], keys[i], ev)
            evaluations[i] = ev
    for (family, label, _, _), ev in zip(locs, evaluations):
        scores.append(localizer_score(ev, family, label))

    walkable = walkable if walkable is not None else WalkableMap.from_plan(load_floorplan(), resolution=0.05)
    probe = np.concatenate([s.frames[["x", "y"]].to_numpy(float) for s in scores])[:200]
    snap_ms = time_snap(walkable, probe[np.isfinite(probe).all(1)])["single_us"] / 1e3
    report = {name: study.REPORT[name]["position_m"] for name in ("posenet", "mapnet") if name in study.REPORT}
    report = {{"posenet": "PoseNet", "mapnet": "MapNet"}[k]: v for k, v in report.items()}
    return Comparison(prof.name, scores, walkable, snap_ms, report)


def styled(table, precision: int = 3):
    """A pandas Styler of :meth:`Comparison.table` for the book: errors and times rounded, the
    snapped rows marked, missing values (the report's rows, networks' "localised") as a dash."""
    t = table.copy()
    t["snapped"] = t["snapped"].map({True: "snapped", False: ""}).fillna("")
    fmt = {c: f"{{:.{precision}f}}" for c in t.columns if "position" in c}
    fmt.update({c: "{:.1f}" for c in t.columns if "rotation" in c or c.endswith("(%)")})
    fmt.update({"ms per query": "{:.1f}", "size (MB)": "{:.1f}"})
    return t.style.format(fmt, na_rep="–").hide(axis="index")
