"""Walk-throughs: on the walkable floor, at walking speed, turning gradually, deterministic."""

import numpy as np
import pytest

from campose.floorplan import load_floorplan
from campose.geometry import camera_yaw_pitch_roll, quat_to_matrix
from campose.trajectory import shortest_path, simulate_walk


@pytest.fixture(scope="module")
def plan():
    return load_floorplan()


@pytest.fixture(scope="module")
def walk(plan):
    return simulate_walk(plan, ["SW", "cls8", "atrium", "NE", "SE"], fps=10, seed=5, name="w")


def test_walk_stays_on_walkable_floor(plan, walk):
    assert plan.is_walkable(walk.x[:, :2], clearance=0.2).all()


def test_walking_speed_and_height(walk):
    v = np.linalg.norm(np.diff(walk.x[:, :2], axis=0), axis=1) * 10
    assert 0.9 < np.median(v) < 1.4
    assert v.max() < 2.0
    assert np.all(np.abs(walk.x[:, 2] - 1.6) < 0.05)


def test_turns_are_gradual(walk):
    R = quat_to_matrix(walk.q)
    fwd = R[:, :, 2]
    step = np.degrees(np.arccos(np.clip((fwd[1:] * fwd[:-1]).sum(1), -1, 1)))
    assert step.max() < 12  # degrees per frame at 10 fps
    yaw, pitch, roll = camera_yaw_pitch_roll(walk.q)
    assert np.all(np.abs(np.degrees(roll)) < 8) and np.all(np.abs(np.degrees(pitch) + 4) < 10)


def test_unit_quaternions_and_determinism(plan, walk):
    assert np.allclose(np.linalg.norm(walk.q, axis=1), 1)
    again = simulate_walk(plan, ["SW", "cls8", "atrium", "NE", "SE"], fps=10, seed=5, name="w")
    assert np.array_equal(walk.x, again.x) and np.array_equal(walk.q, again.q)
    other = simulate_walk(plan, ["SW", "cls8", "atrium", "NE", "SE"], fps=10, seed=6, name="w")
    assert not np.allclose(walk.x[: len(other)][:50], other.x[:50])


def test_route_follows_the_graph(plan, walk):
    assert walk.route[0] == "SW" and walk.route[-1] == "SE"
    assert shortest_path(plan, "SW", "NW") == ["SW", "NW"]
    with pytest.raises(KeyError, match="unknown route node"):
        shortest_path(plan, "SW", "nowhere")
    with pytest.raises(ValueError, match="at least two"):
        simulate_walk(plan, ["SW"])
