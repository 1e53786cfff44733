"""Does MeNet learn motion from the walks' pairs, or places? An exploration on the full profile, not a
benchmark of ``make bench``.

MeNet (the stacked, 6-channel network: mobilenet_v3_small from scratch, 128 x 96, L1 loss, AdamW
1e-3, batch 32, dropout 0.5) is trained on one **fixed** set of ``N`` pairs of the training walks
(true poses, one partner per frame within ``max_gap`` frames, never resampled), and after every fifth
epoch scored on those same pairs and on the test walks' pairs (the set chapter 06 scores). If the
training error falls while the test error stays where it was, the network fits the pairs it saw by
recognising them, not by reading the motion off the two images.

    python benchmarks/experiments/menet_memorises.py plain 256 30     # no jitter
    python benchmarks/experiments/menet_memorises.py shared 1500 30   # the same jitter for both images
    python benchmarks/experiments/menet_memorises.py own 1500 30      # each image its own jitter

Measured on the 2-CPU Intel Xeon, 2026-11-27 (one torch thread each, three runs side by side; median
direction error of t_ij on the fixed training pairs / on the 780 test pairs):

* 256 pairs, no jitter, 30 epochs: 5.1 deg on the training pairs (test not scored in that run);
* 1,500 pairs, 30 epochs: shared jitter 7.9 / 59.4 deg, own jitter 7.2 / 70.0 deg (the test error
  went up and down between 45 and 106 deg along the way); no jitter 64.0 / 48.5 deg (this run
  did not fit its pairs within 30 epochs).

A constant answer scores 28.4 deg on the test pairs. The two runs that fitted their pairs stayed
far worse than the constant on the test walks. The book's remedy is rendered pairs
(``campose.densify.render_pairs``, chapter 06).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from campose import losses, models, pipeline
from campose.dataset import PairDataset, PoseDataset
from campose.train import ColourJitter, split_validation


def main(mode: str, n: int, epochs: int, lr: float = 1e-3) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    prof = pipeline.get_profile("full")
    cfg = pipeline.train_config(prof)
    size = tuple(cfg.image_size)
    seqs, truth = pipeline.labelled_sequences(prof, "truth")
    train_parts, _ = split_validation([s for s in seqs.values() if s.split == "train"], cfg.val_fraction,
                                      cfg.val_gap)
    cache = pipeline.image_cache(prof)
    data = PairDataset(PoseDataset(train_parts, size, image_cache=cache), max_gap=cfg.max_gap, seed=0, stacked=True)
    pick = np.random.default_rng(0).choice(len(data), n, replace=False)
    items = [data[int(k)] for k in pick]
    x = torch.stack([it[0] for it in items])
    t = torch.stack([torch.as_tensor(it[1]) for it in items])
    q = torch.stack([torch.as_tensor(it[2]) for it in items])
    test = [s for s in truth.values() if s.split == "test"]
    tp = PairDataset(PoseDataset(test, size, image_cache=cache), max_gap=cfg.max_gap, seed=0, stacked=True)
    x_test = torch.stack([tp[k][0] for k in range(len(tp))])
    t_test = torch.as_tensor(tp.t_rel)
    net = models.build_model("menet", backbone=cfg.backbone, dropout=0.5, translation_mean=t.mean(0).tolist(),
                             translation_std=t.std(0).tolist())
    loss = losses.MeNetLoss("l1", alpha=1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    jitter = None if mode == "plain" else ColourJitter(seed=1, per_stack=(mode == "shared"))
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(n)
        for b in range(0, n - 1, 32):
            i = order[b:b + 32]
            if len(i) < 2:
                continue
            inp = jitter(x[i]) if jitter is not None else x[i]
            out = loss(*net(inp), t[i], q[i])
            value = out[0] if isinstance(out, tuple) else out
            opt.zero_grad()
            value.backward()
            opt.step()
        if epoch % 5 == 0 or epoch == epochs:
            net.eval()
            with torch.no_grad():
                d_train = losses.direction_error_deg(net(x)[0], t).nanmedian()
                d_test = losses.direction_error_deg(net(x_test)[0], t_test).nanmedian()
            print(f"epoch {epoch}: direction {float(d_train):.1f} deg on the {n} training pairs, "
                  f"{float(d_test):.1f} deg on the {len(tp)} test pairs ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("plain", "shared", "own"):
        sys.exit("usage: menet_memorises.py plain|shared|own PAIRS EPOCHS [LR]")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *(float(v) for v in sys.argv[4:5]))
