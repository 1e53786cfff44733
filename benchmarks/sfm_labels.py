"""SfM and alignment on the default floor: registration rate, time per step, label error.

Runs the pipeline's ``sfm`` and ``labels`` stages for a profile (fresh, unless ``--cached``) and
prints the registration rate, the number of models, the SfM time per step and the error of the
aligned SfM poses (the training labels) against the true poses, per sequence. Writes
benchmarks/results/sfm_labels_<profile>.json.

Targets (issue 3, 2 CPU cores): full profile, every frame in one model (>= 98 % in the worst
case), aligned positions within 5 cm and rotations within 0.5 deg median; quick profile's SfM step
under 2 minutes.

    python benchmarks/sfm_labels.py --profile full
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import machine, write_result

from campose import pipeline
from campose import sfm as sfm_lib


def false_pairs(prof, threshold_px: float = 5.0) -> dict | None:
    """The verified pairs left in the SfM stage's database (what the mapper saw) checked against the
    true poses: how many are false matches (median Sampson distance over ``threshold_px``)."""
    db = pipeline.stage_dir(prof, "sfm") / "work" / "database.db"
    if not db.is_file():
        return None
    truth = pipeline.true_poses(pipeline.render_dataset(prof))
    rows = sfm_lib.verified_pair_errors(db, truth)
    bad = [r for r in rows if r["sampson_px"] > threshold_px]
    return {"verified": len(rows), "false": len(bad), "threshold_px": threshold_px,
            "false_inliers": [int(x) for x in np.percentile([r["inliers"] for r in bad], [0, 50, 100])] if bad else [],
            "false_distance_m": float(np.median([r["distance_m"] for r in bad])) if bad else None}


def main(profile: str, cached: bool = False) -> dict:
    prof = pipeline.get_profile(profile)
    pipeline.render_dataset(prof)  # the renders are the input; not timed here
    t0 = time.perf_counter()
    sfm = pipeline.sfm_dataset(prof, force=not cached)
    sfm_s = time.perf_counter() - t0
    stage = json.loads((pipeline.stage_dir(prof, "sfm") / "stage.json").read_text())
    labels = pipeline.label_dataset(prof, force=not cached)
    pe, re = labels.all_errors()
    pairs = false_pairs(prof)
    table = labels.summary_table()
    result = {
        "benchmark": "sfm_labels", "profile": prof.name, "sfm_options": prof.sfm,
        "images": sfm.total, "registered": sfm.registered, "registration_rate": sfm.registration_rate(),
        "models": sfm.model_sizes, "sfm_timings_s": sfm.timings, "sfm_seconds": sfm_s if not cached else None,
        "points": len(sfm.points), "matches_reused": stage.get("matches_reused"), "pairs": pairs,
        "control_points": len(labels.control.names), "survey_noise_m": prof.survey_noise_m,
        "control_rms_m": labels.alignment.rms,
        "position_error_m": {"median": float(np.median(pe)), "p90": float(np.percentile(pe, 90)), "max": float(pe.max())},
        "rotation_error_deg": {"median": float(np.median(re)), "p90": float(np.percentile(re, 90)), "max": float(re.max())},
        "per_sequence": json.loads(table.to_json(orient="index")),
        "machine": machine(),
    }
    print(f"profile {prof.name}: {sfm.registered}/{sfm.total} images registered "
          f"({100 * sfm.registration_rate():.1f} %), models {sfm.model_sizes}, {len(sfm.points)} points")
    print("SfM time: " + ", ".join(f"{k} {v:.0f} s" for k, v in sfm.timings.items())
          + (f"; total {sfm_s:.0f} s" if not cached else " (cached)"))
    if stage.get("matches_reused"):
        print(f"features and matches reused from the run of {stage['matches_reused']} (their timings above)")
    if pairs:
        print(f"verified pairs the mapper saw: {pairs['verified']}; off the true epipolar geometry by more than "
              f"{pairs['threshold_px']:.0f} px (false matches): {pairs['false']} (inliers {pairs['false_inliers']})")
    print(f"alignment from {len(labels.control.names)} control points (survey noise {100 * prof.survey_noise_m:.0f} cm): "
          f"RMS residual {100 * labels.alignment.rms:.1f} cm")
    print(f"label error against truth: position median {100 * np.median(pe):.1f} cm, p90 "
          f"{100 * np.percentile(pe, 90):.1f} cm, max {100 * pe.max():.1f} cm; rotation median {np.median(re):.3f} deg, "
          f"max {re.max():.2f} deg")
    print(table.round(3).to_string())
    write_result(f"sfm_labels_{prof.name}", result)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=sorted(pipeline.PROFILES))
    ap.add_argument("--cached", action="store_true", help="report the cached stages instead of recomputing them")
    a = ap.parse_args()
    main(a.profile, a.cached)
