"""``campose <command>``: the library's stages from the command line (same functions as the book)."""

from __future__ import annotations

import argparse
import sys


def _render(args) -> int:
    from campose import pipeline

    seqs = pipeline.render_dataset(args.profile, force=args.force)
    for name, s in seqs.items():
        print(f"{name:12s} {s.split:5s} {len(s):5d} frames  {s.root}")
    return 0


def _book(args) -> int:
    from campose.book import main as book_main

    return book_main(["--profile", args.profile] + (["--no-html"] if args.no_html else [])) or 0


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
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
