"""The benchmark runner and its summary (benchmarks/_run_all.py, _summary.py, book_time.py).

Fast: no benchmark runs. The summary reads small fake results files in the shapes the scripts write;
the runner runs throwaway scripts in a temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import _common from their own folder, as when run there


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


summary = _load("_summary")
runner = _load("_run_all")
book_time = _load("book_time")

MACHINE = {"cpus": 2, "processor": "x86_64", "python": "3.11.7"}
FAKE = {
    "render_speed": {
        "benchmark": "render_speed", "texture_paint_s": 7.5, "machine": MACHINE,
        "results": [{"width": 320, "height": 240, "frames": 200, "fps": 124.0, "ms_per_frame": 8.06},
                    {"width": 640, "height": 480, "frames": 200, "fps": 46.3, "ms_per_frame": 21.6}]},
    "sfm_labels_quick": {
        "benchmark": "sfm_labels", "profile": "quick", "machine": MACHINE,
        "sfm_options": {"matcher": "sequential", "overlap": 8, "retrieval": 5, "mapper": "global"},
        "images": 233, "registered": 233, "registration_rate": 1.0, "models": [233],
        "sfm_timings_s": {"extract": 27.9, "match": 35.4, "map": 52.2}, "sfm_seconds": 116.53, "points": 26161,
        "control_points": 8, "survey_noise_m": 0.02, "control_rms_m": 0.087,
        "position_error_m": {"median": 0.0565, "p90": 0.0968, "max": 0.2096},
        "rotation_error_deg": {"median": 0.133, "p90": 0.605, "max": 0.950}, "per_sequence": {}},
    "sfm_labels_full": {
        "benchmark": "sfm_labels", "profile": "full", "machine": MACHINE,
        "sfm_options": {"matcher": "sequential", "overlap": 8, "retrieval": 5, "mapper": "global",
                        "global_tracks_per_view": 256, "global_retriangulation": False, "min_inliers": 64},
        "images": 2620, "registered": 2620, "registration_rate": 1.0, "models": [2620],
        "sfm_timings_s": {"extract": 1050.0, "match": 2786.0, "map": 1061.9}, "sfm_seconds": None,
        "matches_reused": "2026-11-25", "pairs": {"verified": 12544, "false": 3, "threshold_px": 5.0,
                                                  "false_inliers": [64, 70, 80], "false_distance_m": 18.0},
        "control_points": 8, "survey_noise_m": 0.02, "control_rms_m": 5.25,
        "position_error_m": {"median": 2.518, "p90": 9.7, "max": 13328.5},
        "rotation_error_deg": {"median": 5.41, "p90": 5.61, "max": 132.0}},
    "castle_p30": {
        "benchmark": "castle_p30", "cpus": 2, "results": [
            {"variant": "sequential (overlap 10) + 3 loop pairs, incremental", "registered": 30, "total": 30,
             "models": [30], "seconds": 64.08, "timings": {"extract": 29.8}, "median_position_m": 0.0744,
             "max_position_m": 0.66, "median_rotation_deg": 0.245, "max_rotation_deg": 1.17, "control_rms_m": 0.11},
            {"variant": "sequential (overlap 10) + retrieval 5, global", "registered": 30, "total": 30,
             "models": [30], "seconds": 108.5, "median_position_m": 5.43, "max_position_m": 24.6,
             "median_rotation_deg": 8.23, "max_rotation_deg": 85.4, "control_rms_m": 3.0}]},
    "train_speed": {
        "benchmark": "train_speed", "device": "cpu", "cpus": 2, "torch": "2.14.1+cu130",
        "load_average": {"before": [3.4, 1.0, 1.0], "after": [3.9, 1.0, 1.0]},
        "results": [{"model": m, "backbone": "mobilenet_v3_small", "width": 128, "height": 96, "threads": 1,
                     "device": "cpu", "train_batch": 32, "train_images_per_s": ips,
                     "infer_ms_per_image_b1": b1, "infer_ms_per_image_b32": b32}
                    for m, ips, b1, b32 in [("posenet", 114.9, 6.57, 1.19), ("menet", 84.0, 8.63, 1.32)]]},
    "serve_latency": {
        "checkpoint": "/x/data/runs/quick/models/posenet-l1-alpha-10/model.pt",
        "model": {"kind": "posenet", "backbone": "mobilenet_v3_small", "image_size": [64, 48], "torch_threads": 1},
        "photo": {"width": 320, "height": 240, "bytes": 20524},
        "levels": [{"clients": k, "requests": 500, "errors": 0, "error_examples": [], "p50_ms": p50, "p95_ms": p95,
                    "mean_ms": p50, "throughput_rps": rps, "server_total_p50_ms": p50 - 1, "server_model_p50_ms": 7.79}
                   for k, p50, p95, rps in [(1, 12.64, 16.62, 76.37), (4, 49.1, 60.6, 80.5), (16, 219.1, 253.0, 72.3)]],
        "snap": {"single_us": 102.1, "batch_us_per_point": 0.2527, "share_moved": 0.613, "grid": [580, 1280],
                 "resolution_m": 0.05},
        "load_average": [0.96, 1.13], "cpus": 2},
    "localize_quick": {
        "benchmark": "localize", "profile": "quick", "labels": "sfm", "machine": MACHINE,
        "map": {"images": 130, "points": 16466}, "map_images": 130, "test_frames": {"quick-test": 103},
        "tables": {"truth": [
            {"method": "structure-based (SIFT, PnP + RANSAC)", "frames": 103.0, "median position (m)": 0.1775,
             "mean position (m)": 4.36, "median rotation (deg)": 1.03, "within 0.25 m, 2 deg (%)": 53.4,
             "localized (%)": 57.3, "median ms": 518.3, "size (MB)": 11.7},
            {"method": "retrieval (bag of words, k=1)", "median position (m)": 10.4, "median ms": 288.3},
            {"method": "retrieval (bag of words, k=3)", "median position (m)": 7.8, "median ms": 255.6}]}},
    "train_studies_quick": {
        "benchmark": "train_studies", "profile": "quick", "labels": "sfm", "jobs": 2, "machine": MACHINE,
        "trained": {"runs": [{"name": "posenet-l1", "status": "completed", "best_epoch": 15, "epochs": 15,
                              "train_seconds": 36.0, "wall_seconds": 36.5}], "wall_seconds": 241.6},
        "tables": {"posenet": {"truth": {
            "L1": {"median position (m)": 9.34, "median rotation (deg)": 118.8},
            "L1, alpha = 10": {"median position (m)": 9.24, "median rotation (deg)": 116.2}}}},
        "load_average": {"before": [0.5, 1, 1], "after": [1.5, 1, 1]}},
    "conclusions_quick": {
        "benchmark": "conclusions", "profile": "quick", "labels": "sfm", "test_frames": {"quick-test": 103},
        "machine": MACHINE, "rows": [
            {"family": "PoseNet", "method": "PoseNet, L1", "snapped": False, "median position (m)": 7.98,
             "median rotation (deg)": 105.5, "within 0.5 m, 5 deg (%)": 0.0, "ms per query": 12.1, "size (MB)": 8.49},
            {"family": "PoseNet", "method": "PoseNet, MSE", "snapped": False, "median position (m)": 8.98,
             "median rotation (deg)": 90.7, "within 0.5 m, 5 deg (%)": 0.0, "ms per query": 12.7, "size (MB)": 8.49},
            {"family": "PoseNet", "method": "PoseNet, L1", "snapped": True, "median position (m)": 0.01,
             "median rotation (deg)": 105.5, "within 0.5 m, 5 deg (%)": 0.0, "ms per query": 12.2, "size (MB)": 18.1},
            {"family": "structure-based", "method": "structure-based (SIFT, PnP + RANSAC)", "snapped": False,
             "median position (m)": 0.162, "median rotation (deg)": 0.69, "within 0.5 m, 5 deg (%)": 58.3,
             "ms per query": 622.0, "size (MB)": 11.8},
            {"family": "the report (its own floor)", "method": "the report's PoseNet", "snapped": False,
             "median position (m)": 20.0, "ms per query": None}]},
    "scaling_quick": {
        "benchmark": "scaling", "profile": "quick", "machine": MACHINE,
        "sfm": [{"frames": 50, "matcher": "sequential", "total_s": 20.0, "seconds_per_image": 0.4, "registered": 50},
                {"frames": 100, "matcher": "sequential", "total_s": 41.0, "seconds_per_image": 0.41, "registered": 100},
                {"frames": 50, "matcher": "exhaustive", "total_s": 30.0, "seconds_per_image": 0.6, "registered": 50}],
        "training": [{"images": 500, "seconds": 5.0, "images_per_s": 100.0}],
        "exponents": {"sfm_sequential": 1.036, "sfm_exhaustive": 1.912, "training": 0.998}},
    "book_time": {
        "benchmark": "book_time", "profile": "quick", "status": "ok", "returncode": 0, "wall_seconds": 723.0,
        "book": {"profile": "quick", "chapters": [
            {"chapter": "chapters/01_pose_problem.ipynb", "seconds": 5.2, "status": "ok"},
            {"chapter": "chapters/04_structure_from_motion.ipynb", "seconds": 180.0, "status": "ok"}],
            "html_seconds": 41.0, "total_seconds": 722.0},
        "cold_stages": [{"stage": "sfm", "built": True, "seconds": 117.0}],
        "full_stages": {"profile": "full", "data_root": "/x/data/runs", "stages": [
            {"stage": "render", "built": True, "seconds": 265.7, "finished": "2026-11-25 21:45:13"},
            {"stage": "sfm", "built": True, "seconds": 1312.9, "timings": {"extract": 1050.0, "match": 2786.0,
                                                                          "map": 1292.5},
             "matches_reused": "2026-11-25"},
            {"stage": "labels", "built": True, "seconds": None},
            {"stage": "localize", "built": False},
            {"stage": "models/posenet-l1", "built": True, "seconds": 343.5, "finished": "2026-11-26 02:17:42"},
            {"stage": "models/mapnet-l1", "built": False}]},
        "machine": MACHINE},
}


def write_results(folder: Path, names=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in FAKE.items():
        if names is None or name in names:
            (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


def rows_of(s: dict) -> dict[str, str]:
    """benchmark -> figure (with its notes), for every row of the table."""
    return {f["benchmark"]: f["figure"] + "".join(f"; {n}" for n in f.get("notes") or [])
            for f in s["figures"] + s["missing"]}


def find(rows: dict[str, str], start: str) -> str:
    hits = [v for k, v in rows.items() if k.startswith(start)]
    assert len(hits) == 1, f"{start!r}: {hits} in {list(rows)}"
    return hits[0]


# ------------------------------------------------------------------------------------ summary

def test_summary_rows_and_numbers(tmp_path):
    s = summary.summarize(write_results(tmp_path / "results"), "quick")
    rows = rows_of(s)
    assert find(rows, "renderer, 320 x 240").startswith("124 frames/s (8.1 ms/frame")
    assert find(rows, "renderer, 640 x 480").startswith("46.3 frames/s")
    assert find(rows, "texture painting") == "7.5 s"
    sfm = find(rows, "SfM, quick profile")
    assert "0.5 s per image, 233/233 registered (100 %) in 1 model" in sfm
    assert "extract 28 s + match 35 s + map 52 s = 117 s" in sfm
    assert "median 5.7 cm / 0.13 deg" in find(rows, "alignment, quick profile")
    full_key = next(k for k in rows if k.startswith("SfM, full profile"))
    assert "256 tracks per view, no final retriangulation, pairs with at least 64 inliers" in full_key
    assert "1.9 s per image, 2,620/2,620 registered" in rows[full_key]
    assert "= 4,898 s (total of the steps)" in rows[full_key]
    assert "extraction and matching reused from the run of 2026-11-25, mapping rerun" in rows[full_key]
    assert "3 of the 12,544 verified pairs the mapper saw are false matches" in rows[full_key]
    assert "reported from the cache" not in rows[full_key] and "false matches" not in find(rows, "SfM, quick profile")
    assert "geometry is wrong in places" in find(rows, "alignment, full profile")
    castle = "castle-P30 (30 real photos, known intrinsics), aligned from 8 surveyed cameras: sequential (overlap 10)"
    assert "wrong geometry" in find(rows, castle + " + retrieval 5, global")
    assert "wrong" not in find(rows, castle + " + 3 loop")
    net = find(rows, "networks, mobilenet_v3_small, 128 x 96, 1 thread")
    assert "PoseNet 115 images/s" in net and "MeNet 84 pairs/s" in net and "PoseNet 6.6 / 1.2" in net
    assert "loaded" in net  # 1-min load 3.9 on 2 CPUs
    srv = find(rows, "pose server")
    assert "1 client: p50 12.6 / p95 16.6 ms, 76.4 req/s" in srv and "0 errors in 3 x 500 requests" in srv
    assert "quick profile's posenet-l1-alpha-10" in [k for k in rows if k.startswith("pose server")][0]
    assert "loaded" not in srv and srv.endswith("; load average 0.96 -> 1.13 on 2 CPUs")
    assert find(rows, "walkable snapping").startswith("102 us per single-point call, 0.25 us")
    loc = find(rows, "localisation baselines, quick profile (103 test frames; map of the 130 training images only, "
                     "16,466 points triangulated with the sfm poses)")
    assert loc.startswith("against the true poses: structure-based (SIFT, PnP + RANSAC): median 17.8 cm / 1.03 deg, "
                          "mean 4.36 m, 53 % within 0.25 m and 2 deg, 57 % localised, 518 ms/query")
    assert "retrieval (2 variants): median 7.80 m to 10.4 m; best retrieval (bag of words, k=3), 256 ms/query" in loc
    assert "242 s wall" in find(rows, "network studies, quick")
    assert "best PoseNet (L1, alpha = 10): median 9.24 m" in find(rows, "network studies, quick")
    side = find(rows, "every method side by side, quick profile (103 test frames, best of each family")
    assert side.startswith("against the true poses: PoseNet, L1: median 7.98 m / 105.5 deg")  # not the snapped row
    assert "structure-based (SIFT, PnP + RANSAC): median 16.2 cm / 0.69 deg, 58 % within 0.5 m and 5 deg, 622 " \
           "ms/query, 11.8 MB" in side and "report" not in side
    growth = find(rows, "SfM growth")
    assert "sequential k = 1.04, exhaustive k = 1.91" in growth
    assert "k = 1.00" in find(rows, "training growth")
    book = find(rows, "book, quick profile")
    assert book.startswith("12.1 min wall: 01_pose_problem 5.2 s, 04_structure_from_motion 180 s, HTML 41 s")
    stages = find(rows, "full profile's stages")
    assert "render 266 s" in stages and "sfm 21.9 min (extract 1,050 s" in stages
    assert "[the wall time is the mapping's: extraction and matching reused from the run of 2026-11-25]" in stages
    assert "labels not timed" in stages and "localize not built here" in stages
    partial = dict(FAKE["book_time"], partial=True, status="failed", returncode=1)
    fig = summary.rows_book_time(partial, "quick")[0][1]
    assert fig.startswith("**failed** (exit 1); **a partial build")
    models = find(rows, "full profile's trained models")
    assert "posenet-l1 5.7 min" in models and "mapnet-l1 not built here" in models
    assert not s["missing"] and not s["problems"]
    # every figure says where it came from and on what
    for f in s["figures"]:
        assert f["source"].startswith("benchmarks/results/") and f["script"].startswith("benchmarks/")
        assert f["command"].startswith("python benchmarks/") and f["date"]
    assert s["machine"]["cpus"] == 2 and s["machine"]["torch"] == "2.14.1+cu130"


def test_missing_file_gives_a_not_measured_row(tmp_path):
    results = write_results(tmp_path / "results", names={"render_speed"})
    s = summary.summarize(results, "quick")
    rows = rows_of(s)
    assert find(rows, "localisation baselines") == "not measured: run `python benchmarks/localize.py --profile quick`"
    assert "not measured: run `python benchmarks/book_time.py`" in find(rows, "book build")
    assert find(rows, "renderer, 320 x 240").startswith("124 frames/s")
    table = summary.write(s, results)
    assert "| localisation baselines | not measured: run `python benchmarks/localize.py --profile quick` |" in table
    assert (results / "summary.md").read_text().startswith(table)
    assert json.loads((results / "summary.json").read_text())["missing"]
    # the table keeps the expected order: renderer first, the book last
    lines = table.splitlines()[2:]
    assert lines[0].startswith("| renderer") and lines[-1].startswith("| book build")


def test_unknown_or_broken_results_do_not_hide_the_others(tmp_path):
    results = write_results(tmp_path / "results", names={"render_speed"})
    (results / "newbench.json").write_text(json.dumps({"benchmark": "newbench", "x": 1}))
    (results / "castle_p30.json").write_text("{not json")
    (results / "serve_latency.json").write_text(json.dumps({"levels": "not a list"}))
    s = summary.summarize(results, "quick")
    rows = rows_of(s)
    assert "no formatter" in find(rows, "newbench")
    assert "unreadable results file" in find(rows, "castle_p30")
    assert "could not summarise serve_latency.json" in find(rows, "serve_latency")
    assert find(rows, "renderer, 320 x 240").startswith("124 frames/s")


def test_runner_log_supplies_command_machine_and_load(tmp_path):
    results = write_results(tmp_path / "results", names={"sfm_labels_quick"})
    mtime = (results / "sfm_labels_quick.json").stat().st_mtime
    log = {"machine": {"cpus": 2, "cpu_model": "AMD EPYC", "torch": "2.14.1", "gpu": None},
           "runs": {"sfm_labels_quick": {"status": "ok", "command": "python benchmarks/sfm_labels.py --profile quick",
                                         "started_ts": mtime - 100, "finished_ts": mtime + 1,
                                         "machine": {"cpus": 2, "cpu_model": "AMD EPYC", "torch": "2.14.1"},
                                         "finished": "2026-11-26 07:00 UTC", "other_cpu_cores": 1.2,
                                         "load_average": {"before": [0.1, 0, 0], "after": [1.0, 0, 0]}},
                    "castle_p30": {"status": "skipped", "reason": "castle-P30 not found at /nowhere"}}}
    (results / "run_all.json").write_text(json.dumps(log))
    s = summary.summarize(results, "quick")
    rows = rows_of(s)
    assert "loaded: other processes used 1.2 of 2 CPUs" in find(rows, "SfM, quick profile")
    assert find(rows, "alignment, quick profile").endswith("; loaded: other processes used 1.2 of 2 CPUs")
    assert find(rows, "castle-P30") == "skipped: castle-P30 not found at /nowhere"
    f = next(f for f in s["figures"] if f["source"].endswith("sfm_labels_quick.json"))
    assert f["date"] == "2026-11-26 07:00 UTC" and f["machine"]["cpu_model"] == "AMD EPYC"
    assert "AMD EPYC" in summary.machine_line(s)
    # a record of another run (the file is older than the run) is not paired with the figure
    log["runs"]["sfm_labels_quick"].update(started_ts=mtime + 1000, finished_ts=mtime + 2000, status="failed",
                                            reason="exit 1: boom")
    (results / "run_all.json").write_text(json.dumps(log))
    f = next(f for f in summary.summarize(results, "quick")["figures"] if f["source"].endswith("sfm_labels_quick.json"))
    assert f["other_cpu_cores"] is None and any("the last run failed" in n for n in f["notes"])
    # measured by the runner and quiet: "idle"
    log["runs"]["sfm_labels_quick"].update(started_ts=mtime - 100, finished_ts=mtime + 1, status="ok",
                                            other_cpu_cores=0.2)
    (results / "run_all.json").write_text(json.dumps(log))
    rows = rows_of(summary.summarize(results, "quick"))
    assert find(rows, "SfM, quick profile").endswith("; idle: other processes used 0.2 of 2 CPUs")


README_TEXT = """# Title

