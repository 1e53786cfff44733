"""Build the book: papermill executes each chapter of ``_toc.yml`` into a staging copy, then
Jupyter Book renders the staged copies to HTML with warnings as errors.

Source notebooks in ``chapters/`` stay output-free; executed copies live in ``<out>/stage/`` and are
build artefacts (a chapter that fails keeps its executed copy there, failing cell included).

Command line::

    python -m campose.book --profile quick                 # every chapter, then the HTML
    python -m campose.book --profile quick --only 03_building --no-html

Layout of ``out`` (default ``_build``)::

    _build/stage/        the book sources plus the executed chapters (what Jupyter Book reads)
    _build/html/         the rendered book (index.html); see html_dir() for other ``out`` names
    _build/timings.json  seconds per chapter and for the HTML build
    _build/jupyter/      a private kernelspec, only when the ``python3`` one is not this interpreter's
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["BookBuildError", "BookResult", "ChapterTiming", "build_book", "chapter_notebooks",
           "find_root", "html_dir", "main", "toc_entries"]

Log = Callable[[str], None]

# Never copied into the stage: generated data, environments, code and docs that are not book pages.
SKIP_DIRS = {"_build", "data", ".venv", "venv", "tests", "benchmarks", "lib", "docs", "build", "dist",
             "node_modules", "__pycache__", ".ipynb_checkpoints"}
SKIP_FILES = {"README.md"}
# What a book page may need besides the notebooks themselves.
SOURCE_SUFFIXES = {".md", ".bib", ".yml", ".yaml", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp",
                   ".pdf", ".css", ".js", ".html", ".txt"}
# Environment of the kernels: headless plotting that still puts figures into the outputs.
# (MPLBACKEND=Agg would be headless too, but then plt.show() draws nothing into the notebook: the
# executed chapters, and so the book, would have no figures. The inline backend is what ipykernel
# picks by itself when MPLBACKEND is unset; we set it so an inherited MPLBACKEND=Agg cannot win.)
KERNEL_ENV = {
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    # progress bars would fill the rendered pages with bar updates (campose.pipeline.show_progress)
    "CAMPOSE_PROGRESS": "0",
}


class BookBuildError(RuntimeError):
    """A chapter failed to execute, or Jupyter Book failed; the message says which and where."""


@dataclass
class ChapterTiming:
    chapter: str
    seconds: float
    status: str  # "ok", "failed", "reused" (executed copy from an earlier run), "unexecuted"


@dataclass
class BookResult:
    profile: str
    stage: Path
    html: Path | None
    chapters: list[ChapterTiming] = field(default_factory=list)
    html_seconds: float | None = None
    total_seconds: float = 0.0

    def table(self) -> str:
        rows = [(t.chapter, t.status, f"{t.seconds:8.1f}") for t in self.chapters]
        if self.html_seconds is not None:
            rows.append(("(jupyter-book build)", "ok", f"{self.html_seconds:8.1f}"))
        rows.append(("total", "", f"{self.total_seconds:8.1f}"))
        w = max(len(r[0]) for r in rows)
        lines = [f"{'chapter':<{w}}  {'status':<10}  {'seconds':>8}", "-" * (w + 22)]
        lines += [f"{c:<{w}}  {s:<10}  {t}" for c, s, t in rows]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"profile": self.profile,
                "chapters": [asdict(t) for t in self.chapters],
                "html_seconds": self.html_seconds,
                "total_seconds": round(self.total_seconds, 3)}


# --------------------------------------------------------------------------------------- the toc

def find_root(start: Path | None = None) -> Path:
    """The book's folder: the first parent of ``start`` (default: the working directory) holding
    ``_toc.yml`` and ``_config.yml``, else the checkout this module lives in."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "_toc.yml").is_file() and (p / "_config.yml").is_file():
            return p
    repo = Path(__file__).resolve().parents[2]
    if (repo / "_toc.yml").is_file():
        return repo
    raise BookBuildError(f"no _toc.yml and _config.yml in {here} or its parents")


