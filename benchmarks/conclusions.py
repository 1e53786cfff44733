"""Chapter 11's comparison on a profile: every network, both baselines and retrieval + MeNet.

Runs :func:`campose.conclusions.compare` (the networks of the loss studies from the ``models``
cache, trained first where missing; the baselines on the map of the training walks), prints one
markdown table against the true poses (each method with and without walkable snapping: median and
mean position and rotation errors, the threshold shares, % localised, time per query on one CPU
thread, size in MB) and writes benchmarks/results/conclusions_<profile>.json.

    python benchmarks/conclusions.py --profile quick
"""

from __future__ import annotations

import argparse
import math
import os
import time

from _common import machine, write_result

from campose import conclusions, pipeline


def markdown(table) -> str:
    cols = ["method", "snapped", "median position (m)", "mean position (m)", "median rotation (deg)",
            "within 0.25 m, 2 deg (%)", "within 0.5 m, 5 deg (%)", "within 5 m, 10 deg (%)", "localised (%)",
            "ms per query", "size (MB)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.to_dict("records"):
        cells = []
        for c in cols:
            v = r.get(c)
            if c == "snapped":
                cells.append("snapped" if v is True else "")
            elif isinstance(v, float):
                cells.append("–" if math.isnan(v) else f"{v:.3f}" if "position" in c else f"{v:.1f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(profile: str) -> dict:
    prof = pipeline.get_profile(profile)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    comparison = conclusions.compare(prof)
    seconds = time.perf_counter() - t0
    table = comparison.table()
    test, _ = pipeline.test_walks(prof)
    print(f"\n### {prof.name} profile: {sum(len(s) for s in test.values())} test frames, against the true poses "
          f"({seconds:.0f} s)\n")
    print(markdown(table))
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in table.to_dict("records")]
    result = {"benchmark": "conclusions", "profile": prof.name, "labels": prof.labels,
              "test_frames": {n: len(s) for n, s in test.items()}, "rows": rows, "seconds": seconds,
              "snap_ms": comparison.snap_ms,
              "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
              "machine": machine()}
    write_result(f"conclusions_{prof.name}", result)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=sorted(pipeline.PROFILES))
    main(ap.parse_args().profile)
