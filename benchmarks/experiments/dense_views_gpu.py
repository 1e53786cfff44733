"""How PoseNet's accuracy on the full profile's test walks grows with dense views and epochs: an
exploration run on a lent GPU (an NVIDIA H200, 2026-11-26), not a benchmark of ``make bench``.

The recipe is the full profile's dense-view run (*PoseNet, L1, alpha = 10, dense views*:
mobilenet_v3_small from scratch, 128 x 96, batch 32, AdamW 1e-3 with cosine decay, last epoch kept),
trained on the true poses, with the view count and the epochs varied. Two things differ from the
book's stages, both to fit a 15-minute GPU lease: the walks travel as JPEG (quality 95) at the
network size instead of being rendered there (``export``), and the views are rendered there around
the walks' training parts with :func:`campose.densify.sample_views` (seed 1; 12,000 views, split in
two halves of 6,000: the 6,000-view runs use the first half). The three runs train at once, one
process each.

Steps (``$OUT``: where results go; ``CAMPOSE_DATA`` a scratch folder on the GPU machine)::

    python benchmarks/experiments/dense_views_gpu.py export .exp/walks          # here: 21 MB
    # there, with lib/ on PYTHONPATH:
    python dense_views_gpu.py render .exp/walks 0 12000 & python dense_views_gpu.py render .exp/walks 1 12000 & wait
    python dense_views_gpu.py train .exp/walks A-6k-20ep 0 20 &
    python dense_views_gpu.py train .exp/walks B-12k-20ep 0,1 20 &
    python dense_views_gpu.py train .exp/walks C-6k-40ep 0 40 & wait

``render FOLDER PART N [PARTS]`` renders part PART of PARTS (default 2) of N views; ``export-views
FOLDER STAGE`` writes a built dense-view stage as JPEG into FOLDER instead (no rendering there);
``train FOLDER NAME PARTS EPOCHS [KIND] [FIELD=JSON ...]`` trains ``posenet`` (default) or
``mapnet`` (L1, the study's weights), with TrainConfig fields changed (e.g. ``lr=0.003``).
The renderer's numba kernels use every core in each process: when several ``render`` steps run at
once, give each one thread (``NUMBA_NUM_THREADS=1``). On 2026-11-26 twelve at once with the default
(16 threads each, 16 cores, 3,000 views each at 640 x 480) finished no part within 9 minutes and
used up that lease; the cause (the 192 threads, or twelve processes compiling the kernels into the
same numba cache) was not isolated.

Each ``train`` writes ``$OUT/<name>.json``: the run's settings, time, speed and its
:func:`campose.evaluate.evaluate` table against the true poses. Results are in the README.

A second use (2026-11-27, NVIDIA H200, torch 2.11): one TrainConfig field changed per run, the
book's own 6,000 views (``export-views FOLDER data/runs/full/dense/truth-6000/dense-views``), six
runs at once (``OMP_NUM_THREADS=1``), about 4 minutes a round::

    python dense_views_gpu.py train .exp/gpu/walks E-noaug 0 20 posenet augment=false seed=0

Median position on the test walks against the truth (6,000 x 20): the recipe 1.49 / 1.45 m (seeds
0 / 1); without colour jitter 0.95 / 1.10 / 1.17 m (seeds 0 / 1 / 2); jitter halved 1.19 m; lr 3e-3
2.07 m; no dropout 2.05 m; weight decay 0.05 1.43 m; both 1.62 m; MapNet 1.20 m, without jitter
1.23 m. The profiles' dense-view runs train without the jitter since (``Profile.dense``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT", "/tmp/out"))
DENSE = Path(os.environ.get("DENSE_VIEWS", "/tmp/dense"))


def log(*a) -> None:
    print(*a, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "log.txt", "a") as f:
        print(*a, file=f)


def export(folder: Path) -> None:
    """The full profile's six walks at the network size, true poses, images as JPEG (quality 95)."""
    from PIL import Image

    from campose import pipeline
    from campose.dataset import resized_image, write_poses

    prof = pipeline.get_profile("full")
    for name, s in pipeline.render_dataset(prof, progress=False).items():
        d = folder / name / "images"
        d.mkdir(parents=True, exist_ok=True)
        names = [f"{i:06d}.jpg" for i in range(len(s))]
        for i, n in enumerate(names):
            Image.fromarray(resized_image(s, i, prof.net_size)).save(d / n, quality=95)
        write_poses(folder / name / "poses.csv", names, s.x, s.q)
        (folder / name / "intrinsics.json").write_text((s.root / "intrinsics.json").read_text())
        (folder / name / "sequence.json").write_text(json.dumps({**s.meta, "split": s.split}, default=str))
        log(name, len(s))


