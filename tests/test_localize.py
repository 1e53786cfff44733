"""campose.localize: a map from renders with known poses, both baselines on held-out frames, bad
inputs, the profile stage and its evaluation, and real photographs (castle-P30)."""

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycolmap")

from campose import geometry, localize, pipeline  # noqa: E402
from campose.camera import Intrinsics  # noqa: E402
from campose.dataset import write_sequence  # noqa: E402
from campose.localize import LocalizeError  # noqa: E402

CASTLE = Path("/work/shared/data/real/castle-P30")

# A stretch of the default floor's south corridor (y = 7.25 m) looking east-ish: map frames every
# 0.5 m with the head turning, test frames between them.
MAP_X = np.arange(14.0, 20.01, 0.5)
MAP_YAW = 0.35 * np.sin(np.arange(len(MAP_X)))
TEST_X = np.array([15.25, 16.8, 18.6])
TEST_YAW = np.array([0.1, -0.2, 0.25])


def _poses(xs, yaws):
    x = np.c_[xs, np.full(len(xs), 7.25), np.full(len(xs), 1.6)]
    return x, geometry.camera_rotation(yaws, np.full(len(xs), -0.05))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A profile ``loctest`` (320x240, labels = truth) whose render stage holds a training walk
    ``loc-train`` (13 frames) and a test walk ``loc-test`` (3 frames); its map built through
    :func:`localize.profile_map` (about 20 s on 2 cores)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        specs = {"loc-train": pipeline.SequenceSpec("loc-train", "train", ("S-cls8", "S-clsB"), 51),
                 "loc-test": pipeline.SequenceSpec("loc-test", "test", ("S-clsB", "S-cls8"), 52)}
        mp.setenv("CAMPOSE_DATA", str(root))
        mp.setenv("CAMPOSE_PROGRESS", "0")
        mp.setattr(pipeline, "SEQUENCES", {**pipeline.SEQUENCES, **specs})
        prof = pipeline.profile_with("quick", name="loctest", sequences=tuple(specs), render_size=(320, 240),
                                     labels="truth", sfm={**pipeline.SFM_DEFAULTS, "overlap": 4, "retrieval": 2})
        mp.setitem(pipeline.PROFILES, "loctest", prof)
        K = prof.intrinsics()
        renderer = pipeline.get_renderer(prof)
        out = pipeline.stage_dir(prof, "render")
        for name, (xs, yaws) in {"loc-train": (MAP_X, MAP_YAW), "loc-test": (TEST_X, TEST_YAW)}.items():
            x, q = _poses(xs, yaws)
            write_sequence(out / name, (renderer.render(x[i], q[i], K) for i in range(len(x))), x, q, K,
                           {"split": specs[name].split})
        pipeline.mark_stage(out, pipeline.render_key(prof), {"written_by": "tests/test_localize.py"})
        t0 = time.perf_counter()
        m = localize.profile_map(prof, progress=False)
        built = time.perf_counter() - t0
        yield {"profile": prof, "map": m, "built_s": built, "K": K, "render": out,
               "test": pipeline.render_dataset(prof)["loc-test"], "mp": mp}


@pytest.fixture(scope="module")
def structure(scene):
    return localize.StructureLocalizer(scene["map"])


# ---------------------------------------------------------------------------- the map
def test_cam_from_world_from_pose_inverts_pose_from_cam_from_world():
    from campose.sfm import cam_from_world_from_pose, pose_from_cam_from_world

    x, q = np.array([3.0, -2.0, 1.5]), geometry.camera_rotation(2.5, 0.2, -0.1)
    T = cam_from_world_from_pose(x, q)
    np.testing.assert_allclose(T.tgt_origin_in_src(), x, atol=1e-12)  # COLMAP's own camera centre
    x2, q2 = pose_from_cam_from_world(T)
    np.testing.assert_allclose(x2, x, atol=1e-12)
    np.testing.assert_allclose(q2, q, atol=1e-12)


