"""PoseNet (resnet18) speed on this machine: training images/s and inference ms/image.

Training: one AdamW step (forward, L1 pose loss, backward, update) on a batch of 32 random images;
inference: eval mode without gradients at batch 1 and 32. Both at the quick (128x96) and full
(256x192) network sizes, with 1 and 2 torch threads on the CPU (or on CUDA when present), so the
trainer's thread choice (:func:`campose.train.cpu_threads`) can be checked. Prints a table and
writes benchmarks/results/train_speed.json. Note the machine's load alongside: on a shared 2-core
CPU it decides the numbers.

    python benchmarks/train_speed.py [--threads 1 2] [--sizes 128x96 256x192] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from campose.losses import PoseLoss
from campose.models import build_model
from campose.train import choose_device


def _timed(fn, repeats: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure(size, threads: int, device: torch.device, repeats: int = 2, batch: int = 32) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    w, h = size
    model = build_model("posenet", backbone="resnet18").to(device)
    loss = PoseLoss("l1")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, h, w, device=device)
    x = torch.randn(batch, 3, device=device)
    q = torch.nn.functional.normalize(torch.randn(batch, 4, device=device), dim=1)

    def step():
        opt.zero_grad()
        t, r = model(images)
        loss(t, r, x, q).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    train_s = _timed(step, repeats)
    model.eval()
    out = {"width": w, "height": h, "threads": threads, "device": device.type, "train_batch": batch,
           "train_images_per_s": batch / train_s}
    with torch.no_grad():
        for b in (1, 32):
            def infer(b=b):
                model(images[:b])
                if device.type == "cuda":
                    torch.cuda.synchronize()

            out[f"infer_ms_per_image_b{b}"] = 1000 * _timed(infer, max(repeats, 5 if b == 1 else repeats)) / b
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sizes", nargs="+", default=["128x96", "256x192"])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    device = choose_device()
    load_before = os.getloadavg()
    rows = []
    print(f"{'size':>9} {'thr':>3} {'train img/s':>11} {'infer ms/img b1':>15} {'infer ms/img b32':>16}")
    for text in args.sizes:
        size = tuple(int(v) for v in text.split("x"))
        for n in (args.threads if device.type == "cpu" else [torch.get_num_threads()]):
            r = measure(size, n, device, args.repeats)
            rows.append(r)
            print(f"{text:>9} {n:>3} {r['train_images_per_s']:>11.1f} {r['infer_ms_per_image_b1']:>15.1f} "
                  f"{r['infer_ms_per_image_b32']:>16.1f}", flush=True)
    load = {"before": load_before, "after": os.getloadavg()}
    print(f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}")
    result = {"benchmark": "train_speed", "model": "posenet resnet18", "device": str(device),
              "cpus": os.cpu_count(), "torch": str(torch.__version__), "load_average": load, "results": rows}
    path = Path(__file__).with_name("results") / "train_speed.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result

if __name__ == "__main__":
    main()
