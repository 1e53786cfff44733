"""The chapters are committed clean: no outputs, kernelspec metadata, a `parameters` cell first.

Executed copies are build artefacts (_build/stage/); strip a notebook with
`nbstripout chapters/NN_name.ipynb` (or `jupyter nbconvert --clear-output --inplace`).
"""

import ast
import json
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
