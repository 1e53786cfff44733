"""The baselines without a network on a profile's test walks: structure-based localisation and image retrieval.

Builds (or loads) the profile's map of its training walks (``campose.localize.profile_map``: SIFT
points triangulated from the label poses; no test frame in it), localises every test frame with
each method and prints a markdown table against the true poses (and one against the SfM labels
where the profile has them): median and mean errors, shares within (0.25 m, 2 deg), (0.5 m, 5 deg)
and (5 m, 10 deg), share localised, median time per query on the CPU, and what the method keeps in
memory (map points, MB). Writes benchmarks/results/localize_<profile>.json.

    python benchmarks/localize.py --profile quick
"""

from __future__ import annotations

import argparse
import os
import time

from _common import machine, write_result

from campose import localize, pipeline
from campose.evaluate import THRESHOLDS


def methods(m: localize.LocalizationMap) -> list:
    return [localize.StructureLocalizer(m, max_distance_m=5.0),  # indoors: queries lie near the mapped walks
            localize.RetrievalLocalizer(m, "bow", k=1),
            localize.RetrievalLocalizer(m, "bow", k=3),
            localize.RetrievalLocalizer(m, "thumbnail", k=1),
            localize.RetrievalLocalizer(m, "thumbnail", k=3)]


def markdown(rows: list[dict], points: dict) -> str:
    shares = [f"within {a:g} m, {b:g} deg (%)" for a, b in THRESHOLDS]
    head = (["method", "median pos (m)", "mean pos (m)", "median rot (deg)", "mean rot (deg)"]
            + [f"<= {a:g} m, {b:g} deg" for a, b in THRESHOLDS] + ["localised", "median ms/query", "map points", "MB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['median position (m)']:.3f}", f"{r['mean position (m)']:.3f}",
                 f"{r['median rotation (deg)']:.2f}", f"{r['mean rotation (deg)']:.2f}",
                 *(f"{r[s]:.1f} %" for s in shares), f"{r['localized (%)']:.1f} %", f"{r['median ms']:.0f}",
                 f"{points[r['method']]:,}", f"{r['size (MB)']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(profile: str) -> dict:
    prof = pipeline.get_profile(profile)
    t0 = time.perf_counter()
    m = localize.profile_map(prof)
    print(f"map ({time.perf_counter() - t0:.0f} s): {m.summary()}")
    test, refs = pipeline.test_walks(prof)
    locs = methods(m)
    points = {loc.name: len(m.points) if isinstance(loc, localize.StructureLocalizer) else 0 for loc in locs}
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    # one pass over the frames: each query is read and its SIFT extracted once, every method's
    # time per query still includes the extraction (localize.evaluate_sequences)
    evals = localize.evaluate_sequences(locs, test, refs)
    print(f"{len(locs)} methods x {sum(len(s) for s in test.values())} queries in {time.perf_counter() - t0:.0f} s",
          flush=True)
    tables = {}
    for ref in refs:
        rows = [ev.overall(ref) for ev in evals]
        tables[ref] = rows
        print(f"\n### {prof.name} profile, test walks, against the {ref}\n")
        print(markdown(rows, points))
    result = {"benchmark": "localize", "profile": prof.name, "labels": prof.labels, "map": m.info,
              "map_images": len(m), "test_frames": {n: len(s) for n, s in test.items()}, "tables": tables,
              "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
              "machine": machine()}
    write_result(f"localize_{prof.name}", result)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=sorted(pipeline.PROFILES))
    main(ap.parse_args().profile)
