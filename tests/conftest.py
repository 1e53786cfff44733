"""Shared test fixtures: keep this file minimal (fixtures of one module belong in that module)."""

import os
from pathlib import Path

import pytest

# Tests draw no windows. (The book's kernels get their own backend from campose.book.)
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout: pyproject.toml, _toc.yml, chapters/, data/ ..."""
    return REPO_ROOT
