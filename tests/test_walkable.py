"""The walkable map (from a plan, from a trajectory), constant-time snapping onto it, and the
before/after scoring of snapped predictions (campose.walkable)."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from campose.floorplan import floorplan_from_dict, load_floorplan
from campose.walkable import (
    WalkableMap,
    map_overlap,
    plot_snapping,
    snap_errors,
    snap_evaluation,
    snap_study,
    snap_summary,
    time_snap,
)

# two corridors, 10 m long, with a 1 m thick service duct (not walkable) between them
TWO_CORRIDORS = {
    "name": "two corridors", "wall_height": 3.0, "bounds": [[0, 0], [10, 6]],
    "walls": [
        {"id": "s", "from": [0, 0], "to": [10, 0]}, {"id": "e", "from": [10, 0], "to": [10, 6]},
        {"id": "n", "from": [10, 6], "to": [0, 6]}, {"id": "w", "from": [0, 6], "to": [0, 0]},
        {"id": "duct-s", "from": [0, 2.5], "to": [10, 2.5]}, {"id": "duct-n", "from": [0, 3.5], "to": [10, 3.5]},
    ],
    "doors": [{"wall": "e", "at": 1.25, "width": 1.0, "state": "closed"}],
    "spaces": [
        {"name": "south corridor", "kind": "corridor", "polygon": [[0, 0], [10, 0], [10, 2.5], [0, 2.5]],
         "walkable": True},
        {"name": "duct", "kind": "service", "polygon": [[0, 2.5], [10, 2.5], [10, 3.5], [0, 3.5]], "walkable": False},
        {"name": "north corridor", "kind": "corridor", "polygon": [[0, 3.5], [10, 3.5], [10, 6], [0, 6]],
         "walkable": True},
    ],
}


@pytest.fixture(scope="module")
def two_corridors():
    return floorplan_from_dict(TWO_CORRIDORS)


def _centres(m: WalkableMap) -> np.ndarray:
    """Every cell centre, row by row (the order of m.mask.ravel())."""
    h, w = m.shape
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    return m.origin + (np.column_stack([cols.ravel(), rows.ravel()]) + 0.5) * m.resolution


# ---------------------------------------------------------------------------- from a plan
@pytest.mark.parametrize("clearance", [0.0, 0.3])
def test_from_plan_matches_the_plan_on_every_cell_centre(two_corridors, clearance):
    m = WalkableMap.from_plan(two_corridors, resolution=0.1, clearance=clearance, margin=1.0)
    assert m.resolution == 0.1 and np.allclose(m.origin, [-1, -1]) and m.shape == (80, 120)
    assert m.extent == pytest.approx((-1, 11, -1, 7))
    expected = two_corridors.is_walkable(_centres(m), clearance).reshape(m.shape)
    assert np.array_equal(m.mask, expected)
    assert m.walkable_area_m2 == pytest.approx(m.mask.sum() * 0.01)
    # two corridors of 10 x 2.5 m, less the clearance (at least 2.5 cm) along their walls
    keep = max(clearance, 0.025)
    assert m.walkable_area_m2 == pytest.approx(2 * (10 - 2 * keep) * (2.5 - 2 * keep), abs=2 * 0.1 * 25)


def test_from_plan_matches_the_default_plan_at_a_coarse_resolution():
    plan = load_floorplan()
    m = WalkableMap.from_plan(plan, resolution=0.25, clearance=0.3)
    assert np.array_equal(m.mask, plan.is_walkable(_centres(m), 0.3).reshape(m.shape))
    assert m.mask.any() and not m.mask.all()


def test_from_plan_checks_its_inputs(two_corridors):
    for bad in (0, -0.05, float("nan")):
        with pytest.raises(ValueError, match="resolution"):
            WalkableMap.from_plan(two_corridors, resolution=bad)
    with pytest.raises(ValueError, match="clearance"):
        WalkableMap.from_plan(two_corridors, clearance=-0.1)


def test_true_positions_of_the_test_walks_are_walkable():
    """The walks are generated with clearance, so their true camera centres are all on the
    default plan's map at clearance 0: snapping never moves a true position."""
    from campose.pipeline import PROFILES, SEQUENCES
    from campose.trajectory import simulate_walk

    plan = load_floorplan()
    m = WalkableMap.from_plan(plan)
    for prof in PROFILES.values():
        for name in prof.sequences:
            s = SEQUENCES[name]
            if s.split != "test":
                continue
            walk = simulate_walk(plan, list(s.waypoints), fps=prof.fps, seed=s.seed, name=s.name)
            assert m.is_walkable(walk.x).all(), name
            res = m.snap(walk.x)
            assert not res.moved.any() and np.array_equal(res.positions, walk.x) and res.share_moved == 0.0


