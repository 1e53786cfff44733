"""campose.conclusions: the comparison table, snapping every method, the report's rows, timing a
network, and the figures, on synthetic scores (no training, no map)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from campose import conclusions, models
from campose.conclusions import Comparison, MethodScore
from campose.walkable import WalkableMap


def _frames(pos_err, rot_err, y=0.5):
    """Per-frame rows of frame_errors' shape: truth on a line y = 0.5 m, predictions off in y."""
    n = len(pos_err)
    x_ref = np.c_[np.linspace(0.5, 3.5, n), np.full(n, 0.5), np.full(n, 1.6)]
    x = x_ref + np.c_[np.zeros(n), pos_err, np.zeros(n)]
    return pd.DataFrame({"reference": "truth", "sequence": "walk", "image": [f"{i:03d}.png" for i in range(n)],
                         "frame": np.arange(n), "x": x[:, 0], "y": x[:, 1], "z": x[:, 2], "x_ref": x_ref[:, 0],
                         "y_ref": x_ref[:, 1], "z_ref": x_ref[:, 2], "position_m": np.abs(pos_err),
                         "rotation_deg": np.asarray(rot_err, float)})


@pytest.fixture
def corridor():
    """A 4 m x 1 m walkable corridor (y in [0, 1]) at 5 cm inside a 6 m x 3 m grid."""
    mask = np.zeros((60, 120), bool)
    mask[20:40, 20:100] = True  # rows: y from -1 m; cols: x from -1 m
    return WalkableMap(mask, (-1.0, -1.0), 0.05)


def _comparison(corridor):
    net = MethodScore("PoseNet", "PoseNet, L1", _frames(np.array([0.2, 1.5, 2.0, -0.1]), [3, 4, 5, 6]), 7.0, 8.5)
    net2 = MethodScore("PoseNet", "PoseNet, MSE", _frames(np.array([3.0, 3.0, 3.0, 3.0]), [9, 9, 9, 9]), 7.5, 8.5)
    struct = MethodScore("structure-based", "structure-based", _frames(np.array([0.01, 0.02, np.inf, 0.03]),
                                                                       [0.1, 0.2, np.inf, 0.3]), 500.0, 12.0, 75.0)
    return Comparison("quick", [struct, net2, net], corridor, 0.05, {"PoseNet": 20.0})


def test_stats_pool_the_frames_and_count_a_missing_pose_as_a_failure(corridor):
    struct = _comparison(corridor).scores[0]
    st = struct.stats()
    assert st["frames"] == 4 and st["median position (m)"] == pytest.approx(0.025)
    assert np.isinf(st["mean position (m)"]) and st["within 0.25 m, 2 deg (%)"] == 75.0


def test_table_orders_families_and_puts_each_snapped_row_under_its_method(corridor):
    t = _comparison(corridor).table()
    assert list(zip(t["method"], t["snapped"])) == [
        ("PoseNet, L1", False), ("PoseNet, L1", True), ("PoseNet, MSE", False), ("PoseNet, MSE", True),
        ("structure-based", False), ("structure-based", True), ("the report's PoseNet", False)]
    raw = t.iloc[0]
    assert raw["median position (m)"] == pytest.approx(np.median([0.2, 1.5, 2.0, 0.1]))
    assert np.isnan(raw["localised (%)"]) and raw["ms per query"] == 7.0 and raw["size (MB)"] == 8.5
    report = t.iloc[-1]
    assert report["family"] == "the report (its own floor)" and report["median position (m)"] == 20.0
    assert np.isnan(report["ms per query"])
    assert len(_comparison(corridor).table(snapping=False, report=False)) == 3


def test_snapping_moves_positions_onto_the_corridor_and_adds_its_cost(corridor):
    c = _comparison(corridor)
    net = c.scores[2]
    s = c.snapped(net)
    # 1.5 m and 2.0 m north of a truth at y = 0.5 land outside the 1 m corridor: snapped to its edge
    np.testing.assert_allclose(s.frames["position_m"].to_numpy()[[1, 2]], [0.5, 0.5], atol=0.06)
    np.testing.assert_allclose(s.frames["position_m"].to_numpy()[[0, 3]], [0.2, 0.1], atol=1e-9)  # inside: kept
    assert (s.frames["rotation_deg"] == net.frames["rotation_deg"]).all()
    assert s.ms_per_query == pytest.approx(net.ms_per_query + 0.05)
    assert s.size_mb == pytest.approx(net.size_mb + corridor.nbytes / 1e6)
    # a query without a pose stays a failure after snapping
    assert np.isinf(c.snapped(c.scores[0]).frames["position_m"].to_numpy()[2])


def test_best_and_best_scores(corridor):
    c = _comparison(corridor)
    assert c.best()["method"] == "structure-based"
    assert c.best("PoseNet")["method"] == "PoseNet, L1"
    assert c.best("PoseNet", snapped=True)["snapped"]
    assert [s.method for s in c.best_scores()] == ["PoseNet, L1", "structure-based"]
    with pytest.raises(ValueError, match="no method of family 'MapNet'"):
        c.best("MapNet")


