"""Metrics against hand computations, sign invariance, prediction, MeNet pairs and the plots."""

import math

import numpy as np
import pytest
import torch

from campose import evaluate as E
from campose import geometry as g
from campose.dataset import PoseDataset, Sequence
from campose.models import build_model
from campose.train import cpu_thread_limit

SIZE = (32, 24)


def poses_with_errors(x, q, position_m, rotation_deg):
    """Poses ``position_m`` metres east of (x, q) and turned ``rotation_deg`` about the vertical."""
    x2 = x + np.c_[position_m, np.zeros((len(x), 2))]
    turn = g.rotvec_to_quat(np.c_[np.zeros((len(x), 2)), np.radians(rotation_deg)])
    return x2, g.quat_multiply(turn, q)


def frames_of(seq, a, b):
    """Frames [a, b) of a sequence (as labels that lack SfM-unregistered frames)."""
    return Sequence(seq.name, seq.root, seq.images[a:b], seq.x[a:b], seq.q[a:b], seq.intrinsics, seq.meta)


@pytest.fixture(scope="module")
def posenet():
    torch.manual_seed(0)
    return build_model("posenet", backbone="mobilenet_v3_small", hidden=[16], translation_mean=[2.0, 0.0, 1.6])


def test_error_stats_match_a_hand_computation():
    pe = np.array([0.1, 0.3, 0.6, 6.0])
    re = np.array([1.0, 3.0, 4.0, 1.0])
    s = E.error_stats(pe, re)
    assert s["frames"] == 4
    assert s["median position (m)"] == pytest.approx(0.45) and s["mean position (m)"] == pytest.approx(1.75)
    assert s["median rotation (deg)"] == pytest.approx(2.0) and s["mean rotation (deg)"] == pytest.approx(2.25)
    # (0.25 m, 2 deg): frame 0 only; (0.5 m, 5 deg): frames 0, 1; (5 m, 10 deg): frames 0-2
    assert [s[E._within(m, d)] for m, d in E.THRESHOLDS] == [25.0, 50.0, 75.0]
    empty = E.error_stats(np.array([]), np.array([]))
    assert empty["frames"] == 0 and math.isnan(empty["median position (m)"])
    with pytest.raises(ValueError, match="equal length"):
        E.error_stats(pe, re[:3])


def test_rotation_error_is_sign_invariant_and_bad_predictions_are_nan():
    q = g.quat_normalize(np.random.default_rng(0).normal(size=(5, 4)))
    x = np.zeros((5, 3))
    pe, re = E.pose_errors(x, -q, x, q)
    assert np.allclose(pe, 0) and np.allclose(re, 0, atol=1e-5)
    x_bad, q_bad = x.copy(), -q
    x_bad[1] = np.nan
    q_bad[2] = 0.0
    q_bad[3, 0] = np.inf
    pe, re = E.pose_errors(x_bad, q_bad, x, q)
    assert np.isnan(pe[1]) and np.isnan(re[2]) and np.isnan(re[3]) and np.allclose(re[[0, 1, 4]], 0, atol=1e-5)
    stats = E.error_stats(pe, re)  # a NaN frame shows as NaN, never as a good frame
    assert math.isnan(stats["mean rotation (deg)"]) and stats[E._within(0.25, 2)] == 40.0


def test_summarize_per_sequence_against_labels_and_truth(tiny_sequence):
    a, b = tiny_sequence("test-a", 6, split="test", seed=1), tiny_sequence("test-b", 4, split="test", seed=2)
    pa = poses_with_errors(a.x, a.q, [0.1, 0.2, 0.4, 1.0, 6.0, 0.0], [1, 1, 3, 8, 1, 20])
    pb = poses_with_errors(b.x, b.q, [0.3, 0.3, 0.3, 0.3], [1, 1, 1, 1])
    # the labels lack frames 0 and 5 of test-a (unregistered by SfM); they are the truth otherwise
    labels = {"test-a": frames_of(a, 1, 5), "test-b": b}
    frames = E.frame_errors({"test-a": (a.images, *pa), "test-b": (b.images, *pb)},
                            {"labels": labels, "truth": {"test-a": a, "test-b": b}})
    assert len(frames) == 4 + 4 + 6 + 4
    assert list(frames.query("reference == 'labels' and sequence == 'test-a'")["frame"]) == [1, 2, 3, 4]
    table = E.summarize(frames)
    assert list(table.index) == [("labels", "test-a"), ("labels", "test-b"), ("labels", "all"),
                                 ("truth", "test-a"), ("truth", "test-b"), ("truth", "all")]
    t = table.loc[("truth", "test-a")]
    assert t["frames"] == 6 and t["median position (m)"] == pytest.approx(0.3)
    assert t["median rotation (deg)"] == pytest.approx(2.0) and t["mean position (m)"] == pytest.approx(7.7 / 6)
    assert t[E._within(0.25, 2)] == pytest.approx(100 * 2 / 6) and t[E._within(5, 10)] == pytest.approx(100 * 4 / 6)
    la = table.loc[("labels", "test-a")]
    assert la["frames"] == 4 and la["median position (m)"] == pytest.approx(0.7)
    assert table.loc[("labels", "all"), "frames"] == 8
    assert table.loc[("truth", "test-b"), E._within(0.5, 5)] == 100.0
    with pytest.raises(ValueError, match="no predicted frame"):
        E.frame_errors({"test-a": (["other.png"], a.x[:1], a.q[:1])}, {"truth": {"test-a": a}})


