"""The book build: campose.book on a throwaway book (fast), and on the real book (papermill, quick)."""

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from campose.book import BookBuildError, build_book, chapter_notebooks, main, toc_entries

REPO_ROOT = Path(__file__).resolve().parents[1]


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = list(cells)
    return nb


def _parameters(source='profile = "full"'):
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})


def _toy_book(root: Path, notebooks: dict[str, nbformat.NotebookNode]) -> Path:
    """A book with the repository's _config.yml and references.bib, one page and some chapters."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "_config.yml", root / "_config.yml")
    shutil.copy(REPO_ROOT / "references.bib", root / "references.bib")
    (root / "intro.md").write_text(
        "# Toy book\n\nPoses, as in PoseNet {cite:p}`kendall2015posenet`.\n\n"
        "## References\n\n```{bibliography}\n```\n")
    chapters = "\n".join(f"      - file: chapters/{name}" for name in notebooks)
    (root / "_toc.yml").write_text(
        f"format: jb-book\nroot: intro.md\nparts:\n  - caption: Toy\n    chapters:\n{chapters}\n")
    (root / "chapters").mkdir(exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, root / "chapters" / name)
    return root


GOOD = _notebook(
    nbformat.v4.new_markdown_cell("# A toy chapter"),
    _parameters(),
    nbformat.v4.new_code_cell(
        "from pathlib import Path\n"
        "from myst_nb import glue\n"
        "print(f'profile={profile}')\n"
        "print(f'cwd={Path.cwd()}')\n"
        "n_frames = 17 if profile == 'quick' else 1000\n"
        "glue('n_frames', n_frames, display=False)"),
    nbformat.v4.new_markdown_cell("This profile renders {glue:text}`n_frames` frames."),
    nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([0, 1], [0, 1])\n"
        "plt.show()"),
)

BROKEN = _notebook(
    nbformat.v4.new_markdown_cell("# A broken chapter"),
    _parameters(),
    nbformat.v4.new_code_cell("x = 1"),
    nbformat.v4.new_code_cell("raise ValueError('boom in the toy chapter')"),
    nbformat.v4.new_code_cell("y = 2"),
)


def _stream(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_build_book_toy(tmp_path):
    root = _toy_book(tmp_path / "book", {"toy.ipynb": GOOD})
    out = tmp_path / "_build"
    lines = []
    result = build_book(profile="quick", root=root, out=out, log=lines.append)

    executed = nbformat.read(out / "stage" / "chapters" / "toy.ipynb", as_version=4)
    text = "".join(_stream(c) for c in executed.cells)
    assert "profile=quick" in text
    assert f"cwd={(root / 'chapters').resolve()}" in text  # runs where a reader would run it
    assert any("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", [])), \
        "the figure did not reach the executed notebook (MPLBACKEND=Agg in the kernel?)"
    # the source stays clean
    source = nbformat.read(root / "chapters" / "toy.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in source.cells if c.cell_type == "code")

    assert result.html == out / "html"
    assert (out / "html" / "index.html").is_file()
    page = (out / "html" / "chapters" / "toy.html").read_text()
    assert re.search(r">\s*17\s*<", page), "the glued value is not in the HTML"
    assert "Kendall" in (out / "html" / "intro.html").read_text()

    timings = json.loads((out / "timings.json").read_text())
    assert timings["profile"] == "quick"
    assert [t["chapter"] for t in timings["chapters"]] == ["chapters/toy.ipynb"]
    assert timings["chapters"][0]["status"] == "ok" and timings["html_seconds"] > 0
    assert any("chapters/toy.ipynb" in line and "ok" in line for line in "\n".join(lines).splitlines())


def test_build_book_stops_at_failing_chapter(tmp_path):
    root = _toy_book(tmp_path / "book", {"01_broken.ipynb": BROKEN, "02_good.ipynb": GOOD})
    out = tmp_path / "_build"
    with pytest.raises(BookBuildError) as err:
        build_book(profile="quick", root=root, out=out, log=lambda s: None)
    msg = str(err.value)
    assert "chapters/01_broken.ipynb" in msg
    assert "ValueError" in msg and "boom in the toy chapter" in msg
    assert "raise ValueError" in msg  # the failing cell's code

    failed = out / "stage" / "chapters" / "01_broken.ipynb"
    assert failed.is_file(), "the failed executed copy is kept as an artefact"
    nb = nbformat.read(failed, as_version=4)
    assert nb.metadata["papermill"]["exception"]
    assert any(o.get("ename") == "ValueError" for c in nb.cells for o in c.get("outputs", []))
    assert not (out / "stage" / "chapters" / "02_good.ipynb").exists()  # stopped at the first failure
    assert not (out / "html").exists()
    timings = json.loads((out / "timings.json").read_text())
    assert [t["status"] for t in timings["chapters"]] == ["failed"]


def test_toc_entries_reads_parts_and_checks_files(tmp_path):
    root = _toy_book(tmp_path / "book", {"01_a.ipynb": GOOD, "02_b.ipynb": GOOD})
    assert toc_entries(root) == [Path("intro.md"), Path("chapters/01_a.ipynb"), Path("chapters/02_b.ipynb")]
    assert chapter_notebooks(root) == [Path("chapters/01_a.ipynb"), Path("chapters/02_b.ipynb")]

    (root / "chapters" / "02_b.md").write_text("# twin\n")
    with pytest.raises(BookBuildError, match="both exist"):
        toc_entries(root)
    (root / "chapters" / "02_b.md").unlink()
    (root / "chapters" / "02_b.ipynb").unlink()
    with pytest.raises(BookBuildError, match="02_b"):
        toc_entries(root)


def test_cli_reports_unknown_chapter(tmp_path, capsys):
    root = _toy_book(tmp_path / "book", {"01_a.ipynb": GOOD})
    assert main(["--root", str(root), "--out", str(tmp_path / "_build"), "--only", "99_nope", "--no-html"]) == 1
    assert "99_nope" in capsys.readouterr().err


@pytest.mark.notebooks
@pytest.mark.slow
def test_book_builds_quick(tmp_path):
    """The real book: every chapter of _toc.yml executes with the quick profile and renders."""
    out = tmp_path / "_build"
    result = build_book(profile="quick", root=REPO_ROOT, out=out)
    chapters = chapter_notebooks(REPO_ROOT)
    assert chapters, "the toc lists no chapters"
    assert [t.status for t in result.chapters] == ["ok"] * len(chapters)
    for ch in chapters:
        assert (out / "html" / ch.with_suffix(".html")).is_file(), f"no HTML page for {ch}"
    assert (out / "html" / "index.html").is_file()


def test_kernel_shadowed_by_another_interpreter(tmp_path, monkeypatch):
    """A user-level python3 kernelspec for another Python wins over the venv's: use a private one."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    from campose.book import ensure_kernel

    user = tmp_path / "user-data"
    (user / "kernels" / "python3").mkdir(parents=True)
    (user / "kernels" / "python3" / "kernel.json").write_text(json.dumps(
        {"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "Other", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(user))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")  # user dir first (jupyter_core prefers a venv's own)
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    env = ensure_kernel("python3", tmp_path / "private", log=lambda s: None)
    assert env["JUPYTER_PATH"].split(":")[0] == str(tmp_path / "private")
    monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable

    for var in ("JUPYTER_DATA_DIR", "JUPYTER_PATH", "JUPYTER_PREFER_ENV_PATH"):
        monkeypatch.delenv(var)
    assert ensure_kernel("python3", tmp_path / "private2", log=lambda s: None) == {}  # the venv's own
