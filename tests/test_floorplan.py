"""The committed floor plan loads, is consistent, and malformed plans fail with clear messages."""

import copy
import json

import numpy as np
import pytest

from campose.floorplan import DOOR_CLOSED, DOOR_OPEN, WALL, FloorPlanError, floorplan_from_dict, load_floorplan


@pytest.fixture(scope="module")
def plan():
    return load_floorplan()


@pytest.fixture(scope="module")
def raw():
    from campose.floorplan import DEFAULT_PLAN

    return json.loads(DEFAULT_PLAN.read_text())


def test_default_plan_is_a_university_floor(plan):
    w, h = plan.size
    assert 55 <= w <= 65 and 20 <= h <= 30
    kinds = {s.kind for s in plan.spaces}
    assert {"corridor", "classroom", "office", "stairwell", "open area"} <= kinds
    assert (plan.kinds == DOOR_OPEN).sum() >= 5 and (plan.kinds == DOOR_CLOSED).sum() >= 10
    assert len(plan.route_nodes) >= 10


def test_segments_cover_walls_exactly(plan):
    # split pieces of each wall add up to the wall's length and are collinear with it
    for k, wall in enumerate(plan.walls):
        L = np.linalg.norm(wall[2:] - wall[:2])
        pieces = plan.segments[plan.segment_wall == k]
        assert np.isclose(np.linalg.norm(pieces[:, 2:] - pieces[:, :2], axis=1).sum(), L)
        offs = plan.segment_offset[plan.segment_wall == k]
        assert np.all(np.diff(offs) > 0) and offs[0] == 0


def test_corridor_ring_is_walkable_and_rooms_behind_closed_doors_are_not(plan):
    assert plan.is_walkable(np.array([[6.25, 12.0], [30.0, 7.25], [53.75, 12.0], [30.0, 17.75]])).all()
    assert not plan.is_walkable(np.array([[12.5, 12.5]])).any()  # classroom A: closed doors only
    assert not plan.is_walkable(np.array([[-1.0, 5.0], [30.0, 26.0]])).any()
    # clearance: a point 10 cm from the corridor wall is not walkable with 30 cm clearance
    assert plan.is_walkable(np.array([[20.0, 6.1]]))[0]
    assert not plan.is_walkable(np.array([[20.0, 6.1]]), clearance=0.3)[0]


def test_open_door_joins_corridor_and_room(plan):
    # classroom B's open door at x = 22.5 on the wall y = 8.5
    assert plan.is_walkable(np.array([[22.5, 8.5]]))[0]
    assert not plan.is_walkable(np.array([[20.0, 8.5]]))[0]


def test_space_lookup(plan):
    names = [plan.spaces[i].name for i in plan.space_at(np.array([[31.0, 12.0], [6.0, 12.0]]))]
    assert names == ["atrium", "west corridor"]
    assert plan.space_at(np.array([[-5.0, -5.0]]))[0] == -1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("walls"), "missing the key 'walls'"),
        (lambda d: d["walls"][0].update({"to": d["walls"][0]["from"]}), "shorter than 5 cm"),
        (lambda d: d["walls"][1].update({"id": d["walls"][0]["id"]}), "used twice"),
        (lambda d: d["walls"][0].update({"from": [float("nan"), 0]}), "finite number"),
        (lambda d: d["walls"][0].update({"to": [600, 0]}), "outside the bounds"),
        (lambda d: d["doors"][0].update({"wall": "nowhere"}), "unknown wall 'nowhere'"),
        (lambda d: d["doors"][0].update({"at": 0.1}), "does not fit on wall"),
        (lambda d: d["doors"][0].update({"state": "ajar"}), "'open' or 'closed'"),
        (lambda d: d["spaces"][0].update({"polygon": [[0, 0], [1, 1]]}), "at least 3 points"),
        (lambda d: d.update({"wall_height": 0.5}), "not plausible"),
        (lambda d: d.update({"door_height": 5.0}), "door_height"),
        (lambda d: d["routes"]["nodes"].update({"SW": [12.5, 12.5]}), "not on the walkable floor"),
        (lambda d: d["routes"]["edges"].append(["SW", "nowhere"]), "two known route nodes"),
        (lambda d: [s.update({"walkable": False}) for s in d["spaces"]], "no walkable space"),
    ],
)
def test_malformed_plans_fail_clearly(raw, mutate, message):
    d = copy.deepcopy(raw)
    mutate(d)
    with pytest.raises(FloorPlanError, match=message):
        floorplan_from_dict(d)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_floorplan(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FloorPlanError, match="not valid JSON"):
        load_floorplan(bad)


def test_plot(plan):
    import matplotlib

    matplotlib.use("Agg")
    ax = plan.plot(routes=True, labels=True)
    assert len(ax.lines) >= len(plan.segments)