def test_figures_and_styled_table(corridor):
    c = _comparison(corridor)
    fig = c.plot_accuracy()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"PoseNet", "structure-based"}
    assert any("the report's PoseNet" in t.get_text() for t in ax.texts)
    fig2 = c.plot_cumulative()
    assert len(fig2.axes) == 2 and len(fig2.axes[0].get_lines()) >= 2
    html = conclusions.styled(c.table()).to_html()
    assert "snapped" in html and "–" in html


def test_time_network_on_one_thread_restores_the_thread_count():
    model = models.build_model("posenet", backbone="mobilenet_v3_small", hidden=(8,))
    images = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(3)]
    before = torch.get_num_threads()
    ms = conclusions.time_network(model, images, (32, 24))
    assert ms > 0 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="at least one image"):
        conclusions.time_network(model, [], (32, 24))


def test_network_and_localizer_scores_keep_only_the_truth():
    frames = pd.concat([_frames(np.array([1.0, 2.0]), [1, 2]).assign(reference="labels"),
                        _frames(np.array([3.0, 4.0]), [3, 4])], ignore_index=True)
    ev = SimpleNamespace(frames=frames.assign(localized=[True, True, True, False], ms=[10.0, 30.0, 20.0, 40.0]),
                         method="retrieval (bag of words, k=1)", size_mb=1.5)
    s = conclusions.localizer_score(ev, "retrieval")
    assert len(s.frames) == 2 and s.localized == 50.0 and s.ms_per_query == 30.0 and s.size_mb == 1.5
    assert s.method == ev.method
    model = models.build_model("posenet", backbone="mobilenet_v3_small", hidden=(8,))
    run = SimpleNamespace(relative=False, result=SimpleNamespace(model=model, config=SimpleNamespace(image_size=(32, 24))),
                          evaluation=SimpleNamespace(frames=frames))
    rel = SimpleNamespace(relative=True)
    study = SimpleNamespace(name="posenet", runs={"L1": run, "MeNet": rel})
    img = [np.zeros((48, 64, 3), np.uint8)]
    (score,) = conclusions.network_scores(study, img)
    assert score.family == "PoseNet" and score.method == "PoseNet, L1" and len(score.frames) == 2
    assert score.size_mb == pytest.approx(sum(p.numel() for p in model.parameters()) * 4 / 1e6)


class _FakeLocalizer:
    """Stands in for a baseline: answers every query with the same pose and counts the queries."""

    calls: dict = {}

    def __init__(self, name, **settings):
        self.name, self.size_mb = name, 1.0
        _FakeLocalizer.calls.setdefault(name, 0)

    def localize(self, image):
        from campose.localize import Localization

        _FakeLocalizer.calls[self.name] += 1
        return Localization(np.array([1.0, 0.0, 1.6]), np.array([1.0, 0.0, 0.0, 0.0]), True, 0.001)


def test_compare_caches_each_baseline_and_localises_again_only_what_changed(tiny_profile, monkeypatch, corridor):
    from campose import localize, pipeline

    _FakeLocalizer.calls = {}
    monkeypatch.setattr(localize, "profile_map", lambda *a, **k: None)
    monkeypatch.setattr(localize, "StructureLocalizer", lambda m, **kw: _FakeLocalizer("structure", **kw))
    monkeypatch.setattr(localize, "RetrievalLocalizer", lambda m, d, k: _FakeLocalizer("retrieval"))
    frames = len(pipeline.test_walks(tiny_profile, "truth")[0]["cli-test"])
    run = lambda **kw: conclusions.compare(tiny_profile, "truth", studies=(), menet=False, walkable=corridor, **kw)
    first = run()
    assert _FakeLocalizer.calls == {"structure": frames, "retrieval": frames}
    files = sorted(p.name for p in (pipeline.stage_dir(tiny_profile, "localize") / "evaluations").iterdir())
    assert files == ["truth-retrieval.pkl", "truth-structure.pkl"]
    again = run()  # everything cached: no query localised
    assert _FakeLocalizer.calls == {"structure": frames, "retrieval": frames}
    assert [s.stats() for s in again.scores] == [s.stats() for s in first.scores]
    run(structure={"min_inliers": 40})  # another setting of one localiser: only that one runs again
    assert _FakeLocalizer.calls == {"structure": 2 * frames, "retrieval": frames}
    (pipeline.stage_dir(tiny_profile, "localize") / "evaluations" / "truth-retrieval.pkl").write_bytes(b"broken")
    run(structure={"min_inliers": 40})  # an unreadable file is recomputed and rewritten
    assert _FakeLocalizer.calls == {"structure": 2 * frames, "retrieval": 2 * frames}
    assert pipeline.load_cached(pipeline.stage_dir(tiny_profile, "localize") / "evaluations" / "truth-retrieval.pkl",
                                "not the key") is None


def test_store_cached_writes_atomically_and_leaves_nothing_on_failure(tmp_path):
    from campose import pipeline

    f = tmp_path / "cache" / "scores.pkl"
    pipeline.store_cached(f, "k1", {"median": 1.5})
    assert pipeline.load_cached(f, "k1") == {"median": 1.5} and pipeline.load_cached(f, "k2") is None
    with pytest.raises(Exception):
        pipeline.store_cached(f, "k2", lambda: None)  # a lambda cannot be pickled
    assert sorted(p.name for p in f.parent.iterdir()) == ["scores.pkl"]  # no temporary file left
    assert pipeline.load_cached(f, "k1") == {"median": 1.5}  # the old value is kept