def test_map_holds_the_training_frames_with_their_poses(scene):
    m = scene["map"]
    x, q = _poses(MAP_X, MAP_YAW)
    assert m.names == [f"loc-train/images/{i:06d}.png" for i in range(len(MAP_X))]
    np.testing.assert_allclose(m.x, x, atol=1e-6)
    assert np.all(geometry.rotation_error_deg(m.q, q) < 1e-4)
    K = scene["K"]
    assert m.intrinsics == K
    assert len(m.points) > 300 and m.obs_descriptors.shape == (len(m.obs_point), 128)
    assert m.offsets[-1] == len(m.obs_point) and np.all(np.diff(m.offsets) > 30)
    # the points are where the renderer drew the surfaces: depth along a map camera's axis agrees
    i = 6
    R_cw, t_cw = geometry.world_to_camera(m.x[i], m.q[i])
    pc = m.points[m.observations(i)[0]] @ R_cw.T + t_cw
    u, v = K.fx * pc[:, 0] / pc[:, 2] + K.cx, K.fy * pc[:, 1] / pc[:, 2] + K.cy
    _, depth = pipeline.get_renderer(scene["profile"]).render(m.x[i], m.q[i], K, return_depth=True)
    rel = np.abs(depth[np.floor(v).astype(int), np.floor(u).astype(int)] / pc[:, 2] - 1)
    assert np.all(pc[:, 2] > 0) and np.median(rel) < 0.02 and np.mean(rel < 0.1) > 0.85  # 0.5 m baselines
    assert m.bow.shape == (len(m), len(m.words)) and np.allclose(np.linalg.norm(m.bow, axis=1), 1, atol=1e-5)
    assert m.thumbnails.shape == (len(m), 32 * 24) and m.megabytes() > 0


