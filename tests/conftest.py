"""Shared test fixtures: keep this file minimal (fixtures of one module belong in that module)."""

import os
from pathlib import Path

import pytest

# Tests draw no windows. (The book's kernels get their own backend from campose.book.)
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def texture_cache(tmp_path_factory):
    """Painted textures (campose.render.cached_textures) go to one folder for the whole session, not
    to the user's ~/.cache: each plan and seed is painted once, and the chapters the book test runs
    (kernels inherit the environment) load them from there too. A test may point CAMPOSE_CACHE
    elsewhere with monkeypatch."""
    old = os.environ.get("CAMPOSE_CACHE")
    os.environ["CAMPOSE_CACHE"] = str(tmp_path_factory.mktemp("campose-cache"))
    yield Path(os.environ["CAMPOSE_CACHE"])
    if old is None:
        os.environ.pop("CAMPOSE_CACHE", None)
    else:
        os.environ["CAMPOSE_CACHE"] = old


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout: pyproject.toml, _toc.yml, chapters/, data/ ..."""
    return REPO_ROOT


@pytest.fixture
def tiny_sequence(tmp_path):
    """A function writing a tiny synthetic walk with ``campose.dataset.write_sequence`` (used by the
    training, evaluation and CLI tests): ``(name, frames, split="train", seed=0, root=tmp_path)
    -> Sequence`` of 32x24 noise images; the camera walks 5 m east at 1.6 m height while turning."""
    import numpy as np

    from campose.camera import Intrinsics
    from campose.dataset import write_sequence
    from campose.geometry import camera_rotation

    def write(name: str, frames: int, split: str = "train", seed: int = 0, root: Path | None = None):
        rng = np.random.default_rng(seed)
        x = np.c_[np.linspace(0.0, 5.0, frames), rng.normal(0.0, 0.3, frames), np.full(frames, 1.6)]
        q = camera_rotation(np.linspace(0.0, 3.0, frames) + seed)
        images = (rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(frames))
        return write_sequence((root or tmp_path) / name, images, x, q, Intrinsics.from_fov(32, 24, 65.0),
                              {"split": split})

    return write


@pytest.fixture
def tiny_profile(tmp_path, monkeypatch, tiny_sequence):
    """A profile ``tiny`` whose render stage is two tiny synthetic walks written directly (marked
    with the stage's real key, so ``pipeline.render_dataset`` loads them from the cache): training
    walk ``cli-train`` (14 frames) and test walk ``cli-test`` (6 frames), 32x24 network input; data
    under tmp_path (CAMPOSE_DATA), no progress bars."""
    from campose import pipeline

    tiny = {"cli-train": pipeline.SequenceSpec("cli-train", "train", ("SW", "NW"), 41),
            "cli-test": pipeline.SequenceSpec("cli-test", "test", ("NW", "SW"), 42)}
    monkeypatch.setenv("CAMPOSE_DATA", str(tmp_path / "runs"))
    monkeypatch.setenv("CAMPOSE_PROGRESS", "0")
    monkeypatch.setattr(pipeline, "SEQUENCES", {**pipeline.SEQUENCES, **tiny})
    prof = pipeline.profile_with("quick", name="tiny", sequences=tuple(tiny), net_size=(32, 24))
    monkeypatch.setitem(pipeline.PROFILES, "tiny", prof)
    out = pipeline.stage_dir(prof, "render")
    tiny_sequence("cli-train", 14, "train", seed=1, root=out)
    tiny_sequence("cli-test", 6, "test", seed=2, root=out)
    pipeline.mark_stage(out, pipeline.render_key(prof), {"written_by": "tests/conftest.py"})
    return prof