# ---------------------------------------------------------------------------- the constructor
def test_constructor_checks_its_inputs():
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    with pytest.raises(ValueError, match="no walkable cell"):
        WalkableMap(np.zeros((4, 5), bool), (0, 0), 0.1)
    with pytest.raises(ValueError, match="2-D boolean"):
        WalkableMap(mask.astype(int), (0, 0), 0.1)
    with pytest.raises(ValueError, match="2-D boolean"):
        WalkableMap(mask[None], (0, 0), 0.1)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="resolution"):
            WalkableMap(mask, (0, 0), bad)
    for bad in ((0, 0, 0), (0, float("nan"))):
        with pytest.raises(ValueError, match="origin"):
            WalkableMap(mask, bad, 0.1)
    m = WalkableMap(mask, (1.0, 2.0), 0.5)
    assert m.shape == (4, 5) and m.extent == (1.0, 3.5, 2.0, 4.0)
    assert np.allclose(m.cell_centres(), [[2.25, 2.75]]) and len(m.cell_centres(walkable=False)) == 19
    assert m.distance_m[1, 2] == 0 and m.distance_m[1, 4] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- snapping
masks = arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9))).filter(lambda a: a.any())
origins = st.tuples(st.floats(-50, 50), st.floats(-50, 50))
resolutions = st.sampled_from([0.05, 0.1, 0.25, 1.0])


def _exact_distance(m: WalkableMap, xy: np.ndarray) -> np.ndarray:
    """Brute force: distance from each point to the union of the walkable squares."""
    lo = m.cell_centres() - m.resolution / 2
    hi = lo + m.resolution
    gap = np.maximum(np.maximum(lo[None] - xy[:, None], 0), xy[:, None] - hi[None])
    return np.linalg.norm(gap, axis=-1).min(1)


def _centre_distance(m: WalkableMap, xy: np.ndarray) -> np.ndarray:
    """Brute force: distance from each point to the nearest walkable cell centre."""
    return np.linalg.norm(m.cell_centres()[None] - xy[:, None], axis=-1).min(1)


@settings(max_examples=60, deadline=None)
@given(mask=masks, origin=origins, res=resolutions, u=arrays(float, (12, 3), elements=st.floats(0, 1)))
def test_snap_matches_a_brute_force_search(mask, origin, res, u):
    m = WalkableMap(mask, origin, res)
    x0, x1, y0, y1 = m.extent
    p = np.column_stack([x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0), 1.6 + u[:, 2]])
    p = p[(p[:, 0] < x1) & (p[:, 1] < y1)]  # on the grid
    res_ = m.snap(p)
    walk = m.is_walkable(p)
    diag = res * np.sqrt(2)
    eps = 3e-3 * res  # snapped points are kept a hair inside their cell
    # walkable points stay where they are; the others move onto a walkable cell
    assert np.array_equal(res_.moved, ~walk)
    assert np.array_equal(res_.positions[walk], p[walk]) and np.all(res_.distance[walk] == 0)
    assert m.is_walkable(res_.positions).all()
    assert np.array_equal(res_.positions[:, 2], p[:, 2])  # z is left alone
    assert np.allclose(res_.distance, np.linalg.norm(res_.positions[:, :2] - p[:, :2], axis=1))
    # nearest: no closer than the walkable area is, and within a cell diagonal of the nearest centre
    assert np.all(res_.distance >= _exact_distance(m, p[:, :2]) - 1e-9)
    assert np.all(res_.distance <= _centre_distance(m, p[:, :2]) + diag + eps)