def test_profile_map_is_cached(scene, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the cached map was rebuilt")

    monkeypatch.setattr(localize, "build_map", fail)
    t0 = time.perf_counter()
    m2 = localize.profile_map(scene["profile"])
    assert time.perf_counter() - t0 < 5 and m2.names == scene["map"].names
    np.testing.assert_array_equal(m2.points, scene["map"].points)


def test_save_load_roundtrip(scene, tmp_path):
    m = scene["map"]
    m2 = localize.LocalizationMap.load(m.save(tmp_path / "map"))
    for a in localize.LocalizationMap._ARRAYS:
        np.testing.assert_array_equal(getattr(m2, a), getattr(m, a))
    assert m2.names == m.names and m2.intrinsics == m.intrinsics and m2.thumbnail_size == m.thumbnail_size
    with pytest.raises(LocalizeError, match="not a saved localization map"):
        localize.LocalizationMap.load(tmp_path / "nope")


# ---------------------------------------------------------------------------- structure-based
def test_a_map_image_gets_its_own_pose(scene, structure):
    """The pose conversion both ways: a map image localised against its own points."""
    seq = pipeline.render_dataset(scene["profile"])["loc-train"]
    for i in (2, 9):
        r = structure.localize(seq.load_image(i))
        assert r.localized and r.num_inliers >= 100
        assert geometry.position_error(r.x, seq.x[i]) < 0.005
        assert geometry.rotation_error_deg(r.q, seq.q[i]) < 0.05 and r.q[0] >= 0
        assert r.retrieved[0] == scene["map"].names[i]


def test_held_out_frames_are_localised_to_centimetres(scene, structure):
    test = scene["test"]
    for i in range(len(test)):
        r = structure.localize(test.load_image(i))
        assert r.localized and r.num_inliers >= 30 and r.seconds > 0
        assert geometry.position_error(r.x, test.x[i]) < 0.03, i
        assert geometry.rotation_error_deg(r.q, test.q[i]) < 0.3, i


def test_a_pose_far_from_every_map_camera_is_rejected(scene):
    """The plausibility check: with a radius smaller than the distance from the held-out frames to
    the nearest map camera, a correct PnP pose is refused and the query falls back."""
    test, m = scene["test"], scene["map"]
    nearest = min(np.min(np.linalg.norm(m.x - x, axis=1)) for x in test.x)
    assert nearest > 0.1
    strict = localize.StructureLocalizer(m, max_distance_m=0.05)
    r = strict.localize(test.load_image(0))
    assert r.num_inliers >= 30 and not r.localized
    np.testing.assert_array_equal(r.x, m.x[m.names.index(r.retrieved[0])])
    with pytest.raises(localize.LocalizeError, match="max_distance_m"):
        localize.StructureLocalizer(m, max_distance_m=0.0)


def test_featureless_and_unknown_queries_are_not_localised(scene, structure):
    K = scene["K"]
    blank = np.full((K.height, K.width, 3), 128, np.uint8)
    r = structure.localize(blank)
    assert not r.localized and np.all(np.isnan(r.x)) and np.all(np.isnan(r.q)) and r.num_inliers == 0
    noise = np.random.default_rng(0).integers(0, 256, (K.height, K.width, 3), dtype=np.uint8)
    r = structure.localize(noise)  # features, but nothing in the map: falls back to the best retrieved image
    assert not r.localized and r.num_inliers < 30
    i = scene["map"].names.index(r.retrieved[0])
    np.testing.assert_array_equal(r.x, scene["map"].x[i])
    r = localize.StructureLocalizer(scene["map"], fallback=False).localize(noise)
    assert not r.localized and np.all(np.isnan(r.x))
    for desc in localize.DESCRIPTORS:
        r = localize.RetrievalLocalizer(scene["map"], desc).localize(blank)
        assert not r.localized and np.all(np.isnan(r.x)) and r.retrieved == []


# ---------------------------------------------------------------------------- retrieval
@pytest.mark.parametrize("descriptor", localize.DESCRIPTORS)
def test_retrieval_returns_the_nearest_training_pose(scene, descriptor):
    m = scene["map"]
    seq = pipeline.render_dataset(scene["profile"])["loc-train"]
    loc = localize.RetrievalLocalizer(m, descriptor)
    r = loc.localize(seq.load_image(4))  # a map image: exactly its own pose
    assert r.localized and r.retrieved[0] == m.names[4]
    np.testing.assert_array_equal(r.x, m.x[4])
    np.testing.assert_array_equal(r.q, m.q[4])
    # a frame 10 cm from map frame 6, same heading: that frame's pose
    x, q = m.x[6] + [0.1, 0.0, 0.0], m.q[6]
    img = pipeline.get_renderer(scene["profile"]).render(x, q, scene["K"])
    r = loc.localize(img)
    assert r.retrieved[0] == m.names[6]
    np.testing.assert_array_equal(r.x, m.x[6])
    # k = 3: a similarity-weighted mean of the top three poses
    r3 = localize.RetrievalLocalizer(m, descriptor, k=3).localize(img)
    top = [m.names.index(n) for n in r3.retrieved]
    assert len(top) == 3 and top[0] == 6
    assert np.all(r3.x >= m.x[top].min(0) - 1e-9) and np.all(r3.x <= m.x[top].max(0) + 1e-9)
    assert np.isclose(np.linalg.norm(r3.q), 1) and r3.q[0] >= 0
    assert geometry.rotation_error_deg(r3.q, m.q[top]).max() <= geometry.rotation_error_deg(m.q[top][:, None],
                                                                                              m.q[top][None]).max()
    assert 0 < loc.size_mb < localize.StructureLocalizer(m).size_mb


def test_weighted_quaternion_mean_is_sign_invariant():
    q = geometry.camera_rotation(np.array([0.0, 0.4]))
    x = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0]])
    xm, qm = localize._weighted_pose(x, q * np.array([[1.0], [-1.0]]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(xm, [1.0, 0.0, 1.0])
    assert geometry.rotation_error_deg(qm, geometry.camera_rotation(0.2)) < 1e-6
    _, qw = localize._weighted_pose(x, q, np.array([3.0, 1.0]))
    assert geometry.rotation_error_deg(qw, q[0]) < geometry.rotation_error_deg(qw, q[1])


# ---------------------------------------------------------------------------- bad inputs
def test_bad_queries_and_settings(scene, structure):
    m, K = scene["map"], scene["K"]
    with pytest.raises(LocalizeError, match="map's camera is 320x240 but the query is 160x120"):
        structure.localize(np.zeros((120, 160, 3), np.uint8))
    with pytest.raises(LocalizeError, match="uint8"):
        structure.localize(np.zeros((K.height, K.width, 3), np.float32))
    with pytest.raises(LocalizeError, match="uint8"):
        structure.localize(np.zeros((K.height, K.width, 2), np.uint8))
    with pytest.raises(LocalizeError, match="descriptor must be one of"):
        localize.RetrievalLocalizer(m, "netvlad")
    with pytest.raises(LocalizeError, match="k must be in 1..13"):
        localize.RetrievalLocalizer(m, k=14)
    with pytest.raises(LocalizeError, match="min_inliers"):
        localize.StructureLocalizer(m, min_inliers=3)
    with pytest.raises(LocalizeError, match="expected a LocalizationMap"):
        localize.StructureLocalizer("map")
    empty = localize.LocalizationMap(
        m.names, m.x, m.q, K, np.zeros((0, 3)), np.zeros(len(m) + 1, np.int64), np.zeros(0, np.int32),
        np.zeros((0, 128), np.uint8), m.words, m.idf, m.bow, m.thumbnails, m.thumbnail_size, m.max_num_features)
    with pytest.raises(LocalizeError, match="no 3D points"):
        localize.StructureLocalizer(empty)
    assert localize.RetrievalLocalizer(empty).localize(scene["test"].load_image(0)).localized  # needs no points


def test_bad_map_inputs(scene, tmp_path):
    names = [f"loc-train/images/{i:06d}.png" for i in range(3)]
    x, q = _poses(MAP_X[:3], MAP_YAW[:3])
    root, K = scene["render"], scene["K"]
    with pytest.raises(LocalizeError, match="at least 2 images"):
        localize.build_map(root, [], np.zeros((0, 3)), np.zeros((0, 4)), K, tmp_path)
    with pytest.raises(LocalizeError, match=r"x \(N, 3\) and q \(N, 4\)"):
        localize.build_map(root, names, x[:2], q, K, tmp_path)
    with pytest.raises(LocalizeError, match="not a unit quaternion"):
        localize.build_map(root, names, x, q * 2, K, tmp_path)
    with pytest.raises(LocalizeError, match="missing"):
        localize.build_map(root, names[:2] + ["nope.png"], x, q, K, tmp_path)
    with pytest.raises(LocalizeError, match="is 320x240 but the intrinsics are for 640x480"):
        localize.build_map(root, names, x, q, Intrinsics.from_fov(640, 480), tmp_path)
    with pytest.raises(LocalizeError, match="matcher must be"):
        localize.build_map(root, names, x, q, K, tmp_path, matcher="vocabtree")


def test_flat_images_give_no_map(tmp_path):
    K = Intrinsics.from_fov(64, 48)
    x, q = _poses(MAP_X[:3], MAP_YAW[:3])
    seq = write_sequence(tmp_path / "flat", (np.full((48, 64, 3), 90 + 10 * i, np.uint8) for i in range(3)), x, q, K)
    with pytest.raises(LocalizeError, match="no 3D point could be triangulated"):
        localize.build_map(seq.image_folder, seq.images, x, q, K, tmp_path / "work", matcher="exhaustive",
                           progress=False)


# ---------------------------------------------------------------------------- evaluation
def test_evaluate_localizer_on_the_profile(scene, structure):
    ev = localize.evaluate_localizer(scene["profile"], structure, progress=False)
    assert list(ev.predictions) == ["loc-test"] and ev.predictions["loc-test"][0].shape == (3, 3)
    assert set(ev.frames["reference"]) == {"truth"} and len(ev.frames) == 3
    assert ev.frames["localized"].all() and (ev.frames["ms"] > 0).all()
    row = ev.overall("truth")
    assert row["method"] == structure.name and row["frames"] == 3 and row["localized (%)"] == 100.0
    assert row["median position (m)"] < 0.03 and row["within 0.25 m, 2 deg (%)"] == 100.0
    assert row["median ms"] > 0 and row["size (MB)"] == pytest.approx(scene["map"].megabytes())
    assert ev.table.loc[("truth", "loc-test"), "localized (%)"] == 100.0


def test_a_query_without_a_pose_counts_as_a_failure(scene, tmp_path):
    """A sequence with a featureless frame: no pose (NaN), infinite error, below every threshold."""
    test = scene["test"]
    K = scene["K"]
    imgs = [test.load_image(0), np.full((K.height, K.width, 3), 128, np.uint8)]
    seq = write_sequence(tmp_path / "mixed", imgs, test.x[:2], test.q[:2], K, {"split": "test"})
    loc = localize.StructureLocalizer(scene["map"], fallback=False)
    ev = localize.evaluate_sequences(loc, [seq], {"truth": {"mixed": seq}}, progress=False)
    f = ev.frames.set_index("frame")
    assert bool(f.loc[0, "localized"]) and not bool(f.loc[1, "localized"])
    assert np.isinf(f.loc[1, "position_m"]) and np.isinf(f.loc[1, "rotation_deg"])
    row = ev.overall()
    assert row["localized (%)"] == 50.0 and row["within 5 m, 10 deg (%)"] == 50.0 and np.isinf(row["mean position (m)"])
    assert ev.localizations["mixed"][1].num_inliers == 0


# ---------------------------------------------------------------------------- reusing a database
def _db_content(path) -> str:
    """A digest of a SQLite database's rows (opening it with COLMAP rewrites header bytes)."""
    import sqlite3

    with sqlite3.connect(path) as con:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()


def test_map_from_an_existing_database_of_more_images(scene, tmp_path):
    """The SfM stage's database holds test frames too: a map of the training frames read from it
    holds only those, and matches a map built from scratch."""
    root, K = scene["render"], scene["K"]
    train = [f"loc-train/images/{i:06d}.png" for i in range(len(MAP_X))]
    test = [f"loc-test/images/{i:06d}.png" for i in range(len(TEST_X))]
    x, q = _poses(MAP_X, MAP_YAW)
    xt, qt = _poses(TEST_X, TEST_YAW)
    # a database of all 16 images (as the SfM stage's), made through build_map's own extraction
    everything = localize.build_map(root, train + test, np.r_[x, xt], np.r_[q, qt], K, tmp_path / "all",
                                    overlap=4, retrieval=2, progress=False)
    db = tmp_path / "all" / "database.db"
    stamp = _db_content(db)
    m = localize.build_map(root, train, x, q, K, tmp_path / "reuse", overlap=4, retrieval=2, progress=False,
                           database=db)
    assert m.names == train and set(m.info["timings"]) == {"read", "triangulate", "describe"}
    assert m.info["options"]["database"] == str(db) and _db_content(db) == stamp  # read, not changed
    # every point is seen by training frames only, and about as many as in a fresh map of them
    assert m.offsets[-1] == len(m.obs_point) and len(m.points) > 0.7 * len(scene["map"].points)
    assert len(everything.points) > len(m.points)
    loc = localize.StructureLocalizer(m)
    r = loc.localize(scene["test"].load_image(1))
    assert r.localized and geometry.position_error(r.x, scene["test"].x[1]) < 0.05
    with pytest.raises(LocalizeError, match="is not the map's intrinsics"):
        localize.build_map(root, train, x, q, Intrinsics(K.width, K.height, K.fx * 1.1, K.fy * 1.1, K.cx, K.cy),
                           tmp_path / "bad", database=db, progress=False)
    extra = root / "loc-extra" / "frame.png"  # on disk, not in the database
    extra.parent.mkdir()
    try:
        extra.write_bytes((root / train[0]).read_bytes())
        with pytest.raises(LocalizeError, match="holds 12 of the 13 map images"):
            localize.build_map(root, train[:12] + ["loc-extra/frame.png"], x, q, K, tmp_path / "bad2",
                               database=db, progress=False)
    finally:
        shutil.rmtree(extra.parent)
    with pytest.raises(LocalizeError, match="no COLMAP database"):
        localize.build_map(root, train, x, q, K, tmp_path / "bad3", database=tmp_path / "none.db", progress=False)


# ---------------------------------------------------------------------------- retrieval + MeNet
class _FixedRelative(torch.nn.Module):
    """A stand-in relative-pose model (6-channel input) that answers one fixed (t_rel, q_rel)."""

    in_channels = 6

    def __init__(self, t, q):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))  # something to count in size_mb
        self.t, self.q = torch.tensor(t, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
        self.seen = []

    def predict_pose(self, images):
        self.seen.append(tuple(images.shape))
        n = images.shape[0]
        return self.t.expand(n, 3), self.q.expand(n, 4)


def test_relative_pose_localizer_composes_with_the_retrieved_pose(scene):
    m = scene["map"]
    seq = pipeline.render_dataset(scene["profile"])["loc-train"]
    img = seq.load_image(4)
    ident = _FixedRelative([0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0])
    loc = localize.RelativePoseLocalizer(m, ident, (32, 24), scene["render"], label="stub")
    r = loc.localize(img)  # a map image retrieves itself; identity relative pose: its own pose
    assert r.localized and r.retrieved[0] == m.names[4] and ident.seen[-1] == (1, 6, 24, 32)
    np.testing.assert_allclose(r.x, m.x[4], atol=1e-9)
    assert geometry.rotation_error_deg(r.q, m.q[4]) < 1e-6
    # one metre along the retrieved camera's optical axis (+z), turned 90 deg about its y axis
    q_rel = geometry.rotvec_to_quat(np.array([0.0, np.pi / 2, 0.0]))
    fwd = localize.RelativePoseLocalizer(m, _FixedRelative([0.0, 0.0, 1.0], q_rel), (32, 24), scene["render"])
    r = fwd.localize(img)
    axis = geometry.quat_to_matrix(m.q[4])[:, 2]
    np.testing.assert_allclose(r.x, m.x[4] + axis, atol=1e-9)
    assert abs(geometry.rotation_error_deg(r.q, m.q[4]) - 90.0) < 1e-6
    assert "stub" in loc.name and loc.size_mb > localize.RetrievalLocalizer(m).size_mb
    with pytest.raises(LocalizeError, match="not a relative-pose model"):
        localize.RelativePoseLocalizer(m, torch.nn.Linear(2, 2), (32, 24), scene["render"])
    with pytest.raises(LocalizeError, match="map image"):
        localize.RelativePoseLocalizer(m, ident, (32, 24), scene["render"] / "elsewhere")


def test_several_localizers_in_one_pass_share_the_features(scene, structure):
    """Scored together, each method gives the same poses as alone, and its time still includes the
    SIFT extraction it did not repeat."""
    test = {"loc-test": scene["test"]}
    refs = {"truth": test}
    retrieval = localize.RetrievalLocalizer(scene["map"], "bow")
    alone = [localize.evaluate_sequences(loc, test, refs, progress=False) for loc in (structure, retrieval)]
    together = localize.evaluate_sequences([structure, retrieval], test, refs, progress=False)
    assert [e.method for e in together] == [structure.name, retrieval.name]
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.predictions["loc-test"][0], b.predictions["loc-test"][0], atol=1e-6)
    # retrieval alone is mostly extraction; scored second it got the features from the memo
    assert retrieval._sift.credit > 0
    ms_alone, ms_together = alone[1].frames["ms"].median(), together[1].frames["ms"].median()
    assert ms_together > 0.5 * ms_alone
    with pytest.raises(LocalizeError, match="no localiser"):
        localize.evaluate_sequences([], test, refs)