def test_predict_and_evaluate_a_model(posenet, tiny_sequence):
    a, b = tiny_sequence("test-a", 5, split="test", seed=1), tiny_sequence("test-b", 3, split="test", seed=2)
    posenet.train()
    x, q = E.predict(posenet, [a, b], SIZE, batch_size=3)
    assert posenet.training  # restored
    assert x.shape == (8, 3) and q.shape == (8, 4)
    assert np.allclose(np.linalg.norm(q, axis=1), 1) and np.all(q[:, 0] >= 0)
    imgs = torch.stack([PoseDataset([a, b], SIZE)[k][0] for k in range(8)])
    with cpu_thread_limit("cpu"):  # what predict does: two threads of tiny convolutions are slow on 2 cores
        t, r = posenet.predict_pose(imgs)
    assert np.allclose(x, t.numpy(), atol=1e-5) and np.allclose(q, r.numpy(), atol=1e-5)
    ev = E.evaluate(posenet, {"test-a": a, "test-b": b}, {"truth": {"test-a": a, "test-b": b}}, SIZE)
    assert np.allclose(ev.predictions["test-b"][0], x[5:], atol=1e-5)
    pe, _ = E.pose_errors(x, q, np.concatenate([a.x, b.x]), np.concatenate([a.q, b.q]))
    assert ev.table.loc[("truth", "all"), "median position (m)"] == pytest.approx(np.median(pe), abs=1e-5)
    with pytest.raises(ValueError, match="predict_pairs"):
        E.predict(build_model("menet", backbone="mobilenet_v3_small", hidden=[8]), [a], SIZE)


def test_relative_errors_and_menet_pairs(tiny_sequence):
    e = E.relative_errors([[1.0, 0, 0], [0, 2.0, 0]], [[1.0, 0, 0, 0], [-1.0, 0, 0, 0]],
                          [[0, 1.0, 0], [0, 1.0, 0]], [[0.0, 1, 0, 0], [1.0, 0, 0, 0]])
    assert np.allclose(e["direction_deg"], [90, 0], atol=1e-4) and np.allclose(e["translation_m"], [np.sqrt(2), 1])
    assert np.allclose(e["rotation_deg"], [180, 0], atol=1e-4)
    a = tiny_sequence("test-a", 6, split="test", seed=1)
    torch.manual_seed(0)
    menet = build_model("menet_siamese", backbone="mobilenet_v3_small", hidden=[8])
    pairs, t, q = E.predict_pairs(menet, [a], SIZE, max_gap=2)
    assert len(pairs) == 6 and t.shape == (6, 3) and np.all(np.abs(pairs.pairs[:, 1] - pairs.pairs[:, 0]) <= 2)
    refs = {"labels": {"test-a": frames_of(a, 0, 3)}, "truth": {"test-a": a}}
    table = E.evaluate_pairs(menet, {"test-a": a}, refs, SIZE, max_gap=2)
    assert table.loc[("truth", "test-a"), "pairs"] == 6
    assert 1 <= table.loc[("labels", "test-a"), "pairs"] < 6  # pairs with both frames among the labels
    t_ref, q_ref = g.relative_pose(a.x[pairs.pairs[:, 0]], a.q[pairs.pairs[:, 0]], a.x[pairs.pairs[:, 1]],
                                   a.q[pairs.pairs[:, 1]])
    assert table.loc[("truth", "test-a"), "median rotation (deg)"] == pytest.approx(
        np.median(g.rotation_error_deg(q, q_ref)), abs=1e-4)


def test_plots_return_axes(tiny_sequence):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from campose.floorplan import load_floorplan

    ax = E.plot_cumulative_errors({"PoseNet": [0.1, 0.2, 0.4, 1.0], "MapNet": [0.05, 0.1]}, thresholds=(0.25, 0.5))
    first = ax.get_lines()[0]
    assert first.get_ydata()[-1] == 100.0 and first.get_xdata()[-1] == 1.0 and "median 0.3" in first.get_label()
    a = tiny_sequence("test-a", 5, split="test")
    ax = E.plot_prediction_map(load_floorplan(), a.x, a.x + 0.5)
    scatter = [c for c in ax.collections if c.get_label() == "prediction"][0]
    assert np.allclose(scatter.get_array(), np.sqrt(0.75))  # 3-D position error, metres
    plt.close("all")


def test_step_lengths_per_walk():
    import pandas as pd

    rows = []
    for seq, xs in (("a", [0.0, 1.0, 3.0]), ("b", [10.0, 10.5])):
        for i, x in enumerate(xs):
            rows.append({"sequence": seq, "x": 2 * x, "y": 0.0, "z": 0.0, "x_ref": x, "y_ref": 0.0, "z_ref": 0.0})
    ref, pred = E.step_lengths(pd.DataFrame(rows))
    np.testing.assert_allclose(ref, [1.0, 2.0, 0.5])  # no step across the two walks
    np.testing.assert_allclose(pred, [2.0, 4.0, 1.0])