@settings(max_examples=60, deadline=None)
@given(mask=masks, origin=origins, res=resolutions, u=arrays(float, (10, 4), elements=st.floats(0, 1)))
def test_snapping_at_most_doubles_the_error_of_a_walkable_truth(mask, origin, res, u):
    """The truth is walkable, so the nearest walkable point is no farther from the prediction than
    the truth: after <= 2 before (plus the grid's discretisation, 1.5 cell diagonals)."""
    m = WalkableMap(mask, origin, res)
    x0, x1, y0, y1 = m.extent
    pred = np.column_stack([x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0)])
    pred = np.minimum(pred, [x1 - 1e-9, y1 - 1e-9])
    cells = m.cell_centres()
    truth = cells[(u[:, 2] * len(cells)).astype(int) % len(cells)] + (u[:, 3:4] - 0.5) * 0.9 * res
    f = snap_errors(m, pred, truth)
    assert np.all(f["snapped_m"] <= 2 * f["position_m"] + 1.5 * res * np.sqrt(2) + 1e-9)


def test_single_points_and_batches_agree():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 40)) < 0.3
    m = WalkableMap(mask, (-3.0, 2.0), 0.1)
    p = np.column_stack([rng.uniform(-3, 1, 50), rng.uniform(2, 5, 50), rng.uniform(0, 2, 50)])
    batch = m.snap(p)
    for i in range(len(p)):
        one = m.snap(p[i])
        assert one.positions.shape == (3,) and one.moved.shape == (1,) and one.distance.shape == (1,)
        assert np.array_equal(one.positions, batch.positions[i]) and one.moved[0] == batch.moved[i]
        assert bool(m.is_walkable(p[i])) == (not batch.moved[i])
        two = m.snap(p[i, :2])  # 2-D queries give 2-D answers
        assert np.array_equal(two.positions, batch.positions[i, :2])
    assert m.snap(p[:0]).positions.shape == (0, 3) and m.snap(p[:0]).share_moved == 0.0


def test_points_off_the_grid_snap_onto_the_walkable_area():
    mask = np.zeros((10, 10), bool)
    mask[4:6, 4:6] = True  # a 1 x 1 m walkable square at (1.4..1.6)... with 0.1 m cells
    m = WalkableMap(mask, (1.0, 1.0), 0.1)
    far = np.array([[-100.0, 1.5], [1.5, 50.0], [40.0, -40.0]])
    res = m.snap(far)
    assert res.moved.all() and m.is_walkable(res.positions).all() and not m.is_walkable(far).any()
    assert np.allclose(res.positions, [[1.4, 1.5], [1.5, 1.6], [1.6, 1.4]], atol=1e-3)
    assert np.allclose(res.distance, np.linalg.norm(res.positions - far, axis=1))


def test_snap_refuses_bad_points():
    m = WalkableMap(np.ones((3, 3), bool), (0, 0), 1.0)
    for bad in ([[np.nan, 1.0]], [[1.0, np.inf, 0.0]]):
        with pytest.raises(ValueError, match="NaN or infinite"):
            m.snap(bad)
    for bad in (np.zeros((2, 4)), np.zeros((2, 1)), np.zeros((2, 2, 2)), np.zeros(5)):
        with pytest.raises(ValueError, match="points must be"):
            m.snap(bad)
    with pytest.raises(ValueError, match="points must be"):
        m.is_walkable(np.zeros((2, 4)))


# ---------------------------------------------------------------------------- from a trajectory
def _distance_to_path(q: np.ndarray, path: np.ndarray) -> np.ndarray:
    from campose.floorplan import distance_to_segments

    return distance_to_segments(q, np.column_stack([path[:-1], path[1:]]))