## Results

Prose before.

<!-- bench:begin -->
| old | table |
<!-- bench:end -->

Prose after, kept.

### The networks
| a | b |
"""


def test_readme_region_is_replaced_idempotently(tmp_path):
    results = write_results(tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    s = summary.summarize(results, "quick")
    assert summary.update_readme(s, readme)
    once = readme.read_text()
    assert not summary.update_readme(s, readme)
    assert readme.read_text() == once
    before, rest = once.split(summary.BEGIN)
    region, after = rest.split(summary.END)
    assert before == README_TEXT.split(summary.BEGIN)[0]
    assert after == README_TEXT.split(summary.END)[1]
    assert "| old | table |" not in region and "| renderer, 320 x 240 | 124 frames/s" in region
    assert region.strip().splitlines()[-1].startswith("Measured on 2 CPUs")
    with pytest.raises(ValueError):
        summary.replace_region("no markers here", "x")


def test_the_readme_has_one_bench_region():
    text = (BENCH.parent / "README.md").read_text()
    assert text.count(summary.BEGIN) == 1 and text.count(summary.END) == 1
    assert text.index(summary.BEGIN) < text.index(summary.END)
    region = text.split(summary.BEGIN)[1].split(summary.END)[0]
    assert region.strip().startswith("| benchmark | figure | command |")


# ------------------------------------------------------------------------------------ runner

def test_runner_knows_every_benchmark_script():
    scripts = {p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_")}
    assert scripts <= set(runner.KNOWN), f"add {sorted(scripts - set(runner.KNOWN))} to BENCHMARKS in _run_all.py"
    argv = {b.name: b.argv("full") for b in runner.BENCHMARKS}
    assert {n for n, a in argv.items() if a == ["--profile", "full"]} == {"sfm_labels", "localize", "train_studies",
                                                                         "conclusions", "scaling"}
    assert all(a == [] for n, a in argv.items() if n not in summary.PROFILED)  # their own defaults
    assert {b.name for b in runner.BENCHMARKS if b.profiled} == set(summary.PROFILED)
    assert [b.name for b in runner.discover(BENCH)] == [b.name for b in runner.BENCHMARKS if b.name in scripts]


def _fake_benchmarks(tmp_path: Path) -> Path:
    d = tmp_path / "repo" / "benchmarks"
    d.mkdir(parents=True)
    (d / "good.py").write_text(
        "import json, sys\nfrom pathlib import Path\n"
        "out = Path(__file__).with_name('results'); out.mkdir(exist_ok=True)\n"
        "(out / 'good.json').write_text(json.dumps({'benchmark': 'good', 'args': sys.argv[1:]}))\n"
        "print('good\\rbetter', flush=True)\n")
    (d / "bad.py").write_text("print('working'); import sys; print('it broke', file=sys.stderr); sys.exit(3)\n")
    (d / "sfm_labels.py").write_text("import sys; print('args', sys.argv[1:])\n")
    (d / "castle_p30.py").write_text("import sys; sys.exit('castle-P30 not found at somewhere')\n")
    (d / "_helper.py").write_text("raise SystemExit('a helper is not a benchmark')\n")
    return d


def test_runner_reports_failures_and_keeps_going(tmp_path, monkeypatch, capsys):
    d = _fake_benchmarks(tmp_path)
    monkeypatch.setenv("CASTLE_P30", str(tmp_path / "nowhere"))
    code = runner.main(["--dir", str(d), "--profile", "quick", "--no-summary"])
    assert code == 1
    log = json.loads((d / "results" / "run_all.json").read_text())
    runs = log["runs"]
    assert runs["bad"]["status"] == "failed" and runs["bad"]["returncode"] == 3
    assert "exit 3: it broke" in runs["bad"]["reason"]
    assert runs["good"]["status"] == "ok" and not runs["good"]["known"]
    assert json.loads((d / "results" / "good.json").read_text())["args"] == []  # unknown: no arguments
    assert (d / "results" / "good.txt").read_text() == "better\n"  # the log keeps a bar's last state
    assert runs["sfm_labels_quick"]["status"] == "ok"
    assert runs["sfm_labels_quick"]["tail"] == ["args ['--profile', 'quick']"]
    assert runs["castle_p30"]["status"] == "skipped" and "nowhere" in runs["castle_p30"]["reason"]
    assert "_helper" not in runs
    assert runs["scaling_quick"]["status"] == "absent"  # in the table, not in this folder
    out = capsys.readouterr().out
    assert "FAILED" in out and "it broke" in out and "not in the runner's table" in out

    # --only / --skip select; the other records stay in the log
    assert runner.main(["--dir", str(d), "--only", "good", "sfm_labels", "--no-summary"]) == 0
    # repeated --only adds up (it used to keep the last one only)
    t_before = json.loads((d / "results" / "run_all.json").read_text())["runs"]["good"]["started_ts"]
    assert runner.main(["--dir", str(d), "--only", "good", "--only", "sfm_labels", "--no-summary"]) == 0
    again = json.loads((d / "results" / "run_all.json").read_text())["runs"]
    assert again["good"]["started_ts"] > t_before and again["sfm_labels_quick"]["started_ts"] > t_before
    assert runner.main(["--dir", str(d), "--skip", "bad", "--no-summary", "--profile", "full"]) == 0
    runs = json.loads((d / "results" / "run_all.json").read_text())["runs"]
    assert runs["bad"]["status"] == "failed" and runs["sfm_labels_full"]["tail"] == ["args ['--profile', 'full']"]
    with pytest.raises(SystemExit):
        runner.main(["--dir", str(d), "--only", "nosuch"])


def test_runner_stops_a_script_at_the_timeout(tmp_path):
    d = _fake_benchmarks(tmp_path)
    (d / "slow.py").write_text("import time\ntime.sleep(60)\n")
    t0 = time.perf_counter()
    assert runner.main(["--dir", str(d), "--only", "slow", "--timeout", "1", "--no-summary"]) == 1
    assert time.perf_counter() - t0 < 30
    rec = json.loads((d / "results" / "run_all.json").read_text())["runs"]["slow"]
    assert rec["status"] == "failed" and "timed out after 1 s" in rec["reason"]


def test_runner_skips_castle_when_the_script_says_its_data_is_missing(tmp_path, monkeypatch):
    d = _fake_benchmarks(tmp_path)
    data = tmp_path / "castle"
    (data / "images").mkdir(parents=True)  # the runner's check passes; the script still refuses
    monkeypatch.setenv("CASTLE_P30", str(data))
    assert runner.main(["--dir", str(d), "--only", "castle_p30"]) == 0  # with the summary
    rec = json.loads((d / "results" / "run_all.json").read_text())["runs"]["castle_p30"]
    assert rec["status"] == "skipped" and "castle-P30 not found" in rec["reason"]
    rows = rows_of(json.loads((d / "results" / "summary.json").read_text()))
    assert find(rows, "castle-P30").startswith("skipped: castle-P30 not found")


# ------------------------------------------------------------------------------------ book_time

def test_book_time_reads_recorded_stages(tmp_path):
    full = tmp_path / "full"
    for stage, info in {"render": {"seconds": 265.7}, "sfm": {"seconds": 4897.9, "timings": {"map": 1061.9}},
                        "labels": {"settings": {}}, "models/posenet-l1": {"seconds": 343.5, "status": "completed"},
                        "models/extra": {"seconds": 1.0}}.items():
        (full / stage).mkdir(parents=True)
        (full / stage / "stage.json").write_text(json.dumps({"key": "k", "finished": "2026-11-26 02:17:42", **info}))
    stages = {s["stage"]: s for s in book_time.read_stages(full, ["posenet-l1", "mapnet-l1"])}
    assert stages["render"]["seconds"] == 265.7 and stages["sfm"]["timings"] == {"map": 1061.9}
    assert stages["labels"]["built"] and stages["labels"]["seconds"] is None
    assert stages["localize"] == {"stage": "localize", "built": False}
    assert stages["models/mapnet-l1"] == {"stage": "models/mapnet-l1", "built": False}
    assert stages["models/posenet-l1"]["status"] == "completed" and "models/extra" in stages
    order = [s["stage"] for s in book_time.read_stages(full, ["posenet-l1", "mapnet-l1"])]
    assert order[:6] == ["render", "sfm", "labels", "localize", "models/posenet-l1", "models/mapnet-l1"]
    assert all(s["built"] is False for s in book_time.read_stages(tmp_path / "nothing", []))


def test_studies_loaded_from_the_cache_are_not_timed_as_trained():
    """A study whose runs all came from the cache reports their recorded training time, not the
    seconds it took to load them; a mix says how many were cached."""
    run = {"status": "completed", "train_seconds": 600.0}
    cached = {"profile": "full", "labels": "truth", "jobs": 2, "tables": {},
              "trained": {"runs": [{**run, "name": "a", "wall_seconds": 2.0}, {**run, "name": "b", "wall_seconds": 1.0}],
                          "wall_seconds": 8.0}}
    (_, text, values), = summary.rows_train_studies(cached, "full")
    assert "all loaded from the cache: their training took 20.0 min in all" in text
    assert "at least 10.0 min wall 2 at a time" in text and "8.0 s wall" not in text
    assert values["cached_runs"] == 2 and values["train_seconds_sum"] == 1200.0
    mixed = {**cached, "trained": {"runs": [{**run, "name": "a", "wall_seconds": 610.0},
                                            {**run, "name": "b", "wall_seconds": 1.0}], "wall_seconds": 620.0}}
    (_, text, _), = summary.rows_train_studies(mixed, "full")
    assert "2 at a time: 10.3 min wall (1 of them loaded from the cache)" in text
