"""Network speed on this machine: training images/s and inference ms/image.

Training: one AdamW step (forward, loss, backward, update) on a batch of 32 random images (MeNet:
32 stacked pairs), in channels-last memory order as the trainer uses; inference: eval mode without gradients at batch 1 and 32. By default the
profiles' own settings (backbone and network input size of ``quick`` and ``full``) for every model
kind, plus PoseNet with ResNet-18 for reference, with 1 and 2 torch threads on the CPU (or on CUDA
when present), so the trainer's thread choice (:func:`campose.train.cpu_threads`) can be checked.
Prints a table and writes benchmarks/results/train_speed.json. Note the machine's load alongside:
on a shared 2-core CPU it decides the numbers.

    python benchmarks/train_speed.py [--threads 1 2] [--repeats 2]
    python benchmarks/train_speed.py --configs posenet:resnet18:256x192 mapnet:mobilenet_v3_small:128x96
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _common import machine, write_result
from campose import pipeline
from campose.losses import build_loss, consecutive_pairs
from campose.models import build_model
from campose.train import choose_device


def _timed(fn, repeats: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure(kind: str, backbone: str, size, threads: int, device: torch.device, repeats: int = 2,
            batch: int = 32) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    w, h = size
    model = build_model(kind, backbone=backbone).to(device, memory_format=torch.channels_last)  # as the trainer
    loss = build_loss(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, model.in_channels, h, w, device=device).contiguous(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, device=device)
    q = torch.nn.functional.normalize(torch.randn(batch, 4, device=device), dim=1)
    pairs = consecutive_pairs(torch.arange(batch) // 3)  # MapNet: windows of 3 frames

    def step():
        opt.zero_grad()
        t, r = model(images)
        (loss(t, r, x, q, pairs) if kind == "mapnet" else loss(t, r, x, q)).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    train_s = _timed(step, repeats)
    model.to(memory_format=torch.contiguous_format).eval()  # inference as evaluate and serve run it
    images = images.contiguous()
    out = {"model": kind, "backbone": backbone, "width": w, "height": h, "threads": threads,
           "device": device.type, "train_batch": batch,
           "train_images_per_s": batch / train_s}
    with torch.no_grad():
        for b in (1, 32):
            def infer(b=b):
                model(images[:b])
                if device.type == "cuda":
                    torch.cuda.synchronize()

            out[f"infer_ms_per_image_b{b}"] = 1000 * _timed(infer, max(repeats, 5 if b == 1 else repeats)) / b
    return out


def default_configs() -> list[str]:
    """Every model kind at each profile's backbone and input size, and PoseNet/ResNet-18 for reference."""
    out = []
    for prof in pipeline.PROFILES.values():
        cfg = pipeline.train_config(prof)
        size = "x".join(str(v) for v in cfg.image_size)
        out += [f"{k}:{cfg.backbone}:{size}" for k in ("posenet", "mapnet", "menet", "menet_siamese", "menet_corr")]
        out.append(f"posenet:resnet18:{size}")
    return list(dict.fromkeys(out))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--configs", nargs="+", default=None, help="MODEL:BACKBONE:WIDTHxHEIGHT (default: the profiles')")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    device = choose_device()
    load_before = os.getloadavg()
    rows = []
    print(f"{'model':>13} {'backbone':>18} {'size':>7} {'thr':>3} {'train img/s':>11} {'infer ms/img b1':>15} "
          f"{'infer ms/img b32':>16}")
    for text in args.configs or default_configs():
        kind, backbone, size_text = text.split(":")
        size = tuple(int(v) for v in size_text.split("x"))
        for n in (args.threads if device.type == "cpu" else [torch.get_num_threads()]):
            r = measure(kind, backbone, size, n, device, args.repeats)
            rows.append(r)
            print(f"{kind:>13} {backbone:>18} {size_text:>7} {n:>3} {r['train_images_per_s']:>11.1f} "
                  f"{r['infer_ms_per_image_b1']:>15.1f} {r['infer_ms_per_image_b32']:>16.1f}", flush=True)
    load = {"before": load_before, "after": os.getloadavg()}
    print(f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}")
    result = {"benchmark": "train_speed", "device": str(device), "machine": machine(), "load_average": load,
              "results": rows}
    write_result("train_speed", result)
    return result


if __name__ == "__main__":
    main()
