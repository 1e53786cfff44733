"""Growth measurements: how SfM time grows with the number of frames (sequential against exhaustive
matching) and how training time grows with the number of images.

Runs ``campose.scaling.sfm_scaling`` (a complete COLMAP reconstruction of the first N frames of the
profile's first training walk per matcher; incremental mapper, no retrieval, extraction shared
between the matchers of one size) and ``campose.scaling.training_scaling`` (one epoch of the
profile's PoseNet from scratch on the first N labelled training frames), prints both as markdown
tables with the fitted exponents k of time ~ n**k, and writes
benchmarks/results/scaling_<profile>.json. It measures afresh (``force=True``) unless ``--cached``
is given, which loads the cached stages ``data/runs/<profile>/scaling/{sfm,train}`` where their
key matches. Quick: about a minute on 2 cores; full: about half an hour (docs/design.md, "Growth
measurements").

    python benchmarks/scaling.py --profile quick
    python benchmarks/scaling.py --profile full --sizes 20 40 80 160 --train-sizes 230 460 920 1840
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

from _common import machine, write_result

from campose import pipeline, scaling


def _cell(v, digits: int) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def markdown(table, columns: list[tuple[str, str, int]]) -> str:
    """A markdown table of ``columns`` = (column, heading, decimals)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], d) for c, _, d in columns) + " |")
    return "\n".join(lines)


SFM_TABLE = [("frames", "frames", 0), ("matcher", "matcher", 0), ("pairs", "pairs matched", 0),
             ("verified_pairs", "pairs verified", 0), ("extract_s", "extract (s)", 1), ("match_s", "match (s)", 1),
             ("map_s", "map (s)", 1), ("total_s", "total (s)", 1), ("seconds_per_image", "s / frame", 2),
             ("registered", "registered", 0), ("models", "models", 0),
             ("load", "load", 1)]
TRAIN_TABLE = [("images", "images", 0), ("epochs", "epochs", 0), ("seconds", "training (s)", 2),
               ("images_per_s", "images / s", 1), ("decode_s", "decode (s)", 2), ("setup_s", "setup (s)", 2),
               ("threads", "threads", 0), ("load", "load", 1)]


def _plain(v):
    """JSON-safe values: NaN -> None, numpy scalars -> Python."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fit(n, s) -> float:
    try:
        return scaling.fit_exponent(n, s)
    except ValueError:
        return math.nan


def _rows(table) -> list[dict]:
    return [{k: _plain(v) for k, v in r.items()} for r in table.to_dict("records")]


def main(profile: str, sizes=None, train_sizes=None, cached: bool = False, kind: str = "posenet",
         epochs: int = 1) -> dict:
    prof = pipeline.get_profile(profile)
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()
    sfm = scaling.sfm_scaling(prof, sizes=sizes, force=not cached)
    t_sfm = time.perf_counter() - t0
    train = scaling.training_scaling(prof, sizes=train_sizes, kind=kind, epochs=epochs, force=not cached)
    wall = time.perf_counter() - t0
    k = scaling.exponents(sfm, train)
    exps = {"sfm_sequential": k.get("sfm_sequential", math.nan), "sfm_exhaustive": k.get("sfm_exhaustive", math.nan),
            "training": k.get("training", math.nan)}
    ok = sfm[sfm["registered"] > 0]
    match_k = {f"sfm_{m}": _fit(g["frames"], g["match_s"]) for m, g in ok.groupby("matcher", sort=False)}
    walk = sfm.attrs.get("walk", "?")
    print(f"\n### {prof.name} profile: structure from motion, first frames of {walk} "
          f"(incremental mapper, no retrieval; {t_sfm:.0f} s)\n")
    print(markdown(sfm, SFM_TABLE))
    print(f"\n### {prof.name} profile: training {kind} from scratch, {epochs} epoch(s) "
          f"({wall - t_sfm:.0f} s with loading and warm-up)\n")
    print(markdown(train, TRAIN_TABLE))
    print("\nexponents k of time ~ n**k: " + ", ".join(f"{n} {v:.2f}" for n, v in exps.items()))
    print("matching alone: " + ", ".join(f"{n} {v:.2f}" for n, v in match_k.items()))
    print(f"wall time {wall:.1f} s" + (" (cached tables)" if cached else ""))
    result = {"benchmark": "scaling", "profile": prof.name,
              "machine": machine(),
              "sfm": _rows(sfm), "training": _rows(train), "exponents": {n: _plain(v) for n, v in exps.items()},
              "match_exponents": {n: _plain(v) for n, v in match_k.items()},
              "seconds": round(wall, 1), "cached": bool(cached), "kind": kind, "epochs": epochs, "walk": walk,
              "load_average": {"before": load_before, "after": list(os.getloadavg())},
              "stages": {"sfm": dict(sfm.attrs), "training": dict(train.attrs)}}
    write_result(f"scaling_{prof.name}", result, default=_plain)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=sorted(pipeline.PROFILES))
    ap.add_argument("--sizes", type=int, nargs="+", help="SfM frame counts (default: scaling.SIZES[profile]['sfm'])")
    ap.add_argument("--train-sizes", type=int, nargs="+",
                    help="training image counts (default: scaling.SIZES[profile]['train'])")
    ap.add_argument("--kind", default="posenet", help="model to train (default posenet)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per size (default 1)")
    ap.add_argument("--cached", action="store_true", help="load the cached tables where their key matches")
    a = ap.parse_args()
    main(a.profile, a.sizes, a.train_sizes, a.cached, a.kind, a.epochs)