@settings(max_examples=25, deadline=None)
@given(steps=arrays(float, (6, 2), elements=st.floats(-1.5, 1.5)), radius=st.sampled_from([0.3, 0.5, 1.0]),
       u=arrays(float, (200, 2), elements=st.floats(0, 1)))
def test_from_trajectory_covers_the_path_and_its_radius(steps, radius, u):
    path = np.cumsum(np.vstack([[3.0, -2.0], steps]), axis=0)
    res = 0.05
    m = WalkableMap.from_trajectory(np.column_stack([path, np.full(len(path), 1.6)]), radius=radius,
                                    resolution=res, max_step=None)
    assert m.is_walkable(path).all()
    x0, x1, y0, y1 = m.extent
    q = np.column_stack([x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0)])
    d = _distance_to_path(q, path)
    slack = res * np.sqrt(2) + res / 4  # cell centres and the path's samples
    ok = m.is_walkable(q)
    assert ok[d <= radius - slack].all() and not ok[d > radius + slack].any()


def test_from_trajectory_does_not_join_jumps():
    a = np.column_stack([np.linspace(0, 4, 9), np.zeros(9)])
    b = a + [0.0, 6.0]  # a second walk 6 m north: the step from a's end to b's start is a jump
    walks = np.vstack([a, b])
    m = WalkableMap.from_trajectory(walks, radius=0.4, max_step=2.0)
    assert m.is_walkable(walks).all()
    assert not m.is_walkable(np.array([[4.0, 3.0], [2.0, 3.0]])).any()
    joined = WalkableMap.from_trajectory(walks, radius=0.4, max_step=None)
    assert joined.is_walkable(np.array([[2.0, 3.0]])).all()  # on the segment from (4, 0) to (0, 6)
    assert m.walkable_area_m2 == pytest.approx(2 * (4 * 0.8 + np.pi * 0.4 ** 2), rel=0.08)
    one = WalkableMap.from_trajectory([[1.0, 2.0]], radius=0.5)  # a single position: a disc
    assert one.walkable_area_m2 == pytest.approx(np.pi * 0.25, rel=0.08)


def test_from_trajectory_checks_its_inputs():
    for bad in (np.zeros((0, 2)), np.zeros((3, 4)), np.zeros(3)):
        with pytest.raises(ValueError, match="positions must be"):
            WalkableMap.from_trajectory(bad)
    with pytest.raises(ValueError, match="NaN"):
        WalkableMap.from_trajectory([[0.0, 0.0], [np.nan, 1.0]])
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="radius"):
            WalkableMap.from_trajectory([[0.0, 0.0]], radius=bad)
        with pytest.raises(ValueError, match="resolution"):
            WalkableMap.from_trajectory([[0.0, 0.0]], resolution=bad)


def test_map_overlap_of_a_trajectory_map_with_the_plan(two_corridors):
    plan_map = WalkableMap.from_plan(two_corridors, resolution=0.05)
    assert map_overlap(plan_map, plan_map)["coverage"] == 1.0 == map_overlap(plan_map, plan_map)["precision"]
    centre_line = np.column_stack([np.linspace(1, 9, 17), np.full(17, 1.25)])  # the south corridor
    walked = WalkableMap.from_trajectory(centre_line, radius=0.5)
    o = map_overlap(plan_map, walked)
    assert o["precision"] == 1.0 and o["other_m2"] == pytest.approx(walked.walkable_area_m2)
    assert o["reference_m2"] == pytest.approx(plan_map.walkable_area_m2)
    assert o["coverage"] == pytest.approx(walked.walkable_area_m2 / plan_map.walkable_area_m2, rel=0.01)
    assert 0.15 < o["coverage"] < 0.25  # 8.8 m x 1 m of 2 x 9.9 m x 2.45 m


