"""``campose <command>``: the library's stages from the command line (same functions as the book)."""

from __future__ import annotations

import argparse
import sys
import warnings


def _render(args) -> int:
    from campose import pipeline

    seqs = pipeline.render_dataset(args.profile, force=args.force)
    for name, s in seqs.items():
        print(f"{name:12s} {s.split:5s} {len(s):5d} frames  {s.root}")
    return 0


def _book(args) -> int:
    from campose.book import main as book_main

    return book_main(["--profile", args.profile] + (["--no-html"] if args.no_html else [])) or 0


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 128x96, got {text!r}") from None
    return w, h


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes, e.g. 2048 or 2048,1024, "
                                         f"got {text!r}") from None


def _train(args) -> int:
    from campose import pipeline
    from campose.train import TrainingWarning, train

    prof = pipeline.get_profile(args.profile)
    given = {"kind": args.model, "backbone": args.backbone, "hidden": args.hidden, "loss": args.loss,
             "alpha": args.alpha, "learn_weights": args.learn_weights or None, "alpha_rel": args.alpha_rel,
             "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
             "image_size": args.size, "val_fraction": args.val_fraction, "seed": args.seed,
             "num_threads": args.threads, "max_minutes": args.max_minutes, "device": args.device,
             "augment": False if args.no_augment else None}
    changes = {k: v for k, v in given.items() if v is not None}
    if args.patience is not None:
        changes["patience"] = args.patience or None
    dense = getattr(args, "dense_views", None)
    if dense is not None and dense < 0:
        raise ValueError(f"--dense-views must be >= 0, got {dense}")
    if dense is not None:
        changes = pipeline.dense_changes(prof, changes)
    cfg = pipeline.train_config(prof, **changes)  # the profile's training settings, then the options given
    args.labels = args.labels or prof.labels
    labelled, _ = pipeline.labelled_sequences(prof, args.labels)
    sequences = [s for s in labelled.values() if s.split == "train"]
    if not sequences:
        raise ValueError(f"profile {prof.name} has no training sequences")
    if dense is not None:
        sequences.append(pipeline.dense_sequence(prof, cfg.kind, dense or None, args.labels,
                                                 val_fraction=cfg.val_fraction, val_gap=cfg.val_gap))
    out = args.out or pipeline.stage_dir(prof, "checkpoints") / f"{cfg.kind}-{cfg.loss}-seed{cfg.seed}.pt"
    with warnings.catch_warnings():  # the message is printed below
        warnings.simplefilter("ignore", TrainingWarning)
        meta = {"profile": prof.name, "labels": args.labels}
        if dense is not None:
            meta.update(pipeline.dense_meta(sequences[-1]))
        res = train(cfg, sequences, out_path=out, meta=meta)
    cols = [c for c in ("train_loss", "val_loss", "val_position_m", "val_rotation_deg", "val_direction_deg", "seconds")
            if c in res.history_frame()]
    print(res.history_frame()[cols].to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"status: {res.status}" + (f"\n{res.message}" if res.message else ""))
    print(f"best epoch: {res.best_epoch}; checkpoint: {out}")
    return 1 if res.failed else 0


def _evaluate(args) -> int:
    from campose import pipeline
    from campose.evaluate import evaluate, evaluate_pairs
    from campose.train import FAILED, load_checkpoint

    model, info = load_checkpoint(args.checkpoint)
    cfg = info["train_config"]
    labels = args.labels or info.get("meta", {}).get("labels")  # None: the profile's labels
    test, refs = pipeline.test_walks(args.profile, labels)
    if info.get("status") in FAILED:
        print(f"note: this run stopped early: {info.get('message')}", file=sys.stderr)
    size = tuple(cfg["image_size"])
    if model.in_channels == 6:
        table = evaluate_pairs(model, test, refs, size, max_gap=cfg["max_gap"], batch_size=args.batch_size)
    else:
        table = evaluate(model, test, refs, size, batch_size=args.batch_size).table
    print(f"{info['model_config']['kind']} ({cfg['backbone']}, loss {cfg['loss']}) on the {args.profile} test walks:")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        table.to_csv(args.csv)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="campose", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render the profile's walk-through sequences with true poses")
    r.add_argument("--profile", default="quick", choices=["quick", "full"])
    r.add_argument("--force", action="store_true", help="render again even if cached")
    r.set_defaults(func=_render)
    b = sub.add_parser("book", help="execute the chapters and build the book")
    b.add_argument("--profile", default="full", choices=["quick", "full"])
    b.add_argument("--no-html", action="store_true")
    b.set_defaults(func=_book)
    _add_train_evaluate(sub)
    _add_serve(sub)
    args = p.parse_args(argv)
    if args.command in ("train", "evaluate"):
        try:
            return args.func(args)
        except (FileNotFoundError, ValueError) as e:  # bad input: a clear message, no traceback
            print(f"campose {args.command}: error: {e}", file=sys.stderr)
            return 2
    return args.func(args)


