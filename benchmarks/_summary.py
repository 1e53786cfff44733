"""Collect benchmarks/results/*.json into one table: summary.json, summary.md, and the README's results.

Reads every results file that exists (the benchmark scripts write them; ``_run_all.py`` runs the
scripts and adds ``run_all.json``, its log: command, exit status, wall time, load average and the
CPU time other processes took during each script), and writes

- ``results/summary.json``: every figure with its source file and script, profile, command, date,
  the machine it was measured on (CPUs, processor, Python and torch versions where recorded) and
  the load during the run where recorded;
- ``results/summary.md``: one markdown table, ``| benchmark | figure | command |``, with a
  "not measured: run ..." row for every expected results file that is missing;

and prints the table. ``--readme`` also replaces the region between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` in README.md with the table and a line naming the machine and the dates.

A figure is marked *loaded* when the machine was busy with other work while it was measured: when
the runner measured it, other processes took more than a quarter of the machine's CPU time during
the script (else it is marked *idle*); otherwise, when the script recorded load averages, when a
1-minute load average exceeded the CPU count (else the load averages are shown as they are: they
include the benchmark's own processes, so a low one does not prove the machine was idle).

    python benchmarks/_summary.py [--profile quick] [--results DIR] [--readme [--readme-path README.md]]

Nothing here imports campose or torch: it runs in a second on any Python >= 3.9.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RUN_LOG = "run_all.json"
OWN_FILES = {"summary.json", RUN_LOG}
HEADER = ["benchmark", "figure", "command"]

#: Scripts whose results depend on ``--profile`` (results file ``<script>_<profile>.json``).
PROFILED = ("sfm_labels", "localize", "train_studies", "conclusions", "scaling")

#: The results files a run of every benchmark leaves, in table order: (script, profiled, what it
#: measures). A missing one gives a "not measured" row.
EXPECTED = [
    ("render_speed", False, "renderer"),
    ("sfm_labels", True, "SfM and alignment"),
    ("castle_p30", False, "castle-P30 (real photos)"),
    ("train_speed", False, "network training and inference speed"),
    ("serve_latency", False, "pose server"),
    ("localize", True, "localisation baselines"),
    ("train_studies", True, "network studies (chapters 06-08)"),
    ("conclusions", True, "every method side by side (chapter 11)"),
    ("scaling", True, "growth with the number of images"),
    ("book_time", False, "book build"),
]
ORDER = {name: i for i, (name, _, _) in enumerate(EXPECTED)}

MODEL_NAMES = {"posenet": "PoseNet", "mapnet": "MapNet", "menet": "MeNet", "menet_siamese": "siamese"}


# ------------------------------------------------------------------------------------ formatting

def num(x, unit: str = "") -> str:
    """A number with sensible precision: 1,234 / 123 / 12.3 / 1.2 / 0.25 / 0.0031."""
    if x is None:
        return "n/a"
    x = float(x)
    if x != x:  # NaN
        return "n/a"
    a = abs(x)
    if a >= 100 or (x.is_integer() and a < 1e15):
        s = f"{x:,.0f}"
    elif a >= 1:
        s = f"{x:.1f}"
    elif a == 0:
        s = "0"
    else:
        s = f"{x:.2g}"
    return s + (f" {unit}" if unit else "")


def secs(x) -> str:
    """Seconds: ``8.6 s``, ``117 s``, ``1,050 s``."""
    if x is None:
        return "n/a"
    return f"{x:.1f} s" if x < 10 else f"{x:,.0f} s"


def wall(x) -> str:
    """A wall time: seconds below 10 minutes, else minutes, else hours."""
    if x is None:
        return "n/a"
    if x < 600:
        return secs(x)
    if x < 3 * 3600:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def dist(m) -> str:
    """A distance in metres: centimetres below 1 m."""
    if m is None:
        return "n/a"
    a = abs(m)
    return (f"{100 * m:.1f} cm" if a < 1 else f"{m:.2f} m" if a < 10 else f"{m:.1f} m" if a < 100
            else f"{m:,.0f} m")


def deg(x) -> str:
    return "n/a" if x is None else (f"{x:.2f} deg" if abs(x) < 10 else f"{x:.1f} deg")


def pct(x) -> str:
    return "n/a" if x is None else f"{x:.0f} %" if abs(x) >= 10 else f"{x:.1f} %"


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt_date(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


# ------------------------------------------------------------------------------------ loading

def split_stem(stem: str) -> tuple[str, str | None]:
    """``sfm_labels_quick`` -> (``sfm_labels``, ``quick``); ``render_speed`` -> (``render_speed``, None)."""
    for name in PROFILED:
        if stem.startswith(name + "_"):
            return name, stem[len(name) + 1:]
    return stem, None


def load_results(results: Path) -> dict[str, dict]:
    """``{file stem: its JSON}`` for every results file (not the summary's nor the runner's own),
    each with ``_path`` and ``_mtime`` added. An unreadable file is kept as ``{"_error": ...}``."""
    out = {}
    for f in sorted(results.glob("*.json")):
        if f.name in OWN_FILES or f.name.startswith("_"):
            continue
        try:
            data = json.loads(f.read_text())
            if not isinstance(data, dict):
                data = {"_value": data}
        except (OSError, ValueError) as e:
            data = {"_error": f"{type(e).__name__}: {e}"}
        data["_path"] = f
        data["_mtime"] = f.stat().st_mtime
        out[f.stem] = data
    return out


def load_run_log(results: Path) -> dict:
    f = results / RUN_LOG
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {}


def run_record(log: dict, stem: str, mtime: float | None = None) -> dict | None:
    """The runner's record of the script that wrote ``stem``; with ``mtime``, only if that file was
    written during the recorded run (so a figure is never paired with another run's conditions)."""
    rec = (log.get("runs") or {}).get(stem)
    if not rec:
        return None
    if mtime is not None:
        start, end = rec.get("started_ts"), rec.get("finished_ts")
        if start is None or end is None or not (start - 5 <= mtime <= end + 60):
            return None
    return rec


def _load_pair(load) -> tuple[float | None, float | None]:
    """(1-min load before, after) from the shapes the scripts write: ``[before, after]`` or
    ``{"before": [1, 5, 15], "after": [...]}``."""
    if isinstance(load, dict):
        b, a = load.get("before"), load.get("after")
        b = b[0] if isinstance(b, (list, tuple)) and b else b
        a = a[0] if isinstance(a, (list, tuple)) and a else a
        return b, a
    if isinstance(load, (list, tuple)) and len(load) >= 2:
        return load[0], load[1]
    return None, None


def conditions(data: dict, rec: dict | None) -> dict:
    """Machine, date and load of one results file (the runner's record completes the file's own)."""
    machine = {}
    if rec and isinstance(rec.get("machine"), dict):
        machine.update(rec["machine"])
    own = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    machine.update({k: v for k, v in own.items() if v is not None})
    for key in ("cpus", "torch", "device"):
        if data.get(key) is not None:
            machine[key] = data[key]
    cpus = machine.get("cpus")
    load = data.get("load_average")
    if load is None and rec:
        load = rec.get("load_average")
    before, after = _load_pair(load)
    other = rec.get("other_cpu_cores") if rec else None
    loaded, why = None, None
    if other is not None and cpus:
        loaded = other > 0.25 * cpus
        why = f"other processes used {other:.1f} of {cpus} CPUs"
    elif (before is not None or after is not None) and cpus:
        peak = max(v for v in (before, after) if v is not None)
        loaded = peak > cpus
        why = " -> ".join(f"{v:.2f}" for v in (before, after) if v is not None)
        why = f"load average {why} on {cpus} CPUs"
    date = (rec or {}).get("finished") or data.get("date") or fmt_date(data.get("_mtime"))
    return {"machine": machine, "date": date, "load_average": load, "load_1min": [before, after],
            "other_cpu_cores": other, "loaded": loaded, "load_note": why}


def command_for(script: str, profile: str | None, rec: dict | None) -> str:
    if rec and rec.get("command"):
        return rec["command"]
    return f"python benchmarks/{script}.py" + (f" --profile {profile}" if profile else "")


# ------------------------------------------------------------------------------------ the rows
# Each formatter takes a results file and returns rows: (benchmark, figure, values); values are the
# numbers the figure shows, for summary.json. A formatter reads with .get() so a file of an older or
# newer shape still gives what it has.

def rows_render_speed(d: dict, profile) -> list:
    rows = []
    for r in d.get("results", []):
        rows.append((f"renderer, {r.get('width')} x {r.get('height')}",
                     f"{num(r.get('fps'))} frames/s ({num(r.get('ms_per_frame'))} ms/frame, {r.get('frames')} frames "
                     f"of a walk-through)", {k: r.get(k) for k in ("width", "height", "fps", "ms_per_frame")}))
    if d.get("texture_paint_s") is not None:
        cached = d.get("texture_load_s")
        what = "texture painting (once per machine: kept on disk)" if cached is not None else \
            "texture painting (once per process)"
        text = secs(d["texture_paint_s"]) + (f"; loading them from the disk cache: {secs(cached)}"
                                             if cached is not None else "")
        rows.append((what, text, {"texture_paint_s": d["texture_paint_s"], "texture_load_s": cached}))
    return rows


def rows_sfm_labels(d: dict, profile) -> list:
    prof = d.get("profile") or profile
    o = d.get("sfm_options") or {}
    opts = [o.get("matcher", "?")]
    if o.get("overlap"):
        opts[0] += f" overlap {o['overlap']}"
    if o.get("retrieval"):
        opts.append(f"retrieval {o['retrieval']}")
    if o.get("mapper"):
        opts.append(f"{o['mapper']} mapper")
    if o.get("global_tracks_per_view"):
        opts.append(f"{o['global_tracks_per_view']} tracks per view")
    if o.get("global_retriangulation") is False:
        opts.append("no final retriangulation")
    if o.get("min_inliers"):
        opts.append(f"pairs with at least {o['min_inliers']} inliers")
    t = d.get("sfm_timings_s") or {}
    total = d.get("sfm_seconds")
    timed = "total of the steps" if total is None else "wall"
    if total is None and t:
        total = sum(v for v in t.values() if isinstance(v, (int, float)))
    images, reg = d.get("images"), d.get("registered")
    per_image = total / images if total and images else None
    rate = d.get("registration_rate")
    models = d.get("models") or []
    steps = " + ".join(f"{k} {secs(v)}" for k, v in t.items())
    share = pct(100 * rate) if rate is not None else "n/a"
    fig = (f"{num(per_image)} s per image, {num(reg)}/{num(images)} registered ({share}) "
           f"in {len(models)} model{'s' if len(models) != 1 else ''}; {steps} = {secs(total)} ({timed})")
    if d.get("matches_reused"):
        fig += f"; extraction and matching reused from the run of {d['matches_reused']}, mapping rerun"
    elif d.get("sfm_seconds") is None and t:
        fig += "; reported from the cache (--cached), not rerun"
    pairs = d.get("pairs")
    if pairs:
        fig += (f"; {num(pairs['false'])} of the {num(pairs['verified'])} verified pairs the mapper saw are false "
                f"matches (> {pairs['threshold_px']:.0f} px off the true epipolar geometry)")
    rows = [(f"SfM, {prof} profile ({num(images)} frames; {', '.join(opts)})", fig,
             {"seconds_per_image": per_image, "registered": reg, "images": images, "registration_rate": rate,
              "models": len(models), "timings_s": t, "total_s": total})]
    pe, re_ = d.get("position_error_m") or {}, d.get("rotation_error_deg") or {}
    fig = (f"labels against the true poses: median {dist(pe.get('median'))} / {deg(re_.get('median'))}, "
           f"p90 {dist(pe.get('p90'))} / {deg(re_.get('p90'))}, max {dist(pe.get('max'))} / {deg(re_.get('max'))}; "
           f"control-point residual {dist(d.get('control_rms_m'))} RMS")
    med = pe.get("median")
    if med is not None and med > 0.5:
        fig += f"; **the geometry is wrong in places: labels {dist(med)} off (median)**"
    noise = d.get("survey_noise_m")
    rows.append((f"alignment, {prof} profile ({d.get('control_points')} control points"
                 + (f", {dist(noise)} survey noise)" if noise is not None else ")"), fig,
                 {"position_error_m": pe, "rotation_error_deg": re_, "control_rms_m": d.get("control_rms_m")}))
    return rows


def rows_castle_p30(d: dict, profile) -> list:
    rows = []
    for r in d.get("results", []):
        pos, rot = r.get("median_position_m"), r.get("median_rotation_deg")
        fig = (f"{r.get('registered')}/{r.get('total')} registered, median {dist(pos)} / {deg(rot)} "
               f"(max {dist(r.get('max_position_m'))} / {deg(r.get('max_rotation_deg'))}), {secs(r.get('seconds'))}")
        if pos is not None and pos > 1.0:
            fig += "; **wrong geometry**"
        rows.append((f"castle-P30 ({r.get('total')} real photos, known intrinsics), aligned from 8 surveyed cameras: "
                     f"{r.get('variant')}", fig,
                     {k: r.get(k) for k in ("registered", "total", "median_position_m", "median_rotation_deg",
                                            "max_position_m", "max_rotation_deg", "seconds")}))
    return rows


def rows_train_speed(d: dict, profile) -> list:
    groups: dict[tuple, list] = {}
    for r in d.get("results", []):
        key = (r.get("backbone"), r.get("width"), r.get("height"), r.get("threads"), r.get("device", d.get("device")))
        groups.setdefault(key, []).append(r)
    rows = []
    for (backbone, w, h, threads, device), rs in groups.items():
        names = [MODEL_NAMES.get(r.get("model"), r.get("model")) for r in rs]
        unit = lambda r: "pairs/s" if str(r.get("model", "")).startswith("menet") else "images/s"  # noqa: E731
        train = ", ".join(f"{n} {num(r.get('train_images_per_s'))} {unit(r)}" for n, r in zip(names, rs))
        infer = ", ".join(f"{n} {num(r.get('infer_ms_per_image_b1'))} / {num(r.get('infer_ms_per_image_b32'))}"
                          for n, r in zip(names, rs))
        where = f"{threads} thread{'s' if threads != 1 else ''}" if str(device).startswith("cpu") else str(device)
        batch = rs[0].get("train_batch", 32)
        rows.append((f"networks, {backbone}, {w} x {h}, {where}",
                     f"training (one AdamW step, batch {batch}): {train}; inference ms/image at batch 1 / 32: {infer}",
                     {n: {k: r.get(k) for k in ("train_images_per_s", "infer_ms_per_image_b1", "infer_ms_per_image_b32")}
                      for n, r in zip(names, rs)}))
    return rows


def _checkpoint_label(path: str | None) -> str:
    m = re.search(r"([^/\\]+)[/\\]models[/\\]([^/\\]+)[/\\][^/\\]+$", path or "")
    return f"{m.group(1)} profile's {m.group(2)}" if m else (Path(path).name if path else "?")


def rows_serve_latency(d: dict, profile) -> list:
    m, p = d.get("model") or {}, d.get("photo") or {}
    size = "x".join(str(v) for v in m.get("image_size", [])) or "?"
    levels = d.get("levels") or []
    parts = []
    for lv in levels:
        k = lv.get("clients")
        parts.append(f"{k} client{'s' if k != 1 else ''}: p50 {num(lv.get('p50_ms'))} / p95 {num(lv.get('p95_ms'))} ms, "
                     f"{num(lv.get('throughput_rps'))} req/s")
    errors = sum(lv.get("errors", 0) for lv in levels)
    reqs = sorted({lv.get("requests") for lv in levels})
    fig = "; ".join(parts) + f"; {errors} errors in {len(levels)} x {'/'.join(map(str, reqs))} requests"
    if levels and levels[0].get("server_model_p50_ms") is not None:
        fig += f"; model alone p50 {num(levels[0]['server_model_p50_ms'])} ms"
    if errors:
        fig = "**errors**: " + fig
    rows = [(f"pose server, POST /predict, {p.get('width')} x {p.get('height')} JPEG, loopback; "
             f"{_checkpoint_label(d.get('checkpoint'))} ({m.get('kind')}, {m.get('backbone')}, {size}, "
             f"{m.get('torch_threads')} torch thread{'s' if m.get('torch_threads') != 1 else ''})", fig,
             {"levels": [{k: lv.get(k) for k in ("clients", "requests", "errors", "p50_ms", "p95_ms", "throughput_rps")}
                         for lv in levels]})]
    s = d.get("snap")
    if s:
        grid = s.get("grid") or ["?", "?"]
        rows.append((f"walkable snapping, {num(100 * s.get('resolution_m', 0))} cm grid ({grid[0]} x {grid[1]} cells)",
                     f"{num(s.get('single_us'))} us per single-point call, {num(s.get('batch_us_per_point'))} us per point "
                     f"in a batch", {k: s.get(k) for k in ("single_us", "batch_us_per_point", "grid", "resolution_m")}))
    return rows


def rows_localize(d: dict, profile) -> list:
    prof = d.get("profile") or profile
    tables = d.get("tables") or {}
    rows_t = tables.get("truth") or next(iter(tables.values()), [])
    if not rows_t:
        return []
    frames = sum((d.get("test_frames") or {}).values())
    mp = d.get("map") or {}
    parts, values = [], {}
    structure = [r for r in rows_t if str(r.get("method", "")).startswith("structure")]
    retrieval = [r for r in rows_t if not str(r.get("method", "")).startswith("structure")]
    for r in structure:
        parts.append(f"{r['method']}: median {dist(r.get('median position (m)'))} / {deg(r.get('median rotation (deg)'))}, "
                     f"mean {dist(r.get('mean position (m)'))}, {pct(r.get('within 0.25 m, 2 deg (%)'))} within 0.25 m "
                     f"and 2 deg, {pct(r.get('localized (%)'))} localised, {num(r.get('median ms'))} ms/query")
    if retrieval:
        best = min(retrieval, key=lambda r: r.get("median position (m)", float("inf")))
        meds = [r.get("median position (m)") for r in retrieval if r.get("median position (m)") is not None]
        parts.append(f"retrieval ({len(retrieval)} variants): median {dist(min(meds))} to {dist(max(meds))}; "
                     f"best {best['method']}, {num(best.get('median ms'))} ms/query")
    for r in rows_t:
        values[r.get("method")] = {k: r.get(k) for k in ("median position (m)", "median rotation (deg)",
                                                          "mean position (m)", "localized (%)", "median ms")}
    return [(f"localisation baselines, {prof} profile ({frames} test frames; map of the {d.get('map_images')} "
             f"training images only, {num(mp.get('points'))} points triangulated with the {d.get('labels')} poses)",
             "against the true poses: " + "; ".join(parts), values)]


def rows_conclusions(d: dict, profile) -> list:
    prof = d.get("profile") or profile
    rows = [r for r in d.get("rows") or [] if not r.get("snapped") and r.get("ms per query") is not None]
    if not rows:
        return []
    best = {}
    for r in rows:
        f = r.get("family")
        if f not in best or (r.get("median position (m)") or float("inf")) < (best[f].get("median position (m)")
                                                                             or float("inf")):
            best[f] = r
    parts = [f"{r['method']}: median {dist(r.get('median position (m)'))} / {deg(r.get('median rotation (deg)'))}, "
             f"{pct(r.get('within 0.5 m, 5 deg (%)'))} within 0.5 m and 5 deg, {num(r.get('ms per query'))} ms/query, "
             f"{num(r.get('size (MB)'))} MB" for r in best.values()]
    frames = sum((d.get("test_frames") or {}).values())
    return [(f"every method side by side, {prof} profile ({frames} test frames, best of each family, labels: "
             f"{d.get('labels')})", "against the true poses: " + "; ".join(parts),
             {f: {k: r.get(k) for k in ("method", "median position (m)", "median rotation (deg)", "ms per query",
                                        "size (MB)")} for f, r in best.items()})]


def rows_train_studies(d: dict, profile) -> list:
    prof = d.get("profile") or profile
    tr = d.get("trained") or {}
    runs = tr.get("runs") or []
    head = f"network studies, {prof} profile ({', '.join(d.get('tables', {}))}; labels: {d.get('labels')})"
    parts, values = [], {}
    if runs:
        ok = sum(r.get("status") == "completed" for r in runs)
        per = [r.get("train_seconds") for r in runs if r.get("train_seconds")]
        # a run loaded from the cache returns in seconds, far below the training time it records
        cached = [r for r in runs if r.get("train_seconds") and (r.get("wall_seconds") or 0) < 0.2 * r["train_seconds"]]
        spread = f", {wall(min(per))} to {wall(max(per))} per run" if per else ""
        if cached and len(cached) == len(runs):
            parts.append(f"{len(runs)} runs ({ok} completed), all loaded from the cache: their training took "
                         f"{wall(sum(per))} in all{spread}, so at least {wall(sum(per) / max(1, d.get('jobs') or 1))} "
                         f"wall {d.get('jobs')} at a time")
        else:
            parts.append(f"{len(runs)} runs ({ok} completed), {d.get('jobs')} at a time: {wall(tr.get('wall_seconds'))} "
                         f"wall" + (f" ({len(cached)} of them loaded from the cache)" if cached else "") + spread)
        values["wall_seconds"] = tr.get("wall_seconds")
        values["train_seconds_sum"] = sum(per) if per else None
        values["cached_runs"] = len(cached)
    else:
        parts.append("reported from the cache (no training timed)")
    for study, refs in (d.get("tables") or {}).items():
        table = refs.get("truth") or next(iter(refs.values()), {})
        if not table:
            continue
        key = "median direction (deg)" if study == "menet" else "median position (m)"
        best_label = min(table, key=lambda k: table[k].get(key, float("inf")))
        b = table[best_label]
        name = {"menet": "MeNet", "posenet": "PoseNet", "mapnet": "MapNet"}.get(study, study)
        if study == "menet":
            parts.append(f"best {name} ({best_label}): direction of t_ij {deg(b.get(key))}, "
                         f"t_ij {dist(b.get('median translation (m)'))}, rotation {deg(b.get('median rotation (deg)'))}")
        else:
            parts.append(f"best {name} ({best_label}): median {dist(b.get(key))} / {deg(b.get('median rotation (deg)'))}")
        values[study] = {"best": best_label, **b}
    return [(head, "; ".join(parts) + " (test walks, against the true poses)", values)]


def _exponent(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}"


def rows_scaling(d: dict, profile) -> list:
    prof = d.get("profile") or profile
    ex = d.get("exponents") or {}
    rows = []
    sfm = d.get("sfm") or []
    if sfm or ex.get("sfm_sequential") is not None or ex.get("sfm_exhaustive") is not None:
        by: dict[str, list] = {}
        for r in sfm:
            by.setdefault(str(r.get("matcher")), []).append(r)
        parts = []
        for matcher, rs in by.items():
            rs = sorted(rs, key=lambda r: r.get("frames") or 0)
            pts = ", ".join(f"{r.get('frames')}: {num(r.get('seconds_per_image'))} s/image"
                            + (f" ({r.get('registered')}/{r.get('frames')})" if r.get("registered") is not None else "")
                            for r in rs)
            parts.append(f"{matcher}: {pts}")
        fig = (f"time ~ n^k, sequential k = {_exponent(ex.get('sfm_sequential'))}, "
               f"exhaustive k = {_exponent(ex.get('sfm_exhaustive'))}" + ("; " + "; ".join(parts) if parts else ""))
        rows.append((f"SfM growth, {prof} profile (frames: registered)", fig,
                     {"exponents": {k: ex.get(k) for k in ("sfm_sequential", "sfm_exhaustive")}, "sfm": sfm}))
    train = sorted(d.get("training") or [], key=lambda r: r.get("images") or 0)
    if train or ex.get("training") is not None:
        pts = ", ".join(f"{r.get('images')} images {secs(r.get('seconds'))} ({num(r.get('images_per_s'))} images/s)"
                        for r in train)
        rows.append((f"training growth, {prof} profile", f"time ~ n^k, k = {_exponent(ex.get('training'))}"
                     + (f"; {pts}" if pts else ""), {"exponent": ex.get("training"), "training": train}))
    return rows


def _chapter(name: str) -> str:
    return Path(str(name)).stem


def _stage_text(s: dict) -> str:
    if not s.get("built", True):
        return f"{s.get('stage')} not built here"
    t = s.get("seconds")
    text = f"{s.get('stage')} {wall(t) if t is not None else 'not timed'}"
    timings = s.get("timings")
    if isinstance(timings, dict) and timings:
        text += " (" + " + ".join(f"{k} {secs(v)}" for k, v in timings.items()) + ")"
    if s.get("adopted"):
        text += f" [{s['adopted']}]"
    if s.get("matches_reused"):
        text += f" [the wall time is the mapping's: extraction and matching reused from the run of {s['matches_reused']}]"
    return text


def rows_book_time(d: dict, profile) -> list:
    rows = []
    book = d.get("book") or {}
    if book or d.get("wall_seconds") is not None:
        prof = d.get("profile") or "quick"
        chapters = book.get("chapters") or []
        parts = [f"{_chapter(c.get('chapter'))} {secs(c.get('seconds'))}"
                 + ("" if c.get("status") in (None, "ok") else f" ({c.get('status')})") for c in chapters]
        if book.get("html_seconds") is not None:
            parts.append(f"HTML {secs(book['html_seconds'])}")
        status = d.get("status", "ok")
        fig = ("" if status == "ok" else f"**{status}** (exit {d.get('returncode')}); ") + \
              ("**a partial build (a check of book_time.py, not the book's time)**; " if d.get("partial") else "") + \
              f"{wall(d.get('wall_seconds'))} wall: " + ", ".join(parts)
        stages = [s for s in d.get("cold_stages") or [] if s.get("built", True) and s.get("seconds") is not None]
        if stages:
            fig += "; stages built: " + ", ".join(f"{s['stage']} {wall(s['seconds'])}" for s in stages
                                                  if not str(s["stage"]).startswith("models/"))
            models = [s["seconds"] for s in stages if str(s["stage"]).startswith("models/")]
            if models:
                fig += f", {len(models)} models {wall(sum(models))} in all"
        rows.append((f"book, {prof} profile, built cold (empty stage cache, `make book PROFILE={prof}`)", fig,
                     {"wall_seconds": d.get("wall_seconds"), "chapters": {_chapter(c.get("chapter")): c.get("seconds")
                                                                           for c in chapters},
                      "html_seconds": book.get("html_seconds")}))
    else:
        rows.append(("book, quick profile, built cold (`make book PROFILE=quick`)",
                     "not measured: run `python benchmarks/book_time.py` (`--stages-only` was used)", {}))
    full = d.get("full_stages") or {}
    stages = full.get("stages") or []
    if stages or full:
        prof = full.get("profile", "full")
        main = [s for s in stages if not str(s.get("stage")).startswith("models/")]
        models = [s for s in stages if str(s.get("stage")).startswith("models/")]
        if not any(s.get("built", True) for s in stages):
            fig = "not built here (nothing under " + str(full.get("data_root", "data/runs")) + f"/{prof})"
        else:
            fig = "; ".join(_stage_text(s) for s in main)
            dates = sorted(s["finished"] for s in stages if s.get("finished"))
            if dates:
                fig += f" (finished {dates[0][:10]} to {dates[-1][:10]})"
        rows.append((f"{prof} profile's stages as recorded when they were built (`make book`)", fig,
                     {s.get("stage"): s.get("seconds") for s in main}))
        if models and any(s.get("built", True) for s in stages):
            built = [s for s in models if s.get("built", True)]
            total = sum(s.get("seconds") or 0 for s in built)
            fig = ", ".join(f"{str(s['stage'])[7:]} {s['seconds'] / 60:.1f} min" if s.get("seconds") is not None
                            else f"{str(s['stage'])[7:]} {'not timed' if s.get('built', True) else 'not built here'}"
                            for s in models)
            rows.append((f"{prof} profile's trained models ({len(built)} of {len(models)}), training time each",
                         f"{fig}; {wall(total)} in all (one after another; "
                         f"`train_studies.py --jobs 2` runs two at a time)",
                         {s.get("stage"): s.get("seconds") for s in models}))
    return rows


FORMATTERS = {"render_speed": rows_render_speed, "sfm_labels": rows_sfm_labels, "castle_p30": rows_castle_p30,
              "train_speed": rows_train_speed, "serve_latency": rows_serve_latency, "localize": rows_localize,
              "conclusions": rows_conclusions,
              "train_studies": rows_train_studies, "scaling": rows_scaling, "book_time": rows_book_time}


# ------------------------------------------------------------------------------------ the summary

def summarize(results: Path = RESULTS, profile: str = "quick") -> dict:
    """Every figure of the results files in ``results``, and a "not measured" entry for each
    expected file that is missing. Returns the content of summary.json."""
    files = load_results(results)
    log = load_run_log(results)
    figures, missing, problems = [], [], []
    present = {}
    for stem, data in files.items():
        script, prof = split_stem(stem)
        if script not in FORMATTERS and data.get("benchmark") in FORMATTERS:
            script = data["benchmark"]
        present.setdefault(script, []).append((prof, stem, data))
    # table order: the expected scripts first (the asked profile first, then others), then the rest
    scripts = sorted(present, key=lambda s: (ORDER.get(s, len(ORDER)), s))
    for name, profiled, what in EXPECTED:
        stem = f"{name}_{profile}" if profiled else name
        if stem in files:
            continue
        rec = run_record(log, stem)
        cmd = command_for(name, profile if profiled else None, rec)
        if rec and rec.get("status") == "skipped":
            why = f"skipped: {rec.get('reason')}"
        elif rec and rec.get("status") in ("failed", "interrupted"):
            why = f"the last run {rec['status']} ({rec.get('reason')}); run `{cmd}`"
        elif rec and rec.get("status") == "absent":
            why = f"not measured: benchmarks/{name}.py does not exist yet"
        else:
            why = f"not measured: run `{cmd}`"
        missing.append({"script": name, "profile": profile if profiled else None, "benchmark": what,
                        "results_file": f"{stem}.json", "figure": why, "command": cmd,
                        "order": [ORDER.get(name, len(ORDER)), 0, 0]})
    for script in scripts:
        entries = sorted(present[script], key=lambda e: (e[0] != profile, e[0] or ""))
        for n_entry, (prof, stem, data) in enumerate(entries):
            rec_any = run_record(log, stem)
            rec = run_record(log, stem, data.get("_mtime"))
            cond = conditions(data, rec)
            cmd = command_for(script, prof, rec)
            fmt = FORMATTERS.get(script)
            if "_error" in data:
                rows = [(script, f"**unreadable results file**: {data['_error']}", {})]
            elif fmt is None:
                rows = [(script, f"results in benchmarks/results/{stem}.json (the summary has no formatter for "
                                 f"this benchmark yet)", {})]
            else:
                try:
                    rows = fmt(data, prof)
                except Exception as e:  # a results file of an unexpected shape must not hide the others
                    rows = [(script, f"**could not summarise {stem}.json**: {type(e).__name__}: {e}", {})]
                    problems.append(f"{stem}.json: {type(e).__name__}: {e}")
            notes = []
            # "idle" only where the runner measured the other processes: a load average includes the
            # benchmark's own processes (train_studies runs two), so a low one does not prove idleness
            if cond["loaded"]:
                notes.append(f"loaded: {cond['load_note']}")
            elif cond["loaded"] is not None:
                notes.append(f"idle: {cond['load_note']}" if cond["other_cpu_cores"] is not None else cond["load_note"])
            if rec_any and rec_any is not rec and rec_any.get("status") in ("failed", "interrupted", "skipped"):
                notes.append(f"the last run {'skipped it' if rec_any['status'] == 'skipped' else rec_any['status']} "
                             f"({rec_any.get('reason')}); these figures are from an earlier run ({cond['date']})")
            for n_row, (bench, fig, values) in enumerate(rows):
                figures.append({"order": [ORDER.get(script, len(ORDER)), n_entry, n_row],
                                "benchmark": bench, "figure": fig, "notes": notes, "command": cmd,
                                "script": f"benchmarks/{script}.py", "profile": prof,
                                "source": f"benchmarks/results/{stem}.json", "values": values, **cond})
    machine = merged_machine(figures, log)
    dates = sorted(f["date"] for f in figures if f.get("date"))
    return {"generated": fmt_date(_dt.datetime.now().timestamp()), "profile": profile, "results_dir": str(results),
            "machine": machine, "dates": [dates[0], dates[-1]] if dates else [], "figures": figures,
            "missing": missing, "problems": problems, "runs": log.get("runs", {})}


def merged_machine(figures: list[dict], log: dict) -> dict:
    """One description of the machine: the runner's, completed by what the scripts recorded; a key
    whose value differs between files lists every value."""
    out: dict = dict(log.get("machine") or {})
    seen: dict[str, list] = {}
    for f in figures:
        for k, v in (f.get("machine") or {}).items():
            if v is not None and v not in seen.setdefault(k, []):
                seen[k].append(v)
    for k, vs in seen.items():
        # "2.14.1" (package metadata) and "2.14.1+cu130" (torch.__version__) are one version
        same: dict[str, object] = {}
        for v in vs:
            base = str(v).split("+")[0]
            if len(str(v)) > len(str(same.get(base, ""))):
                same[base] = v
        vs = list(same.values())
        if k not in out or out[k] is None:
            out[k] = vs[0] if len(vs) == 1 else vs
    return out


def machine_line(summary: dict) -> str:
    m = summary.get("machine") or {}

    def one(v):
        return " / ".join(map(str, v)) if isinstance(v, list) else str(v)

    parts = []
    if m.get("cpus"):
        parts.append(f"{one(m['cpus'])} CPUs")
    cpu = m.get("cpu_model") or m.get("processor")
    if cpu:
        parts[-1:] = [f"{parts[-1]} ({one(cpu)})"] if parts else [one(cpu)]
    gpu = m.get("gpu")
    device = m.get("device")
    if gpu:
        parts.append(f"GPU {one(gpu)}")
    elif device is not None and "cuda" not in one(device):
        parts.append("no GPU")
    if m.get("python"):
        parts.append(f"Python {one(m['python'])}")
    if m.get("torch"):
        parts.append(f"torch {one(m['torch'])}")
    dates = summary.get("dates") or []
    when = ""
    if dates:
        when = f", {dates[0]}" if dates[0] == dates[-1] else f", between {dates[0]} and {dates[-1]}"
    return (f"Measured on {', '.join(parts) or 'an unrecorded machine'}{when} (each figure's date, machine and "
            f"load: `benchmarks/results/summary.json`).")


def markdown(summary: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    entries = sorted(summary["figures"] + summary["missing"], key=lambda f: f.get("order") or [99])
    for f in entries:
        fig = f["figure"] + "".join(f"; *{n}*" for n in f.get("notes") or [])
        lines.append(f"| {md_cell(f['benchmark'])} | {md_cell(fig)} | `{md_cell(f['command'])}` |")
    return "\n".join(lines)


def replace_region(text: str, block: str) -> str:
    """``text`` with the lines between the bench markers replaced by ``block``; everything outside
    the markers, the markers included, is kept byte for byte."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"README has no {BEGIN} ... {END} region")
    return text[:i + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[j:]


def write(summary: dict, results: Path) -> str:
    table = markdown(summary)
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (results / "summary.md").write_text(table + "\n\n" + machine_line(summary) + "\n")
    return table


def update_readme(summary: dict, readme: Path = README) -> bool:
    """Put the table and the machine line into ``readme``'s bench region; True when it changed."""
    text = readme.read_text()
    new = replace_region(text, markdown(summary) + "\n\n" + machine_line(summary))
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", help="the profile whose results are expected (default quick)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    p.add_argument("--readme", action="store_true", help="also replace README.md's bench region with the table")
    p.add_argument("--readme-path", type=Path, default=README, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    summary = summarize(args.results, args.profile)
    table = write(summary, args.results)
    print(table)
    print()
    print(machine_line(summary))
    for prob in summary["problems"]:
        print(f"warning: {prob}", file=sys.stderr)
    print(f"\nwritten: {args.results / 'summary.json'}, {args.results / 'summary.md'}")
    if args.readme:
        changed = update_readme(summary, args.readme_path)
        print(f"{args.readme_path}: results region {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