def test_time_snap_reports_microseconds():
    m = WalkableMap(np.random.default_rng(1).random((50, 50)) < 0.5, (0, 0), 0.1)
    t = time_snap(m, np.random.default_rng(2).uniform(0, 5, (40, 3)), repeat=1, brute_force=5)
    assert t["points"] == 40 and t["walkable_cells"] == int(m.mask.sum())
    assert all(t[k] > 0 for k in ("single_us", "batch_us", "brute_us"))
    with pytest.raises(ValueError, match="points must be"):
        time_snap(m, np.zeros((0, 2)))


# ---------------------------------------------------------------------------- scoring snapped predictions
@pytest.fixture
def strip():
    """A 5 x 4 m grid of 1 m cells: rows 0 and 3 walkable, rows 1 and 2 (y from 1 to 3) not."""
    mask = np.zeros((4, 5), bool)
    mask[[0, 3]] = True
    return WalkableMap(mask, (0.0, 0.0), 1.0)


# frames A, B, C on walk s1 and D on walk s2: A walkable, B snaps south (closer to its truth),
# C snaps north (the wrong side of the block), D is exact
PRED = np.array([[3.5, 0.5, 1.6], [2.5, 1.5, 1.6], [2.5, 2.5, 1.6], [1.5, 3.5, 1.6]])
TRUE = np.array([[0.5, 0.5, 1.6], [2.5, 0.5, 1.6], [2.5, 0.5, 1.6], [1.5, 3.5, 1.6]])
SEQS = ["s1", "s1", "s1", "s2"]


def test_snap_errors_on_a_hand_made_example(strip):
    f = snap_errors(strip, PRED, TRUE, SEQS, rotation_deg=[1.0, 2.0, 3.0, 4.0])
    assert list(f["off_walkable"]) == [False, True, True, False]
    assert np.allclose(f["position_m"], [3.0, 1.0, 2.0, 0.0])
    assert np.allclose(f["snapped_m"], [3.0, 0.5, 2.5, 0.0], atol=2e-3)
    assert np.allclose(f["snap_m"], [0.0, 0.5, 0.5, 0.0], atol=2e-3)
    assert np.allclose(f["change_m"], f["snapped_m"] - f["position_m"])
    assert np.allclose(f[["x_snap", "y_snap"]].to_numpy()[1:3], [[2.5, 1.0], [2.5, 3.0]], atol=2e-3)
    assert np.array_equal(f["z_snap"], PRED[:, 2]) and list(f["rotation_deg"]) == [1.0, 2.0, 3.0, 4.0]

    t = snap_summary(f)
    assert list(t.index) == ["s1", "s2", "all"]
    s1, s2, all_ = t.loc["s1"], t.loc["s2"], t.loc["all"]
    assert s1["frames"] == 3 and s1["off walkable (%)"] == pytest.approx(200 / 3)
    assert s1["mean snap (m)"] == pytest.approx(0.5, abs=2e-3)
    assert s1["median position (m)"] == pytest.approx(2.0) and s1["median snapped (m)"] == pytest.approx(2.5, abs=2e-3)
    assert s1["median change (m)"] == pytest.approx(0.5, abs=2e-3)
    assert s1["mean position (m)"] == pytest.approx(2.0) and s1["mean snapped (m)"] == pytest.approx(2.0, abs=2e-3)
    assert s1["worse (%)"] == pytest.approx(100 / 3) and s1["better (%)"] == pytest.approx(100 / 3)
    assert s1["worse by > 1 m (%)"] == 0 and s1["largest increase (m)"] == pytest.approx(0.5, abs=2e-3)
    assert s1["median rotation (deg)"] == 2.0  # rotations are carried, not changed
    assert s2["off walkable (%)"] == 0 and s2["mean snap (m)"] == 0 and s2["worse (%)"] == 0
    assert s2["largest increase (m)"] == 0
    assert all_["frames"] == 4 and all_["off walkable (%)"] == 50
    assert all_["median position (m)"] == pytest.approx(1.5)
    assert all_["median snapped (m)"] == pytest.approx(1.5, abs=2e-3)
    assert list(snap_summary(f, overall=False).index) == ["s1", "s2"]