def _add_train_evaluate(sub) -> None:
    from campose.losses import H_KINDS
    from campose.models import BACKBONES, MODELS
    from campose.pipeline import PROFILES

    t = sub.add_parser("train", help="train PoseNet, MapNet or MeNet on the profile's training walks")
    t.add_argument("--profile", default="quick", choices=list(PROFILES))
    t.add_argument("--model", default="posenet", choices=list(MODELS))
    t.add_argument("--backbone", default=None, choices=list(BACKBONES), help="default: the profile's")
    t.add_argument("--hidden", type=_ints, default=None, help="head layer sizes, e.g. 2048 (default: the model's)")
    t.add_argument("--loss", default=None, choices=list(H_KINDS), help="default: l1")
    t.add_argument("--alpha", type=float, default=None, help="weight of the rotation term (default 1)")
    t.add_argument("--learn-weights", action="store_true",
                   help="learned weighting (Kendall & Cipolla) instead of alpha")
    t.add_argument("--alpha-rel", type=float, default=None, help="MapNet: weight of the relative terms (default 1)")
    t.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    t.add_argument("--batch-size", type=int, default=None, help="default: the profile's")
    t.add_argument("--lr", type=float, default=None, help="default: the profile's")
    t.add_argument("--weight-decay", type=float, default=None, help="default 5e-4")
    t.add_argument("--size", type=_size, default=None, help="network input WIDTHxHEIGHT (default: the profile's)")
    t.add_argument("--val-fraction", type=float, default=None, help="held-out tail of each training walk (default 0.1)")
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (0: off; default: the profile's)")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: chosen for the machine)")
    t.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    t.add_argument("--max-minutes", type=float, default=None, help="time budget")
    t.add_argument("--no-augment", action="store_true", help="no colour jitter")
    t.add_argument("--dense-views", type=int, default=None, metavar="N",
                   help="also train on N views rendered around the training walks (PoseNet, MapNet) or N rendered "
                        "pairs (MeNet) (campose.densify; 0: the profile's count); --epochs then defaults to the "
                        "profile's dense epochs")
    t.add_argument("--labels", default=None, choices=["sfm", "truth"],
                   help="train on the aligned SfM labels or on the true poses (no SfM needed); default: the profile's")
    t.add_argument("--out", default=None, help="checkpoint path (default: <data>/<profile>/checkpoints/...)")
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="score a checkpoint on the profile's test walks (labels and truth)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--profile", default="quick", choices=list(PROFILES))
    e.add_argument("--labels", default=None, choices=["sfm", "truth"],
                   help="reference poses: SfM labels and truth, or truth only (default: as trained)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--csv", default=None, help="also write the table to this CSV file")
    e.set_defaults(func=_evaluate)


def _serve(args) -> int:
    import uvicorn

    from campose.serve import create_app

    try:  # everything is loaded and checked before uvicorn starts
        app = create_app(args.checkpoint, plan=args.plan, clearance=args.clearance, num_threads=args.threads)
    except (FileNotFoundError, ValueError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"campose serve: error: {message}", file=sys.stderr)
        return 2
    s = app.state.served
    print(f"campose serve: {s.kind} ({s.model.backbone.name}, {s.image_size[0]}x{s.image_size[1]}) from {s.path}; "
          f"dashboard at http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _add_serve(sub) -> None:
    s = sub.add_parser("serve", help="serve a PoseNet or MapNet checkpoint over HTTP: POST /predict, dashboard at /")
    s.add_argument("--checkpoint", required=True, help="a PoseNet or MapNet checkpoint (model.pt)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="default 8000")
    s.add_argument("--plan", default=None,
                   help="floor plan JSON for drawing and snapping (default: the committed plan)")
    s.add_argument("--clearance", type=float, default=0.0,
                   help="metres a snapped position keeps from walls (default 0)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on 2 or fewer CPUs)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (warning: no access log)")
    s.set_defaults(func=_serve)


if __name__ == "__main__":
    sys.exit(main())
