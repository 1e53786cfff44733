"""The chapters are committed clean: no outputs, kernelspec metadata, a `parameters` cell first.

Executed copies are build artefacts (_build/stage/); strip a notebook with
`nbstripout chapters/NN_name.ipynb` (or `jupyter nbconvert --clear-output --inplace`).
"""

import ast
import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (REPO_ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_outputs(path):
    dirty = [i for i, c in enumerate(_load(path)["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; run nbstripout on it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_kernelspec(path):
    ks = _load(path).get("metadata", {}).get("kernelspec", {})
    assert ks.get("name"), f"{path.name}: no kernelspec metadata (papermill needs it)"
    assert ks.get("language", "python") == "python"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_first_code_cell_is_parameters(path):
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name}: no code cells"
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), \
        f"{path.name}: the first code cell is not tagged 'parameters'"
    tree = ast.parse(_source(first))
    assigned = {t.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)}
    assert "profile" in assigned, f"{path.name}: the parameters cell does not assign `profile`"


_GLUED = re.compile(r"""\bglue\(\s*["']([^"']+)["']""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_glue_keys_are_glued_in_one_cell(path):
    """A key glued in two cells is a duplicate the book build rejects (after every chapter has run):
    caught here in milliseconds. A branch may glue the same key twice within one cell (only one
    branch runs); keys built at run time (f-strings) are not seen."""
    cells = _load(path)["cells"]
    where: dict[str, set[int]] = {}
    for i, c in enumerate(cells):
        if c["cell_type"] == "code":
            for key in _GLUED.findall(_source(c)):
                where.setdefault(key, set()).add(i)
    twice = {k: sorted(v) for k, v in where.items() if len(v) > 1}
    assert not twice, f"{path.name}: glue keys set in more than one cell: {twice}"