# ---------------------------------------------------------------------------- real photographs
@pytest.mark.slow
def test_castle_p30_held_out_photos(tmp_path):
    """A map of 20 of the 30 photos (halved to 512x341) with their true poses; the other 10 localised
    (about 40 s on 2 cores)."""
    if not (CASTLE / "images").is_dir() or not (CASTLE / "gt_colmap" / "images.txt").is_file():
        pytest.skip(f"castle-P30 photographs not found at {CASTLE} (images/ and gt_colmap/); see its README")
    from PIL import Image

    from campose.sfm import read_colmap_camera, read_colmap_text_model

    names, x, q = read_colmap_text_model(CASTLE / "gt_colmap")
    K = read_colmap_camera(CASTLE / "gt_colmap").scaled(512, 341)
    (tmp_path / "images").mkdir()
    images = {}
    for n in names:
        with Image.open(CASTLE / "images" / n) as im:
            small = im.convert("RGB").resize((K.width, K.height), Image.BILINEAR)
        small.save(tmp_path / "images" / n, quality=95)
        images[n] = np.asarray(small)
    query = list(range(1, len(names), 3))
    ref = [i for i in range(len(names)) if i not in query]
    m = localize.build_map(tmp_path / "images", [names[i] for i in ref], x[ref], q[ref], K, tmp_path / "work",
                           overlap=5, retrieval=3, num_words=256, progress=False)
    loc = localize.StructureLocalizer(m, num_retrieved=8)
    results = [loc.localize(images[names[i]]) for i in query]
    pe = np.array([geometry.position_error(r.x, x[i]) for r, i in zip(results, query)])
    re = np.array([geometry.rotation_error_deg(r.q, q[i]) for r, i in zip(results, query)])
    print(f"\ncastle-P30 at 512x341: map {m.summary()}; {sum(r.localized for r in results)}/{len(query)} localised; "
          f"position error median {np.median(pe):.3f} m (max {pe.max():.3f}), rotation median {np.median(re):.3f} deg "
          f"(max {re.max():.3f}); {np.median([r.seconds for r in results]):.2f} s per query")
    assert sum(r.localized for r in results) >= 9
    assert np.median(pe) < 0.10 and np.median(re) < 0.5
