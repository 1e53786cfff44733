"""Profiles and cached stages, so that any chapter can run on its own and a rerun is fast.

Every stage writes under ``<data root>/<profile>/<stage>/`` and records the key of its inputs in
``stage.json``; a stage whose key matches is loaded instead of recomputed. The data root is
``$CAMPOSE_DATA`` if set, else ``data/runs`` of the repository (found from this file or from the
working directory).

Profiles:

* ``quick``: small and fast, for CI and for trying things (the whole book in minutes on 2 cores).
* ``full``: the numbers the book reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from campose.camera import Intrinsics

STAGE_VERSION = {"render": 1}


@dataclass(frozen=True)
class SequenceSpec:
    """A walk-through: split (``train`` or ``test``), route waypoints, and its random seed."""

    name: str
    split: str
    waypoints: tuple[str, ...]
    seed: int


# The default floor's walk-throughs, like 7-Scenes: several training walks and separate test walks
# through the same building, each by a different "person" (seed: sideways wander, speed, head turns).
SEQUENCES: dict[str, SequenceSpec] = {s.name: s for s in [
    SequenceSpec("seq-01", "train", ("SW", "NW", "NE", "SE", "SW"), 1),                      # ring, clockwise
    SequenceSpec("seq-02", "train", ("SE", "NE", "N-atrium", "atrium", "S-atrium", "SW", "NW", "N-atrium"), 2),
    SequenceSpec("seq-03", "train", ("NW", "off22", "labC", "stair", "study", "clsB", "cls8", "SW"), 3),  # rooms
    SequenceSpec("seq-04", "train", ("SW", "SE", "NE", "NW", "SW"), 4),                      # ring, anticlockwise
    SequenceSpec("test-01", "test", ("NW", "SW", "SE", "NE", "NW"), 11),                     # ring, anticlockwise
    SequenceSpec("test-02", "test", ("S-atrium", "atrium", "N-atrium", "NE", "stair", "SE", "study", "S-cls8"), 12),
    # short walks for the quick profile
    SequenceSpec("quick-train", "train", ("SW", "S-atrium", "atrium", "N-atrium", "NW", "SW"), 21),
    SequenceSpec("quick-test", "test", ("NW", "N-atrium", "atrium", "S-atrium", "SW"), 22),
]}


@dataclass(frozen=True)
class Profile:
    """Everything that differs between a quick and a full run."""

    name: str
    sequences: tuple[str, ...]
    fps: float  # frames per second along the walks (1.2 m/s walking speed)
    render_size: tuple[int, int]  # (width, height) of the renders, what SfM sees
    net_size: tuple[int, int]  # (width, height) the networks train on
    hfov_deg: float = 65.0
    texture_seed: int = 0
    extra: dict = field(default_factory=dict)

    def intrinsics(self) -> Intrinsics:
        return Intrinsics.from_fov(self.render_size[0], self.render_size[1], self.hfov_deg)


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", ("quick-train", "quick-test"), fps=2.0, render_size=(480, 360), net_size=(128, 96)),
    "full": Profile("full", ("seq-01", "seq-02", "seq-03", "seq-04", "test-01", "test-02"), fps=4.0,
                    render_size=(640, 480), net_size=(256, 192)),
}


def get_profile(profile: str | Profile) -> Profile:
    """Look a profile up by name (``quick`` or ``full``)."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def data_root() -> Path:
    """Where stages write: ``$CAMPOSE_DATA`` or the repository's ``data/runs``."""
    env = os.environ.get("CAMPOSE_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    if (here / "data" / "floorplans").is_dir():
        return here / "data" / "runs"
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "_toc.yml").is_file() or (p / "data" / "floorplans").is_dir():
            return p / "data" / "runs"
    return Path.cwd() / "data" / "runs"


def stage_dir(profile: str | Profile, stage: str) -> Path:
    return data_root() / get_profile(profile).name / stage


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(stage_path: Path, key: str) -> bool:
    f = stage_path / "stage.json"
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def _mark(stage_path: Path, key: str, info: dict) -> None:
    stage_path.mkdir(parents=True, exist_ok=True)
    tmp = stage_path / "stage.json.tmp"
    tmp.write_text(json.dumps({"key": key, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info}, indent=2,
                              default=str) + "\n")
    os.replace(tmp, stage_path / "stage.json")


# ---------------------------------------------------------------------------- stages
_RENDERERS: dict = {}


def get_renderer(profile: str | Profile = "quick", plan_path=None):
    """The renderer of the profile's textures (built once per process: painting takes seconds)."""
    from campose.floorplan import DEFAULT_PLAN, load_floorplan
    from campose.render import Renderer

    prof = get_profile(profile)
    path = Path(plan_path) if plan_path else DEFAULT_PLAN
    k = (str(path), prof.texture_seed)
    if k not in _RENDERERS:
        _RENDERERS[k] = Renderer(load_floorplan(path), seed=prof.texture_seed)
    return _RENDERERS[k]


def show_progress() -> bool:
    """Progress bars on long work, unless ``CAMPOSE_PROGRESS=0`` (the book build sets it, so
    rendered pages do not fill with bar updates)."""
    return os.environ.get("CAMPOSE_PROGRESS", "1") not in ("0", "false", "no")


def render_dataset(profile: str | Profile = "quick", force: bool = False, progress: bool | None = None) -> dict:
    """Stage ``render``: simulate the profile's walks and render them with true poses.

    Returns ``{sequence name: Sequence}``; cached by the plan, the profile and the stage version.
    """
    from campose.dataset import load_sequence, render_sequence
    from campose.floorplan import DEFAULT_PLAN
    from campose.trajectory import simulate_walk

    prof = get_profile(profile)
    out = stage_dir(prof, "render")
    specs = [SEQUENCES[n] for n in prof.sequences]
    key = _key({"v": STAGE_VERSION["render"], "plan": DEFAULT_PLAN.read_text(), "specs": [asdict(s) for s in specs],
                "fps": prof.fps, "size": prof.render_size, "hfov": prof.hfov_deg, "tex": prof.texture_seed})
    if not force and _cached(out, key):
        return {s.name: load_sequence(out / s.name) for s in specs}
    renderer = get_renderer(prof)
    plan = renderer.plan
    K = prof.intrinsics()
    progress = show_progress() if progress is None else progress
    seqs, t0 = {}, time.perf_counter()
    for s in specs:
        walk = simulate_walk(plan, list(s.waypoints), fps=prof.fps, seed=s.seed, name=s.name)
        seqs[s.name] = render_sequence(renderer, walk, K, out / s.name,
                                       meta={"split": s.split, "fps": prof.fps, "seed": s.seed,
                                             "profile": prof.name, "texture_seed": prof.texture_seed},
                                       progress=progress)
    _mark(out, key, {"sequences": {n: len(s) for n, s in seqs.items()}, "seconds": time.perf_counter() - t0})
    return seqs


def profile_with(profile: str | Profile, **changes) -> Profile:
    """A copy of a profile with some fields changed (for experiments in notebooks)."""
    return replace(get_profile(profile), **changes)