def export_views(stage: Path, folder: Path) -> None:
    """A built dense-view stage (e.g. ``data/runs/full/dense/truth-6000/dense-views``, already at the
    network size) as JPEG (quality 75: the walks and 6,000 views then fit in the 64 MB a lent machine takes) in ``folder``, a sequence folder ``train`` reads as a part:
    the book's own views, with no rendering on the lent machine."""
    from PIL import Image

    from campose.dataset import load_sequence, write_poses

    s = load_sequence(stage)
    d = folder / "images"
    d.mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.jpg" for i in range(len(s))]
    for i, n in enumerate(names):
        Image.fromarray(s.load_image(i)).save(d / n, quality=75)
    write_poses(folder / "poses.csv", names, s.x, s.q)
    (folder / "intrinsics.json").write_text((s.root / "intrinsics.json").read_text())
    (folder / "sequence.json").write_text(json.dumps(s.meta, default=str))
    log(f"exported {len(s)} views of {stage}")


def walks(folder: Path) -> dict:
    from campose.dataset import load_sequence

    return {p.name: load_sequence(p) for p in sorted(folder.iterdir()) if p.is_dir()}


def render(folder: Path, part: int, n: int, parts: int = 2) -> None:
    """Part ``part`` of ``parts`` of ``n`` views drawn around the training parts of the walks (seed 1),
    at the network size."""
    import numpy as np

    from campose import pipeline
    from campose.densify import ViewSampler, render_views, sample_views
    from campose.train import split_validation

    prof = pipeline.get_profile("full")
    cfg = pipeline.train_config(prof)
    around, _ = split_validation([s for s in walks(folder).values() if s.split == "train"], cfg.val_fraction,
                                 cfg.val_gap)
    r = pipeline.get_renderer(prof)
    x, q = np.concatenate([s.x for s in around]), np.concatenate([s.q for s in around])
    xs, qs, _ = sample_views(r.plan, x, q, n, ViewSampler(), seed=1)
    sl = slice(part * n // parts, (part + 1) * n // parts)
    t = time.time()
    render_views(r, xs[sl], qs[sl], prof.intrinsics(), DENSE / f"part{part}", size=prof.net_size)
    log(f"rendered part {part}: {sl.stop - sl.start} views in {time.time() - t:.0f} s")


def train(folder: Path, name: str, parts: list[int], epochs: int, kind: str = "posenet", **changes) -> None:
    """The full profile's dense-view run of ``kind`` (PoseNet: L1, alpha = 10; MapNet: L1) on the
    training walks plus the view ``parts``, scored on the test walks. ``changes``: TrainConfig
    fields over the recipe (e.g. ``lr=0.003``)."""
    import torch

    from campose import pipeline
    from campose.dataset import load_sequence
    from campose.evaluate import evaluate
    from campose.study import MAPNET_WEIGHTS
    from campose.train import train as train_run

    w = walks(folder)
    seqs = [s for s in w.values() if s.split == "train"] + [load_sequence(DENSE / f"part{p}") for p in parts]
    test = {n: s for n, s in w.items() if s.split == "test"}
    extra = {"alpha": 10.0} if kind == "posenet" else dict(MAPNET_WEIGHTS)
    cfg = pipeline.train_config("full", kind=kind, loss="l1", epochs=epochs, **{**extra, **changes})
    t = time.time()
    res = train_run(cfg, seqs, progress=False)
    secs = time.time() - t
    table = evaluate(res.model, test, {"truth": test}, cfg.image_size).table.reset_index()
    row = {"run": name, "kind": kind, "views": sum(len(s) for s in seqs if not s.ordered), "epochs": epochs,
           "changes": changes, "status": res.status, "train_s": secs,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "img_per_s_last": res.history[-1]["samples_per_s"], "table": table.to_dict(orient="records")}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(row, indent=1, default=str))
    log(name, f"{secs:.0f} s", table.round(3).to_string())


if __name__ == "__main__":
    cmd, folder = sys.argv[1], Path(sys.argv[2])
    if cmd == "export":
        export(folder)
    elif cmd == "render":
        render(folder, int(sys.argv[3]), int(sys.argv[4]), *(int(a) for a in sys.argv[5:6]))
    elif cmd == "export-views":
        export_views(Path(sys.argv[3]), folder)
    elif cmd == "train":
        kind = [a for a in sys.argv[6:7] if "=" not in a]
        changes = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[6:] if "=" in a)}
        train(folder, sys.argv[3], [int(p) for p in sys.argv[4].split(",")], int(sys.argv[5]), *kind, **changes)
    else:
        sys.exit(f"unknown step {cmd!r}: export, render or train")
