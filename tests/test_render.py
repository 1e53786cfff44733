"""The ray caster: geometry of what it draws (depths against the plan), determinism, texture."""

import numpy as np
import pytest

from campose.camera import Intrinsics
from campose.floorplan import load_floorplan
from campose.geometry import camera_rotation
from campose.render import PoseOutsideBuildingError, Renderer

K = Intrinsics.from_fov(160, 120, 65.0)


@pytest.fixture(scope="module")
def renderer():
    return Renderer(load_floorplan(), seed=0)


def centre_depth(r, x, yaw, pitch=0.0):
    _, depth = r.render(x, camera_rotation(yaw, pitch), K, return_depth=True)
    return float(depth[K.height // 2 - 1: K.height // 2 + 1, K.width // 2 - 1: K.width // 2 + 1].mean())


def test_image_shape_and_type(renderer):
    img = renderer.render((20.0, 7.25, 1.6), camera_rotation(0.0), K)
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    assert img.std() > 20  # textured, not flat


def test_depth_to_corridor_walls(renderer):
    # south corridor between y = 6 and y = 8.5: walls 1.25 m away either side at x = 20
    assert centre_depth(renderer, (20.0, 7.25, 1.6), -np.pi / 2) == pytest.approx(1.25, abs=0.01)
    assert centre_depth(renderer, (20.0, 7.25, 1.6), np.pi / 2) == pytest.approx(1.25, abs=0.01)
    # looking east along the corridor, the east corridor's far wall x = 55 is 35 m away
    assert centre_depth(renderer, (20.0, 7.25, 1.6), 0.0) == pytest.approx(35.0, abs=0.05)


def test_depth_to_floor_and_ceiling(renderer):
    d = centre_depth(renderer, (20.0, 7.25, 1.6), 0.0, pitch=-np.radians(60))
    assert d == pytest.approx(1.6 / np.sin(np.radians(60)), abs=0.01)
    d = centre_depth(renderer, (20.0, 7.25, 1.6), 0.0, pitch=np.radians(60))
    assert d == pytest.approx(1.4 / np.sin(np.radians(60)), abs=0.01)


def test_open_door_and_lintel(renderer):
    # classroom B's open door (x 21.9..23.1 on y = 8.5): eye-level rays pass into the room
    assert centre_depth(renderer, (22.5, 7.25, 1.6), np.pi / 2) == pytest.approx(16.5 - 7.25, abs=0.02)
    # a ray tilted up meets the lintel above the 2.1 m door: z(8.5) = 1.6 + 1.25 tan(pitch) > 2.1
    pitch = np.radians(35)
    d = centre_depth(renderer, (22.5, 7.25, 1.6), np.pi / 2, pitch=pitch)
    assert d == pytest.approx(1.25 / np.cos(pitch), abs=0.02)
    # a closed door (classroom A, x = 12.5) blocks the view like a wall
    assert centre_depth(renderer, (12.5, 7.25, 1.6), np.pi / 2) == pytest.approx(1.25, abs=0.01)


def test_deterministic_for_a_seed():
    plan = load_floorplan()
    a, b, c = (Renderer(plan, seed=s, wall_res=32, floor_res=16, ceil_res=16, texture_cache=False) for s in (3, 3, 4))
    pose = ((31.0, 12.0, 1.6), camera_rotation(0.3, -0.05, 0.02))
    ia, ib, ic = (r.render(*pose, K) for r in (a, b, c))
    assert np.array_equal(ia, ib)
    assert np.abs(ia.astype(int) - ic.astype(int)).mean() > 10


def test_no_two_walls_alike(renderer):
    # the same relative view of two different corridor stretches must differ
    q = camera_rotation(-np.pi / 2)
    a = renderer.render((15.0, 7.25, 1.6), q, K).astype(int)
    b = renderer.render((40.0, 7.25, 1.6), q, K).astype(int)
    assert np.abs(a - b).mean() > 20


def test_enough_sift_features_for_sfm(renderer):
    from campose.sfm import sift_keypoints

    img = renderer.render((20.0, 7.25, 1.6), camera_rotation(0.2, -0.05), Intrinsics.from_fov(640, 480))
    assert len(sift_keypoints(img)) > 1000


@pytest.mark.parametrize("x", [(-1.0, 5.0, 1.6), (12.5, 12.5, 5.0), (20.0, 7.25, -0.2), (30.0, 30.0, 1.6)])
def test_pose_outside_building(renderer, x):
    with pytest.raises(PoseOutsideBuildingError, match="outside the building"):
        renderer.render(x, camera_rotation(0.0), K)


def test_bad_quaternion(renderer):
    with pytest.raises(ValueError, match="unit quaternion"):
        renderer.render((20.0, 7.25, 1.6), (1.0, 0.5, 0.0, 0.0), K)
    with pytest.raises(ValueError):
        renderer.render((20.0, 7.25, np.nan), (1.0, 0.0, 0.0, 0.0), K)


def test_painted_textures_are_kept_on_disk(tmp_path, monkeypatch):
    """The second renderer of a plan and seed loads the first one's textures (bit for bit); a damaged
    file is painted again; a changed plan, seed or resolution has its own key; ``off`` keeps nothing."""
    import dataclasses

    from campose import render

    monkeypatch.setenv("CAMPOSE_CACHE", str(tmp_path / "cache"))
    plan = load_floorplan()
    small = dict(wall_res=32, floor_res=16, ceil_res=16)
    first = render.cached_textures(plan, 5, **small)
    files = list((tmp_path / "cache" / "textures").glob("*.npz"))
    assert len(files) == 1
    painted = []  # from here on "painting" hands back the first result (painting costs seconds)
    monkeypatch.setattr(render, "build_textures", lambda *a, **k: painted.append(1) or first)
    again = render.cached_textures(plan, 5, **small)
    assert painted == []  # loaded, not painted
    for f in dataclasses.fields(first):
        u, v = getattr(first, f.name), getattr(again, f.name)
        pairs = zip(u, v) if isinstance(u, tuple) else [(u, v)]
        assert all(np.array_equal(a, b) and type(np.asarray(a).item(0)) == type(np.asarray(b).item(0))
                   for a, b in pairs), f.name
    pose = ((31.0, 12.0, 1.6), camera_rotation(0.3, -0.05, 0.02))
    loaded = Renderer(plan, seed=5, **small)
    assert painted == []
    with_first = Renderer(plan, seed=5, **small, texture_cache=False)  # the stand-in hands it `first`
    assert painted == [1] and np.array_equal(loaded.render(*pose, K), with_first.render(*pose, K))
    files[0].write_bytes(b"not a texture file")
    render.cached_textures(plan, 5, **small)
    assert painted == [1, 1] and np.load(files[0])["wall_res"] == 32  # painted again and replaced

    key = render.texture_key(plan, 5, 32, 16, 16)
    assert key != render.texture_key(plan, 6, 32, 16, 16) != render.texture_key(plan, 5, 64, 16, 16)
    assert key != render.texture_key(dataclasses.replace(plan, wall_height=plan.wall_height + 0.1), 5, 32, 16, 16)
    monkeypatch.setenv("CAMPOSE_CACHE", "off")
    assert render.texture_cache_dir() is None
    render.cached_textures(plan, 7, **small)
    assert painted == [1, 1, 1] and len(list((tmp_path / "cache" / "textures").glob("*.npz"))) == 1
