"""Train every model of chapters 06-08 on a profile, time it, and print the results table.

Trains the runs of ``campose.study.STUDIES`` (MeNet stacked on the walks, stacked, siamese and
correlation with rendered pairs; PoseNet with SmoothL1, L1, MSE, alpha = 10, learned weighting and dense views;
MapNet with L1, SmoothL1, RMSE, relative weight 1 and dense views) into the ``models`` stage,
``--jobs`` at a time (one torch thread each on a 2-core machine), then scores each on the
profile's test walks against the true poses and the SfM labels. Prints per run the status, epochs
and training time, the total wall time (target, issue 4: all of them within 45 minutes on 2 CPU
cores for the full profile), and the results table the README shows. Writes
benchmarks/results/train_studies_<profile>.json.

    python benchmarks/train_studies.py --profile full --jobs 2
    python benchmarks/train_studies.py --profile full --cached     # report what is in the cache
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _common import machine, write_result

from campose import pipeline, study


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", choices=sorted(pipeline.PROFILES))
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--labels", default=None, choices=list(pipeline.LABEL_SOURCES), help="default: the profile's")
    p.add_argument("--studies", nargs="+", default=list(study.STUDIES), choices=list(study.STUDIES))
    p.add_argument("--cached", action="store_true", help="only report runs already trained (no training)")
    args = p.parse_args(argv)
    prof = pipeline.get_profile(args.profile)
    args.labels = args.labels or prof.labels
    load_before = os.getloadavg()
    trained = None
    if not args.cached:
        trained = study.train_all(prof, args.studies, labels=args.labels, jobs=args.jobs)
        print(f"trained {len(trained['runs'])} runs in {trained['wall_seconds'] / 60:.1f} min wall "
              f"({args.jobs} at a time)")
        for r in trained["runs"]:
            print(f"  {r['name']:<32} {r['status']:<13} best epoch {r['best_epoch']} of {r['epochs']}, "
                  f"{r['train_seconds'] / 60:.1f} min")
    tables, t0 = {}, time.perf_counter()
    for name in args.studies:
        s = study.run_study(prof, name, labels=args.labels, progress=False)
        tables[name] = {ref: s.summary(ref, report=False) for ref in ("truth", "labels") if ref == "truth" or s.labels == "sfm"}
        print(f"\n{name} on the {prof.name} test walks, against the truth:")
        print(tables[name]["truth"].round(3).to_string())
    eval_s = time.perf_counter() - t0
    result = {
        "benchmark": "train_studies", "profile": prof.name, "labels": args.labels, "jobs": args.jobs,
        "train_config": pipeline.train_config(prof).to_dict(), "trained": trained, "evaluation_seconds": eval_s,
        "tables": {n: {ref: json.loads(t.to_json(orient="index")) for ref, t in v.items()} for n, v in tables.items()},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "machine": machine(),
    }
    write_result(f"train_studies_{prof.name}", result, default=str)
    return result


if __name__ == "__main__":
    main()