def _walk_toc(node, out: list[tuple[str, str]]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk_toc(item, out)
    elif isinstance(node, dict):
        if "file" in node:
            out.append(("file", str(node["file"])))
        if "glob" in node:
            out.append(("glob", str(node["glob"])))
        for key in ("parts", "chapters", "sections", "subtrees", "entries"):
            if key in node:
                _walk_toc(node[key], out)


def toc_entries(root: Path) -> list[Path]:
    """Every page of ``root/_toc.yml`` in reading order, root page first, as paths relative to
    ``root`` with their real suffix. Fails on a listed page that does not exist (Jupyter Book would
    too, less clearly) and on a page that exists both as .md and .ipynb."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}
    if "root" not in toc:
        raise BookBuildError(f"{root / '_toc.yml'} has no 'root:' entry")
    raw: list[tuple[str, str]] = [("file", str(toc["root"]))]
    _walk_toc(toc, raw)
    pages: list[Path] = []
    for kind, entry in raw:
        if kind == "glob":
            found = sorted(p.relative_to(root) for p in root.glob(entry)
                           if p.suffix in (".md", ".ipynb") and p.is_file())
            pages += [p for p in found if p not in pages]
            continue
        page = _resolve_page(root, entry)
        if page not in pages:
            pages.append(page)
    return pages


def _resolve_page(root: Path, entry: str) -> Path:
    rel = Path(entry)
    if rel.suffix in (".md", ".ipynb", ".rst") and (root / rel).is_file():
        candidates = [rel]
    else:
        candidates = [rel.with_name(rel.name + s) for s in (".md", ".ipynb", ".rst")
                      if (root / (str(rel) + s)).is_file()]
    if rel.suffix in (".md", ".ipynb"):
        twin = rel.with_suffix(".ipynb" if rel.suffix == ".md" else ".md")
        if (root / twin).is_file():
            raise BookBuildError(f"{rel} and {twin} both exist: keep one (Jupyter Book cannot tell them apart)")
    if not candidates:
        raise BookBuildError(f"_toc.yml lists {entry!r} but {root / entry} does not exist")
    if len(candidates) > 1:
        raise BookBuildError(f"_toc.yml entry {entry!r} matches {', '.join(map(str, candidates))}: keep one")
    return candidates[0]


def chapter_notebooks(root: Path) -> list[Path]:
    """The notebooks of the toc, in reading order, relative to ``root``."""
    return [p for p in toc_entries(root) if p.suffix == ".ipynb"]


def _select(chapters: list[Path], only: Sequence[str] | None) -> list[Path]:
    if not only:
        return chapters
    picked = []
    for want in only:
        w = want.strip().rstrip("/")
        hits = [c for c in chapters
                if w in (c.as_posix(), c.with_suffix("").as_posix(), c.name, c.stem)
                or c.stem.startswith(w + "_")]
        if not hits:
            names = ", ".join(c.stem for c in chapters) or "(none)"
            raise BookBuildError(f"--only {want!r} matches no chapter of the toc; chapters: {names}")
        picked += [h for h in hits if h not in picked]
    return [c for c in chapters if c in picked]  # toc order


# ------------------------------------------------------------------------------------ the stage

def _skip(rel: Path, patterns: list[str]) -> bool:
    parts = rel.parts
    if parts[0] in SKIP_DIRS or any(p.startswith(".") or p in ("__pycache__", ".ipynb_checkpoints") for p in parts):
        return True
    if len(parts) == 1 and parts[0] in SKIP_FILES:
        return True
    posix = rel.as_posix()
    return any(fnmatch.fnmatch(posix, pat) or fnmatch.fnmatch(parts[0], pat) for pat in patterns)


def _copy_sources(root: Path, stage: Path, out: Path) -> int:
    """Copy the book's non-notebook sources (config, toc, pages, bibliography, images) to the stage."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    patterns = [str(p) for p in (config.get("exclude_patterns") or [])]
    out_r = out.resolve()
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d.resolve() == out_r or out_r in d.resolve().parents:
            dirnames[:] = []
            continue
        rel_dir = d.relative_to(root)
        keep = []
        for name in dirnames:
            rel = rel_dir / name
            if not _skip(rel, patterns) and (d / name).resolve() != out_r:
                keep.append(name)
        dirnames[:] = sorted(keep)
        for name in filenames:
            rel = rel_dir / name
            if Path(name).suffix.lower() not in SOURCE_SUFFIXES or _skip(rel, patterns):
                continue
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(d / name, dst)
            n += 1
    return n


def _executed_profile(nb_path: Path) -> str | None:
    try:
        meta = json.loads(nb_path.read_text(encoding="utf-8")).get("metadata", {})
        pm = meta.get("papermill", {})
        if pm.get("exception"):
            return None
        return pm.get("parameters", {}).get("profile")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------- the kernel

def _python_prefix(exe: str) -> str | None:
    try:
        r = subprocess.run([exe, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_kernel(name: str, private_dir: Path, log: Log = print) -> dict[str, str]:
    """Make sure the kernel ``name`` runs this interpreter (the one with campose installed).

    ipykernel installed in the environment provides ``python3`` with argv ``python -m
    ipykernel_launcher``, which jupyter_client replaces by ``sys.executable``: nothing to do. A
    ``python3`` spec that points at another interpreter (say one in ``~/.local/share/jupyter``,
    which takes precedence over the environment's) is shadowed by a private spec under
    ``private_dir``; the returned environment entries put it first on ``JUPYTER_PATH``."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        exe = spec.argv[0] if spec.argv else ""
        if exe in {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]}:
            return {}
        if _python_prefix(exe) == sys.prefix:
            return {}
        why = f"points at {exe}, not {sys.executable}"
    except NoSuchKernel:
        why = "does not exist"
    kdir = private_dir / "kernels" / name
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({Path(sys.prefix).name})",
        "language": "python",
        "metadata": {"debugger": True},
    }, indent=1))
    log(f"kernel {name!r} {why}: using a private kernelspec in {kdir}")
    path = os.pathsep.join([str(private_dir), os.environ.get("JUPYTER_PATH", "")]).rstrip(os.pathsep)
    return {"JUPYTER_PATH": path}


@contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------------ execution

def _execute(src: Path, dst: Path, *, profile: str, kernel: str, chapter: str, log: Log) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(src), str(dst), parameters={"profile": profile}, kernel_name=kernel,
                            cwd=str(src.parent), progress_bar=True, request_save_on_cell_execute=True)
    except PapermillExecutionError as e:
        code = "\n".join("    " + line for line in (e.source or "").splitlines()[:12])
        raise BookBuildError(
            f"chapter {chapter} failed in cell {e.cell_index} (execution count {e.exec_count}): "
            f"{e.ename}: {e.evalue}\n{code}\n"
            f"The executed copy, with the failing cell, is kept at {dst}"
        ) from e
    except Exception as e:  # kernel died, timeout, bad notebook...
        raise BookBuildError(f"chapter {chapter} failed to execute: {type(e).__name__}: {e}"
                             + (f"\nPartial executed copy: {dst}" if dst.exists() else "")) from e


def html_dir(out: Path) -> Path:
    """Where the HTML lands. ``jupyter-book build --path-output P`` writes ``P/_build/html``, so an
    ``out`` named ``_build`` is passed as its parent and the HTML is ``out/html``."""
    out = Path(out)
    return out / "html" if out.name == "_build" else out / "_build" / "html"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    return [found] if found else [sys.executable, "-m", "jupyter_book.cli.main"]


def _run_jupyter_book(stage: Path, out: Path, log: Log) -> Path:
    path_output = out.parent if out.name == "_build" else out
    # --all: Sphinx re-reads only changed pages, and an unchanged page's warnings would then go
    # unreported: a broken page could pass a second build under -W.
    cmd = [*_jupyter_book(), "build", str(stage), "-W", "-n", "--keep-going", "--all",
           "--path-output", str(path_output)]
    log("$ " + " ".join(cmd))
    problems: list[str] = []
    # Jupyter Book colours its output whatever the terminal: keep the colours for a terminal only.
    keep_colour = sys.stdout.isatty()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            plain = _ANSI.sub("", line)
            log(line if keep_colour else plain)
            if "WARNING" in plain or "ERROR" in plain or "Exception" in plain:
                problems.append(plain)
    html = html_dir(out)
    if proc.returncode != 0:
        detail = "\n".join(problems[-20:]) or "(see the output above)"
        raise BookBuildError(f"jupyter-book build failed (exit {proc.returncode}); warnings count as "
                             f"errors:\n{detail}")
    if not (html / "index.html").is_file():
        raise BookBuildError(f"jupyter-book build succeeded but wrote no {html / 'index.html'}")
    return html


# ---------------------------------------------------------------------------------------- build

def build_book(profile: str = "full", root: Path | None = None, out: Path = Path("_build"),
               chapters: Sequence[str] | None = None, kernel: str = "python3", log: Log = print,
               html: bool = True) -> BookResult:
    """Execute the chapters of ``root/_toc.yml`` with papermill (``profile`` as parameter) into
    ``out/stage`` and render the stage with ``jupyter-book build -W -n --keep-going --all``.

    ``chapters`` restricts execution to some chapters (``"03_building"``, ``"03"`` or a path); the
    others reuse their executed copy from an earlier build with the same profile if the stage has
    one, else go in unexecuted (their glue keys will then be missing and the HTML build fails).
    Raises BookBuildError on the first failing chapter or a failing HTML build. Per-chapter times
    go to the log as a table and to ``out/timings.json``."""
    t_start = time.perf_counter()
    root = (Path(root) if root is not None else find_root()).resolve()
    out = Path(out)
    if not out.is_absolute():
        out = root / out
    stage = out / "stage"
    toc_chapters = chapter_notebooks(root)
    to_run = _select(toc_chapters, chapters)
    result = BookResult(profile=profile, stage=stage, html=None)

    # A fresh stage, so that a page removed from the toc or renamed .md <-> .ipynb leaves nothing
    # behind; executed chapters of the old stage are kept aside for reuse by a partial build.
    old = out / "stage.old"
    if old.exists():
        shutil.rmtree(old)
    if stage.exists():
        stage.rename(old)
    stage.mkdir(parents=True)
    try:
        n = _copy_sources(root, stage, out)
        log(f"book {root} -> stage {stage} ({n} source files); profile {profile!r}; "
            f"{len(to_run)} of {len(toc_chapters)} chapters to execute")
        for ch in toc_chapters:
            if ch in to_run:
                continue
            prev = old / ch
            if prev.is_file() and _executed_profile(prev) == profile:
                (stage / ch).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(prev, stage / ch)
                result.chapters.append(ChapterTiming(ch.as_posix(), 0.0, "reused"))
            else:
                (stage / ch).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / ch, stage / ch)
                result.chapters.append(ChapterTiming(ch.as_posix(), 0.0, "unexecuted"))
                log(f"note: {ch} is not executed (no earlier executed copy with profile {profile!r})")
    finally:
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)

    env = dict(KERNEL_ENV)
    env.update(ensure_kernel(kernel, out / "jupyter", log))
    failure: BookBuildError | None = None
    with _environ(env):
        for i, ch in enumerate(to_run, 1):
            log(f"[{i}/{len(to_run)}] executing {ch.as_posix()} (profile {profile!r}, cwd {(root / ch).parent})")
            t0 = time.perf_counter()
            try:
                _execute(root / ch, stage / ch, profile=profile, kernel=kernel, chapter=ch.as_posix(), log=log)
            except BookBuildError as e:
                result.chapters.append(ChapterTiming(ch.as_posix(), round(time.perf_counter() - t0, 3), "failed"))
                failure = e
                break
            dt = time.perf_counter() - t0
            result.chapters.append(ChapterTiming(ch.as_posix(), round(dt, 3), "ok"))
            log(f"[{i}/{len(to_run)}] {ch.as_posix()} done in {dt:.1f} s")
    # A chapter may write files next to itself (figures referenced from markdown): copy them too.
    _copy_sources(root, stage, out)
    order = {c.as_posix(): k for k, c in enumerate(toc_chapters)}
    result.chapters.sort(key=lambda t: order.get(t.chapter, len(order)))

    try:
        if failure is None and html:
            t0 = time.perf_counter()
            result.html = _run_jupyter_book(stage, out, log)
            result.html_seconds = round(time.perf_counter() - t0, 3)
    finally:
        result.total_seconds = time.perf_counter() - t_start
        out.mkdir(parents=True, exist_ok=True)
        (out / "timings.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        log("\n" + result.table())
    if failure is not None:
        raise failure
    if result.html is not None:
        log(f"\nbook written to {result.html / 'index.html'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m campose.book", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full", help="pipeline profile passed to every chapter (quick, full)")
    ap.add_argument("--only", action="append", metavar="CHAPTER",
                    help="execute only this chapter (e.g. 03_building; repeatable); others reuse earlier runs")
    ap.add_argument("--no-html", action="store_true", help="execute the chapters, skip jupyter-book")
    ap.add_argument("--root", type=Path, default=None, help="the book's folder (default: found from cwd)")
    ap.add_argument("--out", type=Path, default=None, help="build folder (default: _build in the book's folder)")
    ap.add_argument("--kernel", default="python3", help="kernel name for papermill (default: python3)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        out = args.out.resolve() if args.out is not None else Path("_build")
        build_book(profile=args.profile, root=args.root, out=out, chapters=args.only,
                   kernel=args.kernel, log=log, html=not args.no_html)
    except BookBuildError as e:
        print(f"\nbook build failed: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
