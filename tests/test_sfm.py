"""campose.sfm: the COLMAP pose conversion, input errors, save/load, and one real reconstruction."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from campose import geometry, sfm  # noqa: E402
from campose.align import align_with_control_points, pick_control_points  # noqa: E402
from campose.camera import Intrinsics  # noqa: E402

CASTLE = Path("/work/shared/data/real/castle-P30")


# ---------------------------------------------------------------------------- helpers
def _cam_from_world(x, q):
    """A pycolmap.Rigid3d (world-to-camera) made from our camera-to-world pose."""
    R_cw, t_cw = geometry.world_to_camera(x, q)
    return pycolmap.Rigid3d(pycolmap.Rotation3d(R_cw), t_cw)


def _toy_reconstruction(poses: dict[str, tuple[np.ndarray, np.ndarray]]):
    """A Reconstruction with one PINHOLE camera, posed images (ids in reverse name order) and two points."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=640, height=480,
                                                    params=[500.0, 500.0, 320.0, 240.0], camera_id=1))
    for i, (name, (x, q)) in enumerate(sorted(poses.items(), reverse=True), start=1):
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=i), _cam_from_world(x, q))
    rec.add_point3D(np.array([1.0, 2.0, 0.5]), pycolmap.Track(), np.array([10, 20, 30], np.uint8))
    rec.add_point3D(np.array([-1.0, 3.0, 1.5]), pycolmap.Track(), np.array([200, 100, 0], np.uint8))
    return rec


def _write_png(path: Path, seed: int = 0, size=(96, 128)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, size + (3,), dtype=np.uint8)).save(path)


# ---------------------------------------------------------------------------- conversion
def test_pose_from_cam_from_world_inverts_world_to_camera():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = geometry.camera_rotation(rng.uniform(-np.pi, np.pi), rng.uniform(-1.2, 1.2), rng.uniform(-0.5, 0.5))
        x = rng.uniform(-20, 20, 3)
        T = _cam_from_world(x, q)
        # COLMAP's own view of the same pose: quaternion x, y, z, w of world-to-camera; centre
        np.testing.assert_allclose(T.tgt_origin_in_src(), x, atol=1e-9)
        xyzw = np.asarray(T.rotation.quat)
        assert geometry.rotation_error_deg(np.r_[xyzw[3], -xyzw[:3]], q) < 1e-6
        x2, q2 = sfm.pose_from_cam_from_world(T)
        np.testing.assert_allclose(x2, x, atol=1e-9)
        np.testing.assert_allclose(q2, q, atol=1e-9)
        assert q2[0] >= 0


def test_poses_from_reconstruction_maps_by_name_and_agrees_with_projection_center():
    qs = geometry.camera_rotation(np.array([0.0, 1.0, 2.0]), np.array([0.1, -0.2, 0.0]))
    xs = np.array([[0.0, 0.0, 1.6], [2.0, 1.0, 1.5], [-1.0, 4.0, 1.7]])
    poses = {f"seq-01/{i:06d}.png": (xs[i], qs[i]) for i in range(3)}
    rec = _toy_reconstruction(poses)
    names, x, q = sfm.poses_from_reconstruction(rec)
    assert names == sorted(poses)  # image ids were assigned in reverse order
    for n, xi, qi in zip(names, x, q):
        np.testing.assert_allclose(xi, poses[n][0], atol=1e-9)
        assert geometry.rotation_error_deg(qi, poses[n][1]) < 1e-6
        np.testing.assert_allclose(xi, rec.find_image_with_name(n).projection_center(), atol=1e-9)
    names2, x2, _ = sfm.poses_from_reconstruction(rec, ["seq-01/000002.png", "missing.png", "seq-01/000000.png"])
    assert names2 == ["seq-01/000002.png", "seq-01/000000.png"]
    np.testing.assert_allclose(x2, xs[[2, 0]], atol=1e-9)