def test_snap_errors_checks_its_inputs_and_keeps_nan_predictions(strip):
    with pytest.raises(ValueError, match="equal"):
        snap_errors(strip, PRED, TRUE[:3])
    with pytest.raises(ValueError, match="one name per frame"):
        snap_errors(strip, PRED, TRUE, ["s1"])
    with pytest.raises(ValueError, match="one error per frame"):
        snap_errors(strip, PRED, TRUE, rotation_deg=[1.0])
    pred = PRED.copy()
    pred[1] = np.nan  # a diverged model's output
    f = snap_errors(strip, pred, TRUE)
    assert set(f["sequence"]) == {"all"} and not f["off_walkable"][1]
    assert np.isnan(f.loc[1, ["x_snap", "snap_m", "position_m", "snapped_m"]].to_numpy(float)).all()
    t = snap_summary(f).loc["all"]
    assert t["off walkable (%)"] == pytest.approx(100 / 3)  # of the finite predictions
    assert np.isnan(t["median position (m)"])  # as the evaluation tables show a diverged model


def _fake_study(name, frames_by_run, relative=()):
    from campose.study import Study, StudyRun

    s = Study("test", name, "truth")
    for label, frames in frames_by_run.items():
        model = SimpleNamespace(in_channels=6 if label in relative else 3)
        s.runs[label] = StudyRun(label, label, {}, SimpleNamespace(model=model),
                                 SimpleNamespace(frames=frames), 0.0)
    return s


def _evaluation_frames(pred, true, seqs, reference="truth"):
    import pandas as pd

    return pd.DataFrame({"reference": reference, "sequence": seqs, "image": [f"{i:06d}.png" for i in range(len(pred))],
                         "frame": np.arange(len(pred)), "x": pred[:, 0], "y": pred[:, 1], "z": pred[:, 2],
                         "x_ref": true[:, 0], "y_ref": true[:, 1], "z_ref": true[:, 2],
                         "position_m": np.linalg.norm(pred - true, axis=1), "rotation_deg": 1.0})


def test_snap_evaluation_and_snap_study(strip):
    import pandas as pd

    truth = _evaluation_frames(PRED, TRUE, SEQS)
    labels = _evaluation_frames(PRED, TRUE + [0.0, 0.1, 0.0], SEQS, "labels")
    both = pd.concat([labels, truth], ignore_index=True)
    f = snap_evaluation(strip, both)
    assert len(f) == 4 and list(f.columns[:3]) == ["sequence", "image", "frame"]
    assert np.allclose(f["position_m"], truth["position_m"])
    assert np.allclose(snap_evaluation(strip, both, "labels")["position_m"], labels["position_m"])
    with pytest.raises(ValueError, match="reference 'gps'"):
        snap_evaluation(strip, both, "gps")

    a = _fake_study("posenet", {"L1": both, "MSE": both})
    b = _fake_study("mapnet", {"L1": both, "pairs": both}, relative=("pairs",))
    frames = snap_study(strip, [a, b])
    assert list(frames.columns[:2]) == ["model", "run"] and len(frames) == 12  # the relative run is skipped
    t = snap_summary(frames, by=["model", "run"])
    assert list(t.index.names) == ["model", "run", "sequence"] and len(t) == 9
    assert t.loc[("mapnet", "L1", "s1"), "worse (%)"] == pytest.approx(100 / 3)
    assert len(snap_study(strip, a)) == 8
    with pytest.raises(ValueError, match="no absolute"):
        snap_study(strip, _fake_study("menet", {"pairs": both}, relative=("pairs",)))


def test_plot_snapping_draws_before_and_after(two_corridors, strip):
    import matplotlib.pyplot as plt

    f = snap_errors(strip, PRED, TRUE, SEQS)
    fig = plot_snapping(two_corridors, strip, f, title="a test")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4  # two walks, before and after
    assert "before" in fig.axes[0].get_title()
    plt.close(fig)
