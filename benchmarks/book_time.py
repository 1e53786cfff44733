"""Wall time of the book: the quick profile built cold, and the full profile's recorded stages.

Builds the book (``python -m campose.book --profile quick``, i.e. ``make book PROFILE=quick``) in a
subprocess with ``CAMPOSE_DATA`` pointing at a fresh temporary folder, so no cached stage hides the
cost, and the build output in another temporary folder (the repository's ``_build`` and
``data/runs`` are not touched). Records the total wall time, the per-chapter times the build writes
to ``<out>/timings.json`` and the stages the build made (``stage.json`` of each: seconds per stage).

The full profile is not built (hours on 2 cores): its stages are read from the ``stage.json`` files
under ``data/runs/full`` (or ``$CAMPOSE_DATA/full``), each with the wall time recorded when it was
built, or "not built here".

Writes benchmarks/results/book_time.json; exit status 1 when the build failed (the times up to the
failure are still written).

    python benchmarks/book_time.py [--profile quick] [--keep]
    python benchmarks/book_time.py --stages-only      # only re-read the full profile's stages
    python benchmarks/book_time.py --only 01_pose_problem --no-html --out /tmp/bt.json   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine, write_result

REPO = Path(__file__).resolve().parents[1]
PIPELINE_STAGES = ("render", "sfm", "labels", "localize")


def data_root() -> Path:
    """Where the stages are cached when no override is set: ``$CAMPOSE_DATA`` or the repository's
    ``data/runs`` (campose.pipeline.data_root, without importing campose)."""
    env = os.environ.get("CAMPOSE_DATA")
    return Path(env) if env else REPO / "data" / "runs"


def expected_models() -> list[str]:
    """The ``models`` runs the book's chapters train (campose.study), [] if campose is not importable."""
    try:
        from campose.study import STUDIES, run_name
    except Exception:
        return []
    return [run_name(study, label) for study, runs in STUDIES.items() for label in runs]


def read_stages(profile_dir: Path, expected_models_: list[str] | None = None) -> list[dict]:
    """One entry per stage of ``profile_dir`` (``<data>/<profile>``): its ``stage.json`` wall time
    (``seconds``, ``timings`` per step where recorded), ``finished``, and anything it notes; the
    pipeline's stages and ``expected_models_`` that have none are listed with ``built: False``."""
    found: dict[str, dict] = {}
    if profile_dir.is_dir():
        for f in sorted(profile_dir.rglob("stage.json")):
            name = f.parent.relative_to(profile_dir).as_posix()
            try:
                info = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                found[name] = {"stage": name, "built": True, "seconds": None, "error": str(e)}
                continue
            entry = {"stage": name, "built": True, "seconds": info.get("seconds"), "finished": info.get("finished")}
            for k in ("timings", "status", "best_epoch", "registered", "total", "sequences", "images", "adopted",
                      "matches_reused"):
                if k in info:
                    entry[k] = info[k]
            found[name] = entry
    out = []
    for stage in PIPELINE_STAGES:
        mine = [found.pop(k) for k in sorted(found) if k == stage or k.startswith(stage + "/")]
        out += mine or [{"stage": stage, "built": False}]
    models = sorted(k for k in found if k.startswith("models/"))
    for name in expected_models_ or []:
        key = f"models/{name}"
        if key not in found:
            found[key] = {"stage": key, "built": False}
            models.append(key)
    order = {f"models/{n}": i for i, n in enumerate(expected_models_ or [])}
    for key in sorted(models, key=lambda k: (order.get(k, len(order)), k)):
        out.append(found.pop(key))
    out += [found[k] for k in sorted(found)]  # anything else (a stage this script does not know)
    return out


def full_stages(profile: str = "full") -> dict:
    root = data_root()
    return {"profile": profile, "data_root": str(root), "stages": read_stages(root / profile, expected_models())}


def build_cold(profile: str, keep: bool = False, book_args: tuple[str, ...] = ()) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="campose-book-time-"))
    data, out = tmp / "runs", tmp / "_build"
    data.mkdir()
    env = {**os.environ, "CAMPOSE_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "campose.book", "--profile", profile, "--root", str(REPO), "--out", str(out),
           *book_args]
    print(f"$ CAMPOSE_DATA={data} {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        code = subprocess.run(cmd, cwd=REPO, env=env).returncode
        wall = time.perf_counter() - t0
        try:
            book = json.loads((out / "timings.json").read_text())
        except (OSError, ValueError):
            book = None
        stages = read_stages(data / profile)
    finally:
        if keep:
            print(f"kept: {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"status": "ok" if code == 0 else "failed", "returncode": code, "wall_seconds": round(wall, 1),
            "book": book, "cold_stages": [s for s in stages if s.get("built")],
            "command": f"python -m campose.book --profile {profile} {' '.join(book_args)}".strip()
                       + " (CAMPOSE_DATA: an empty temporary folder)", "partial": bool(book_args)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", help="the profile built cold (default quick)")
    p.add_argument("--full-profile", default="full", help="the profile whose recorded stages are listed (default full)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data and build folders")
    p.add_argument("--stages-only", action="store_true",
                   help="do not build: only re-read the full profile's stages (keeps the last build's times)")
    p.add_argument("--only", action="append", metavar="CHAPTER", default=[],
                   help="a check of this script: build only this chapter (campose.book --only; repeatable)")
    p.add_argument("--no-html", action="store_true", help="a check of this script: skip jupyter-book")
    p.add_argument("--out", type=Path, default=RESULTS / "book_time.json", help="results file (default: %(default)s)")
    args = p.parse_args(argv)
    path = args.out
    try:
        result = json.loads(path.read_text()) if args.stages_only else {}
    except (OSError, ValueError):
        result = {}
    result.update({"benchmark": "book_time", "machine": machine()})
    code = 0
    if not args.stages_only:
        load_before = os.getloadavg()
        book_args = tuple(a for ch in args.only for a in ("--only", ch)) + (("--no-html",) if args.no_html else ())
        result.update(profile=args.profile, **build_cold(args.profile, args.keep, book_args))
        result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
        result["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
        code = 0 if result["status"] == "ok" else 1
    result["full_stages"] = full_stages(args.full_profile)

    if result.get("book"):
        print(f"\n{result['profile']} book built cold: {result['status']}, {result['wall_seconds'] / 60:.1f} min wall")
        for c in result["book"].get("chapters", []):
            print(f"  {c['chapter']:<40} {c['status']:<10} {c['seconds']:8.1f} s")
        if result["book"].get("html_seconds") is not None:
            print(f"  {'(jupyter-book build)':<40} {'':<10} {result['book']['html_seconds']:8.1f} s")
    elif not args.stages_only:
        print(f"\nbook build {result['status']} after {result['wall_seconds']:.0f} s; no timings.json written")
    print(f"\n{args.full_profile} profile's stages under {result['full_stages']['data_root']}:")
    for s in result["full_stages"]["stages"]:
        if not s.get("built"):
            print(f"  {s['stage']:<40} not built here")
        else:
            t = s.get("seconds")
            print(f"  {s['stage']:<40} {'not timed' if t is None else f'{t:8.1f} s'}   finished {s.get('finished')}")
    write_result("book_time", result, default=str, path=path)
    print(f"\nwritten: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
