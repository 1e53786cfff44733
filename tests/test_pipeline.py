"""The pipeline's SfM and labels stages on two tiny walks of the same corridor (about a minute).

The two walks go the same way round the south-west corner with different wander; sequential matching
alone cannot link them (each stays in its own folder), image retrieval must. This also checks the
global (GLOMAP) mapper with fixed intrinsics, control-point picking, the labels on disk and the cache.
"""

import csv
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from campose import pipeline, sfm  # noqa: E402
from campose.dataset import read_poses  # noqa: E402

TINY = {
    "tiny-a": pipeline.SequenceSpec("tiny-a", "train", ("S-cls8", "SW", "NW"), 31),
    "tiny-b": pipeline.SequenceSpec("tiny-b", "test", ("S-cls8", "SW", "NW"), 32),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A profile of the two walks at 320x240, 2 fps, rendered into a temporary data root."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("runs")
    mp.setenv("CAMPOSE_DATA", str(root))
    mp.setenv("CAMPOSE_PROGRESS", "0")
    mp.setattr(pipeline, "SEQUENCES", {**pipeline.SEQUENCES, **TINY})
    prof = pipeline.profile_with("quick", name="tiny", sequences=tuple(TINY), render_size=(320, 240),
                                 control_points=5, survey_noise_m=0.01)
    seqs = pipeline.render_dataset(prof)
    yield prof, seqs
    mp.undo()


def test_true_poses_are_keyed_by_the_sfm_names(tiny):
    prof, seqs = tiny
    truth = pipeline.true_poses(seqs)
    assert sorted(truth) == sorted(pipeline.sfm_image_names(prof))
    for name, s in seqs.items():
        for i in (0, len(s) - 1):
            x, q = truth[pipeline.sfm_name(name, s.images[i])]
            assert np.array_equal(x, s.x[i]) and np.array_equal(q, s.q[i])
    assert not np.array_equal(truth[pipeline.sfm_name("tiny-a", seqs["tiny-a"].images[0])][0],
                              truth[pipeline.sfm_name("tiny-b", seqs["tiny-b"].images[0])][0])


@pytest.mark.slow
def test_retrieval_links_walks_that_sequential_matching_cannot(tiny, tmp_path):
    prof, seqs = tiny
    names = pipeline.sfm_image_names(prof)
    assert len(names) == sum(len(s) for s in seqs.values()) > 40
    root = pipeline.stage_dir(prof, "render")
    common = dict(image_names=names, intrinsics=prof.intrinsics(), overlap=4, mapper="global", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sfm.SfmWarning)
        alone = sfm.reconstruct(root, tmp_path / "seq", **common)
    # without pairs between the folders, no model can hold frames of both walks
    folders = {n.split("/")[0] for n in alone.names}
    assert len(folders) == 1 and alone.registered <= max(len(s) for s in seqs.values())

    pairs = sfm.retrieval_pairs(tmp_path / "seq" / "database.db", 3, skip_within=4)
    cross = [(a, b) for a, b in pairs if a.split("/")[0] != b.split("/")[0]]
    assert len(pairs) == len({frozenset(p) for p in pairs}) and all(a != b for a, b in pairs)
    assert len(cross) >= len(names) // 2
    # retrieved pairs look at the same place: their true camera centres are close
    truth = pipeline.true_poses(seqs)
    gap = np.array([np.linalg.norm(truth[a][0] - truth[b][0]) for a, b in cross])
    assert np.median(gap) < 3.0

    linked = sfm.reconstruct(root, tmp_path / "ret", retrieval=3, features_from=tmp_path / "seq" / "database.db",
                             **common)  # the same features, matched again with retrieval
    assert linked.num_models == 1 and linked.registered == linked.total == len(names)
    assert linked.options["mapper"] == "global" and linked.options["retrieval_pairs"] > 0
    K = prof.intrinsics()
    assert np.allclose(linked.camera["params"], [K.fx, K.fy, K.cx, K.cy])  # held fixed by the global mapper


@pytest.mark.slow
def test_labels_stage(tiny):
    prof, seqs = tiny
    labels = pipeline.label_dataset(prof)
    out = pipeline.stage_dir(prof, "labels")
    assert labels.sfm.registered == labels.sfm.total
    assert len(labels.control.names) == 5 and len(set(labels.control.landmarks)) == 5
    assert all(n in labels.sfm.names for n in labels.control.names)
    # the survey noise is what it says, and the control points are spread over the walk
    assert np.abs(labels.control.measured - labels.control.truth).max() < 0.06
    xy = labels.control.truth[:, :2]
    assert np.linalg.svd(xy - xy.mean(0), compute_uv=False)[1] > 2.0  # not on one line
    for name, seq in seqs.items():
        lab = labels.sequences[name]
        imgs, x, q = read_poses(out / name / "poses.csv")
        assert imgs == lab.images and np.allclose(x, lab.x) and lab.root == seq.root
        assert lab.image_path(0).is_file() and lab.meta["labels"] == "sfm-aligned"
        e = labels.errors[name]
        assert len(e["position_m"]) == len(lab) and np.array_equal(seq.images[e["index"][3]], lab.images[3])
        np.testing.assert_allclose(e["t"], e["index"] / prof.fps)
        pe, re = pipeline.label_errors(lab.x, lab.q, seq.x[e["index"]], seq.q[e["index"]])
        np.testing.assert_allclose(e["position_m"], pe, atol=1e-6)
        np.testing.assert_allclose(e["rotation_deg"], re, atol=1e-4)
        # 320x240 frames of a 20 m walk: about 2 cm and 0.5 deg here (the default floor's quick profile,
        # 480x360, gets about 2 cm and 0.07 deg)
        assert np.median(pe) < 0.05 and np.median(re) < 1.0
        with open(out / name / "label_errors.csv") as f:
            assert next(csv.reader(f)) == ["image", "index", "t", "position_m", "rotation_deg"]
    table = labels.summary_table()
    assert list(table.index) == list(seqs) and (table["registered"] == table["frames"]).all()
    assert (table["implausible jumps"] == 0).all() and labels.jumps() == {n: [] for n in seqs}
    meta = json.loads((out / "alignment.json").read_text())
    assert len(meta["control_points"]) == 5 and meta["report"]["rms_m"] < 0.05

    # cached: same labels, no recomputation; a changed setting recomputes
    stamp = (out / "stage.json").stat().st_mtime_ns
    again = pipeline.label_dataset(prof)
    assert (out / "stage.json").stat().st_mtime_ns == stamp
    assert np.allclose(again.sequences["tiny-a"].x, labels.sequences["tiny-a"].x)
    other = pipeline.label_dataset(pipeline.profile_with(prof, control_points=4))
    assert len(other.control.names) == 4


@pytest.mark.slow
def test_sfm_stage_maps_again_on_its_own_matches(tiny):
    """Changing only what acts after matching (here min_inliers) reuses the stage's database: mapping only."""
    prof, _ = tiny
    import pycolmap

    first = pipeline.sfm_dataset(prof)  # built by the labels test, or here
    work = pipeline.stage_dir(prof, "sfm") / "work"
    with pycolmap.Database.open(str(work / "database.db")) as db:
        matched = db.num_matched_image_pairs()
    note = json.loads((work / "matches.json").read_text())
    assert note["key"] == pipeline.sfm_matches_key(prof) and note["min_inliers"] == 15
    assert set(note["timings"]) == {"extract", "match"}
    before = pipeline.sfm_database_key(prof)  # what localize.profile_map keys its reuse by
    stricter = pipeline.profile_with(prof, sfm={**prof.sfm, "min_inliers": 40})
    assert pipeline.sfm_matches_key(stricter) == note["key"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sfm.SfmWarning)
        res = pipeline.sfm_dataset(stricter)
    stage = json.loads((pipeline.stage_dir(prof, "sfm") / "stage.json").read_text())
    assert stage["matches_reused"] == note["finished"]
    assert res.options["reuse_matches"] and res.options["min_inliers"] == 40 and res.options["weak_pairs_dropped"] > 0
    assert {k: res.timings[k] for k in ("extract", "match")} == {k: first.timings[k] for k in ("extract", "match")}
    assert not (work / "database.matched.db").exists()
    assert res.registered >= 0.95 * first.registered  # a walk's first frame at 320x240 may go
    with pycolmap.Database.open(str(work / "database.db")) as db:
        assert db.num_matched_image_pairs() == matched  # matching skipped: the raw matches are all there
        assert min(db.read_two_view_geometry_num_inliers()[1]) >= 40
    assert json.loads((work / "matches.json").read_text())["min_inliers"] == 40
    after = pipeline.sfm_database_key(stricter)
    assert after is not None and after != before  # fewer pairs: a map built on the database is stale
    # the database lost its pairs under 40 inliers: a lower threshold, or other matching, starts afresh
    assert pipeline.reusable_matches(work, note["key"], 40)["finished"] == note["finished"]
    assert pipeline.reusable_matches(work, note["key"], 15) is None
    other = pipeline.profile_with(prof, sfm={**prof.sfm, "overlap": 3, "min_inliers": 40})
    assert pipeline.reusable_matches(work, pipeline.sfm_matches_key(other), 40) is None


@pytest.mark.slow
def test_features_can_be_reused(tiny, tmp_path):
    """Matcher/mapper studies reuse one extraction: same keypoints, fresh matches, same answer."""
    prof, seqs = tiny
    names = pipeline.sfm_image_names(prof)
    root = pipeline.stage_dir(prof, "render")
    common = dict(image_names=names, intrinsics=prof.intrinsics(), overlap=4, retrieval=3, mapper="global",
                  progress=False)
    first = sfm.reconstruct(root, tmp_path / "a", **common)
    again = sfm.reconstruct(root, tmp_path / "b", features_from=tmp_path / "a" / "database.db", **common)
    assert again.registered == first.registered and again.options["features_from"].endswith("a/database.db")
    import pycolmap

    with pycolmap.Database.open(str(tmp_path / "a" / "database.db")) as a, \
            pycolmap.Database.open(str(tmp_path / "b" / "database.db")) as b:
        assert a.num_keypoints() == b.num_keypoints() and a.num_matched_image_pairs() == b.num_matched_image_pairs()
    # mapping on reused matches (reuse_matches=True): test_sfm_stage_maps_again_on_its_own_matches
    with pytest.raises(sfm.SfmError, match="reuse_matches needs features_from"):
        sfm.reconstruct(root, tmp_path / "n", reuse_matches=True, image_names=names, progress=False)
    with pytest.raises(sfm.SfmError, match="no database at"):
        sfm.reconstruct(root, tmp_path / "c", features_from=tmp_path / "none.db", image_names=names, progress=False)
    with pytest.raises(sfm.SfmError, match="not inputs of this run"):
        sfm.reconstruct(root, tmp_path / "d", features_from=tmp_path / "a" / "database.db",
                        image_names=names[:10], intrinsics=prof.intrinsics(), progress=False)