def test_save_load_roundtrip(tmp_path):
    qs = geometry.camera_rotation(np.array([0.3, 1.3, 2.3]))
    xs = np.array([[0.0, 0.0, 1.6], [2.0, 1.0, 1.5], [-1.0, 4.0, 1.7]])
    rec = _toy_reconstruction({f"{i:04d}.jpg": (xs[i], qs[i]) for i in range(3)})
    names, x, q = sfm.poses_from_reconstruction(rec)
    r = sfm.SfmResult(names, x, q, np.zeros((2, 3)), np.zeros((2, 3), np.uint8), np.zeros(2), 3, 4, 2, [3, 1],
                      {"extract": 1.0, "match": 2.0, "map": 3.0}, {"model": "PINHOLE"}, None,
                      unregistered=["0003.jpg"], reconstruction=rec)
    assert r.registration_rate() == 0.75
    out = r.save(tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["model", "poses.csv", "sfm.json"]
    assert json.loads((out / "sfm.json").read_text())["model_sizes"] == [3, 1]
    r2 = sfm.SfmResult.load(out)
    assert r2.names == names and r2.registered == 3 and r2.total == 4 and r2.num_models == 2
    np.testing.assert_allclose(r2.x, x, atol=1e-12)
    np.testing.assert_allclose(r2.q, q, atol=1e-12)
    np.testing.assert_allclose(np.sort(r2.points[:, 0]), [-1.0, 1.0])
    assert r2.point_colors.dtype == np.uint8 and r2.timings == r.timings
    xp, qp = r2.pose_of("0001.jpg")
    np.testing.assert_allclose(xp, xs[1], atol=1e-12)
    with pytest.raises(KeyError, match="was not registered"):
        r2.pose_of("0003.jpg")
    with pytest.raises(KeyError, match="not one of the input images"):
        r2.pose_of("nope.jpg")
    from campose.dataset import read_poses

    n3, x3, _ = read_poses(out / "poses.csv")
    assert n3 == names and np.allclose(x3, x)


def test_read_colmap_text_model_and_camera(tmp_path):
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 640 480 500 510 320 240\n")
    q = geometry.camera_rotation(0.5, 0.1)
    x = np.array([1.0, 2.0, 1.5])
    R_cw, t_cw = geometry.world_to_camera(x, q)
    qw, qx, qy, qz = geometry.matrix_to_quat(R_cw)  # COLMAP text: QW QX QY QZ TX TY TZ (world-to-camera)
    (tmp_path / "images.txt").write_text(f"3 {qw} {qx} {qy} {qz} {t_cw[0]} {t_cw[1]} {t_cw[2]} 1 seq/b.png\n\n"
                                         f"5 1 0 0 0 0 0 0 1 seq/a.png\n\n")
    (tmp_path / "points3D.txt").write_text("")
    names, xs, qs = sfm.read_colmap_text_model(tmp_path)
    assert names == ["seq/a.png", "seq/b.png"]
    np.testing.assert_allclose(xs[1], x, atol=1e-9)
    assert geometry.rotation_error_deg(qs[1], q) < 1e-6
    np.testing.assert_allclose(qs[0], [1, 0, 0, 0])
    assert sfm.read_colmap_camera(tmp_path) == Intrinsics(640, 480, 500.0, 510.0, 320.0, 240.0)
    with pytest.raises(sfm.SfmError, match="model folder not found"):
        sfm.read_colmap_text_model(tmp_path / "nope")
    (tmp_path / "points3D.txt").unlink()
    with pytest.raises(sfm.SfmError, match="no complete COLMAP model"):
        sfm.read_colmap_text_model(tmp_path)


# ---------------------------------------------------------------------------- input errors (fast)
def test_missing_folder(tmp_path):
    with pytest.raises(sfm.SfmError, match="image folder not found"):
        sfm.reconstruct(tmp_path / "nope", tmp_path / "out")


def test_empty_folder(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(sfm.SfmError, match="no images in .*it is empty"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out")


def test_only_a_text_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    with pytest.raises(sfm.SfmError, match="no images in .*'notes.txt'"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out")


def test_no_readable_images(tmp_path):
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "img" / f"{i}.png").write_text("not a png")
    with pytest.raises(sfm.SfmError, match="no readable images"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out")


def test_fewer_than_three_images(tmp_path):
    for i in range(2):
        _write_png(tmp_path / "img" / f"{i}.png", i)
    with pytest.raises(sfm.SfmError, match="at least 3 images, got 2"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out")


def test_bad_arguments(tmp_path):
    for i in range(3):
        _write_png(tmp_path / "img" / "seq-01" / f"{i:06d}.png", i)
    assert sfm.list_images(tmp_path / "img") == [f"seq-01/{i:06d}.png" for i in range(3)]
    with pytest.raises(sfm.SfmError, match="intrinsics are for 640x480"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out", intrinsics=Intrinsics.from_fov(640, 480))
    with pytest.raises(sfm.SfmError, match="matcher must be"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out", matcher="vocabtree")
    with pytest.raises(sfm.SfmError, match="min_inliers must be >= 1"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out", min_inliers=0)
    with pytest.raises(sfm.SfmError, match="global_tracks_per_view must be >= 1"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out", mapper="global", global_tracks_per_view=0)
    with pytest.raises(sfm.SfmError, match="not one of the"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out", loop_pairs=[("seq-01/000000.png", "x.png")])
    with pytest.raises(sfm.SfmError, match="missing"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out", image_names=["seq-01/000000.png", "a.png", "b.png"])


def test_extract_and_match_features_fill_a_database(tmp_path):
    """The two steps reconstruct and localize.build_map share: one camera, keypoints, pairs matched."""
    names = [f"{i:03d}.png" for i in range(3)]
    for i, n in enumerate(names):
        _write_png(tmp_path / "img" / n, i)
    db = tmp_path / "database.db"
    sfm.extract_features(db, tmp_path / "img", names, Intrinsics.from_fov(128, 96), max_num_features=300,
                         num_threads=1)
    with pycolmap.Database.open(str(db)) as d:
        images = d.read_all_images()
        assert sorted(im.name for im in images) == names
        assert {im.camera_id for im in images} == {images[0].camera_id}
        assert d.read_camera(images[0].camera_id).model.name == "PINHOLE"
        assert 0 < d.num_keypoints() <= 3 * 300
    found = sfm.match_features(db, names, tmp_path / "pairs.txt", matcher="sequential", overlap=1,
                               extra_pairs=[("000.png", "002.png"), ("000.png", "not-there.png")], num_threads=1)
    assert found == []  # no retrieval asked for
    assert (tmp_path / "pairs.txt").read_text() == "000.png 002.png\n"  # the unknown image is left out
    with pycolmap.Database.open(str(db)) as d:
        assert d.num_matched_image_pairs() == 3  # 000-001 and 001-002 in sequence, 000-002 from the list
    with pytest.raises(sfm.SfmError, match="matcher must be"):
        sfm.match_features(db, names, tmp_path / "p.txt", matcher="vocabtree")


def test_drop_weak_pairs_removes_only_pairs_under_the_threshold(tmp_path):
    """Verified pairs with few inliers (false matches between look-alike places) leave the pose graph."""
    db_path = tmp_path / "database.db"
    counts = {(0, 1): 40, (1, 2): 29, (0, 2): 30, (2, 3): 3}
    with pycolmap.Database.open(str(db_path)) as db:
        cid = db.write_camera(pycolmap.Camera.create_from_model_name(1, "PINHOLE", 100.0, 64, 48))
        ids = [db.write_image(pycolmap.Image(name=f"{i}.png", camera_id=cid)) for i in range(4)]
        for (a, b), n in counts.items():
            g = pycolmap.TwoViewGeometry()
            g.config = pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
            g.inlier_matches = np.c_[np.arange(n), np.arange(n)].astype(np.uint32)
            db.write_two_view_geometry(ids[a], ids[b], g)
    assert sfm.drop_weak_pairs(db_path, 30) == (2, 2)
    with pycolmap.Database.open(str(db_path)) as db:
        pair_ids, n = db.read_two_view_geometry_num_inliers()
        left = {tuple(ids.index(i) for i in pycolmap.pair_id_to_image_pair(p)): k for p, k in zip(pair_ids, n)}
    assert left == {(0, 1): 40, (0, 2): 30}
    assert sfm.drop_weak_pairs(db_path, 30) == (0, 2)  # idempotent
    assert sfm.COLMAP_MIN_INLIERS == pycolmap.TwoViewGeometryOptions().min_num_inliers  # reconstruct's default
    with pytest.raises(sfm.SfmError, match="min_inliers must be >= 1"):
        sfm.drop_weak_pairs(db_path, 0)


def test_verified_pair_errors_tell_true_pairs_from_false_ones(tmp_path):
    """Matches projected from known poses sit on the true epipolar lines (0 px); shuffled ones do not."""
    K = Intrinsics.from_fov(640, 480, 60.0)
    rng = np.random.default_rng(0)
    X = rng.uniform([6, -2, -1], [10, 2, 3], size=(50, 3))  # ahead of cameras looking east (+x)
    poses = {f"{i}.png": (np.array([0.3 * i, 0.1 * i, 0.0]), geometry.camera_rotation(np.array([0.05 * i]))[0])
             for i in range(4)}
    db_path = tmp_path / "database.db"
    with pycolmap.Database.open(str(db_path)) as db:
        cid = db.write_camera(pycolmap.Camera.create_from_model_name(1, "PINHOLE", K.fx, 640, 480))
        ids = {}
        for name, (x, q) in poses.items():
            ids[name] = db.write_image(pycolmap.Image(name=name, camera_id=cid))
            R, t = geometry.world_to_camera(x, q)
            pc = X @ R.T + t
            assert (pc[:, 2] > 1).all()
            uv = pc[:, :2] / pc[:, 2:] * K.fx + [320.0, 240.0]
            db.write_keypoints(ids[name], uv.astype(np.float32))
        for a, b, shuffle in [("0.png", "1.png", False), ("1.png", "2.png", True), ("2.png", "3.png", False)]:
            g = pycolmap.TwoViewGeometry()
            g.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            j = rng.permutation(50) if shuffle else np.arange(50)
            g.inlier_matches = np.c_[np.arange(50), j].astype(np.uint32)
            db.write_two_view_geometry(ids[a], ids[b], g)
    rows = {(r["a"], r["b"]): r for r in sfm.verified_pair_errors(db_path, poses)}
    assert set(rows) == {("0.png", "1.png"), ("1.png", "2.png"), ("2.png", "3.png")}
    assert rows[("0.png", "1.png")]["sampson_px"] < 1e-3 and rows[("2.png", "3.png")]["sampson_px"] < 1e-3
    assert rows[("1.png", "2.png")]["sampson_px"] > 5.0
    assert rows[("0.png", "1.png")]["inliers"] == 50 and rows[("0.png", "1.png")]["config"] == "CALIBRATED"
    assert rows[("0.png", "1.png")]["distance_m"] == pytest.approx(np.hypot(0.3, 0.1))
    del poses["3.png"]  # pairs with an image of unknown pose are skipped
    assert {(r["a"], r["b"]) for r in sfm.verified_pair_errors(db_path, poses)} == {("0.png", "1.png"), ("1.png", "2.png")}


def test_nothing_registered_is_a_clear_error(tmp_path, capsys):
    """Noise images have keypoints but no geometric matches: the mapper builds no model (~1 s)."""
    for i in range(3):
        _write_png(tmp_path / "img" / f"{i:03d}.png", i)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "database.db").write_text("stale")  # must be replaced, not reused
    with pytest.raises(sfm.SfmError, match="no model could be built.*texture/overlap"):
        sfm.reconstruct(tmp_path / "img", tmp_path / "out")
    assert "sfm extract" in capsys.readouterr().out


def test_several_models_keep_the_largest_and_warn(tmp_path, monkeypatch, capsys):
    """The mapper is replaced by one returning two models: the larger is kept, the sizes reported."""
    names = [f"seq-0{s}/{i:06d}.png" for s in (1, 2) for i in range(2)]
    for k, n in enumerate(names):
        _write_png(tmp_path / "img" / n, k)
    qs = geometry.camera_rotation(np.array([0.0, 0.5, 1.0]))
    xs = np.array([[0.0, 0.0, 1.5], [1.0, 0.0, 1.5], [2.0, 0.0, 1.5]])
    big = _toy_reconstruction({n: (xs[i], qs[i]) for i, n in enumerate(names[1:])})
    small = _toy_reconstruction({names[0]: (xs[0], qs[0])})
    seen = {}

    def fake_mapping(database_path, image_path, output_path, options):
        seen.update(threads=options.num_threads, seed=options.random_seed, focal=options.ba_refine_focal_length)
        with pycolmap.Database.open(database_path) as db:
            seen["names"] = sorted(im.name for im in db.read_all_images())
        return {0: small, 1: big}

    monkeypatch.setattr(pycolmap, "incremental_mapping", fake_mapping)
    with pytest.warns(sfm.SfmWarning, match=r"2 models of \[3, 1\] images"):
        r = sfm.reconstruct(tmp_path / "img", tmp_path / "out", intrinsics=Intrinsics.from_fov(128, 96),
                            num_threads=1, seed=7)
    assert seen == {"threads": 1, "seed": 7, "focal": False, "names": names}
    assert r.names == names[1:] and r.unregistered == names[:1]
    assert (r.registered, r.total, r.num_models, r.model_sizes) == (3, 4, 2, [3, 1])
    np.testing.assert_allclose(r.x, xs, atol=1e-9)
    np.testing.assert_allclose(r.pose_of(names[2])[0], xs[1], atol=1e-9)
    assert r.model_dir == tmp_path / "out" / "sparse" / "1" and (r.model_dir / "images.bin").is_file()
    assert set(r.timings) == {"extract", "match", "map"}
    out = capsys.readouterr().out
    assert "sfm extract" in out and "sfm match" in out and "sfm map" in out


# ---------------------------------------------------------------------------- real photographs
@pytest.mark.slow
def test_castle_p30_matches_ground_truth(tmp_path):
    """30 real photos (1024x683) with known intrinsics: about 50 s on 2 cores (sequential + 3 loop pairs)."""
    if not (CASTLE / "images").is_dir() or not (CASTLE / "gt_colmap" / "images.txt").is_file():
        pytest.skip(f"castle-P30 photographs not found at {CASTLE} (images/ and gt_colmap/); see its README")
    from PIL import Image

    K = sfm.read_colmap_camera(CASTLE / "gt_colmap")
    gt_names, gt_x, gt_q = sfm.read_colmap_text_model(CASTLE / "gt_colmap")
    with Image.open(CASTLE / "images" / gt_names[0]) as im:
        assert im.size == (K.width, K.height), "gt_colmap's camera must be for the downscaled images"

    loops = [("0000.jpg", "0029.jpg"), ("0001.jpg", "0028.jpg"), ("0002.jpg", "0029.jpg")]
    t0 = time.perf_counter()
    r = sfm.reconstruct(CASTLE / "images", tmp_path / "sfm", intrinsics=K, matcher="sequential", overlap=10,
                        loop_pairs=loops, num_threads=2, seed=0)
    wall = time.perf_counter() - t0

    assert r.total == 30 and r.registered >= 28 and r.model_sizes[0] == r.registered
    assert np.allclose(r.camera["params"], [K.fx, K.fy, K.cx, K.cy])  # held fixed
    assert len(r.points) > 1000 and r.point_colors.dtype == np.uint8 and np.all(r.point_errors < 4.5)
    with pycolmap.Database.open(r.database_path) as db:  # the explicit loop pairs were matched and verified
        ids = {im.name: im.image_id for im in db.read_all_images()}
        assert all(db.exists_two_view_geometry(ids[a], ids[b]) for a, b in loops)

    # align as a user would: eight surveyed camera positions (spread out, 1 cm survey noise), then
    # compare every aligned camera with the ground truth
    idx = [gt_names.index(n) for n in r.names]
    ctrl, _ = pick_control_points(gt_x[idx], r.names, gt_x[idx], 8, radius=0.01)
    measured = gt_x[idx][ctrl] + np.random.default_rng(0).normal(0, 0.01, (8, 3))
    rep = align_with_control_points(r.x[ctrl], measured, names=[r.names[i] for i in ctrl])
    assert rep.rms < 0.2  # metres, at the eight control cameras
    xa, qa = rep.transform.apply_poses(r.x, r.q)
    pos = geometry.position_error(xa, gt_x[idx])
    rot = geometry.rotation_error_deg(qa, gt_q[idx])
    print(f"\ncastle-P30: {r.registered}/{r.total} registered in {r.num_models} model(s); "
          f"position error median {np.median(pos):.3f} m (mean {pos.mean():.3f}), rotation error median "
          f"{np.median(rot):.3f} deg (mean {rot.mean():.3f}); {r.timings} s, {wall:.1f} s in all")
    assert np.median(pos) < 0.10
    assert np.median(rot) < 0.5

    r2 = sfm.SfmResult.load(r.save(tmp_path / "saved"))
    assert r2.names == r.names and np.allclose(r2.x, r.x) and np.allclose(r2.q, r.q)
    assert len(r2.points) == len(r.points)
