"""Extra training views around the walks (campose.densify), their pipeline stage, and how the
trainer treats an unordered set of views."""

import numpy as np
import pytest

from campose import pipeline
from campose.camera import Intrinsics
from campose.densify import PairSampler, ViewSampler, render_pairs, render_views, sample_pairs, sample_views
from campose.floorplan import load_floorplan
from campose.geometry import camera_yaw_pitch_roll, quat_to_matrix, rotation_error_deg
from campose.trajectory import simulate_walk


@pytest.fixture(scope="module")
def plan():
    return load_floorplan()


@pytest.fixture(scope="module")
def walk(plan):
    return simulate_walk(plan, ["SW", "NW", "NE"], fps=2.0, seed=3)


def test_views_stay_inside_the_plan_with_their_margin(plan, walk):
    sampler = ViewSampler(margin_m=0.3)
    x, q, src = sample_views(plan, walk.x, walk.q, 400, sampler, seed=0)
    assert x.shape == (400, 3) and q.shape == (400, 4) and src.shape == (400,)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-9)
    for d in ([0, 0], [0.3, 0], [-0.3, 0], [0, 0.3], [0, -0.3]):
        assert plan.inside(x[:, :2] + np.array(d)).all()
    # near their walk pose: sideways offsets with the sampler's spread, camera height kept
    off = x[:, :2] - walk.x[src, :2]
    assert 0.25 < off.std() < 0.45
    assert np.abs(x[:, 2] - walk.x[src, 2]).max() < 0.05 * 6


def test_views_are_deterministic_in_the_seed(plan, walk):
    a = sample_views(plan, walk.x, walk.q, 50, seed=7)
    b = sample_views(plan, walk.x, walk.q, 50, seed=7)
    c = sample_views(plan, walk.x, walk.q, 50, seed=8)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(a[0], c[0])


def test_without_noise_a_view_is_its_walk_pose_or_looks_back(plan, walk):
    still = ViewSampler(sideways_m=0, height_m=0, yaw_deg=0, pitch_deg=0, roll_deg=0, reverse=0, margin_m=0)
    x, q, src = sample_views(plan, walk.x, walk.q, 60, still, seed=1)
    np.testing.assert_allclose(x, walk.x[src], atol=1e-12)
    assert rotation_error_deg(q, walk.q[src]).max() < 1e-5
    back = ViewSampler(sideways_m=0, height_m=0, yaw_deg=0, pitch_deg=0, roll_deg=0, reverse=1, margin_m=0)
    x, q, src = sample_views(plan, walk.x, walk.q, 60, back, seed=1)
    fwd, fwd_walk = quat_to_matrix(q)[:, :, 2], quat_to_matrix(walk.q[src])[:, :, 2]
    np.testing.assert_allclose(fwd[:, :2], -fwd_walk[:, :2], atol=1e-9)  # heading reversed
    np.testing.assert_allclose(fwd[:, 2], fwd_walk[:, 2], atol=1e-9)  # same pitch
    _, _, roll = camera_yaw_pitch_roll(q)
    np.testing.assert_allclose(roll, camera_yaw_pitch_roll(walk.q[src])[2], atol=1e-9)


def test_reverse_share_follows_its_probability(plan, walk):
    s = ViewSampler(sideways_m=0, height_m=0, yaw_deg=0, pitch_deg=0, roll_deg=0, reverse=0.5, margin_m=0)
    _, q, src = sample_views(plan, walk.x, walk.q, 2000, s, seed=2)
    back = rotation_error_deg(q, walk.q[src]) > 90
    assert 0.45 < back.mean() < 0.55


def test_bad_requests_say_what_is_wrong(plan, walk):
    with pytest.raises(ValueError, match="n >= 1"):
        sample_views(plan, walk.x, walk.q, 0)
    with pytest.raises(ValueError, match="as many walk positions"):
        sample_views(plan, walk.x, walk.q[:-1], 5)
    with pytest.raises(ValueError, match="margin_m=50"):
        sample_views(plan, walk.x, walk.q, 5, ViewSampler(margin_m=50), max_tries=3)
    far = walk.x + np.array([1000.0, 0, 0])
    with pytest.raises(ValueError, match="walk poses"):
        sample_views(plan, far, walk.q, 5, max_tries=3)
    with pytest.raises(ValueError, match="sideways_m"):
        ViewSampler(sideways_m=-1)
    with pytest.raises(ValueError, match="probability"):
        ViewSampler(reverse=2)


class FakeRenderer:
    """Draws a flat image whose colour encodes the camera's x, and records the intrinsics it got."""

    def __init__(self, plan):
        self.plan, self.seen = plan, []

    def render(self, x, q, K):
        self.seen.append(K)
        return np.full((K.height, K.width, 3), int(x[0]) % 256, np.uint8)


class EverywherePlan:
    """A plan inside which every point lies (the tiny test walks are not on the default floor)."""

    def inside(self, pts):
        return np.ones(len(np.asarray(pts).reshape(-1, 2)), bool)


def counting_renderer(renders: list):
    """A FakeRenderer class that appends to ``renders`` for every image it draws."""

    class Counting(FakeRenderer):
        def render(self, x, q, K):
            renders.append(1)
            return super().render(x, q, K)

    return Counting


def test_render_views_writes_an_unordered_sequence_at_the_network_size(plan, walk, tmp_path):
    x, q, _ = sample_views(plan, walk.x, walk.q, 6, seed=0)
    r = FakeRenderer(plan)
    K = Intrinsics.from_fov(320, 240, 65.0)
    seq = render_views(r, x, q, K, tmp_path / "dense", size=(32, 24), meta={"note": "test"})
    assert len(seq) == 6 and not seq.ordered and seq.split == "train" and seq.meta["note"] == "test"
    assert all(k == K for k in r.seen)  # rendered at full size, then downscaled
    assert seq.load_image(0).shape == (24, 32, 3)
    assert seq.intrinsics == K.scaled(32, 24)
    np.testing.assert_allclose(seq.x, x, atol=1e-6)
    assert seq.load_image(3)[0, 0, 0] == int(x[3, 0]) % 256


# ---------------------------------------------------------------------------- the trainer
def test_unordered_views_are_all_training_and_never_paired(tiny_sequence):
    from campose.dataset import PairDataset, sequence_windows
    from campose.train import split_validation

    walk = tiny_sequence("walk", 10, seed=1)
    views = tiny_sequence("views", 8, seed=2)
    views.meta["ordered"] = False
    assert walk.ordered and not views.ordered
    tr, va = split_validation([walk, views], 0.2, gap=1)
    assert [p.meta["frames"] for p in tr] == [[0, 7], [0, 8]]
    assert [p.name for p in va] == ["walk"]
    pairs = PairDataset([walk, views], size=(32, 24), max_gap=3).pairs
    assert pairs.max() < len(walk)  # no pair inside the unordered set
    windows = sequence_windows([walk, views], window=3)
    assert max(max(w) for w in windows) < len(walk)
    with pytest.raises(ValueError, match="ordered"):
        PairDataset([views], size=(32, 24))


def test_mapnet_takes_views_as_absolute_only_items_and_menet_refuses_them(tiny_sequence):
    from campose.train import TrainConfig, _AbsoluteTask, train

    walk = tiny_sequence("walk", 10, seed=1)
    views = tiny_sequence("views", 8, seed=2)
    views.meta["ordered"] = False
    for kind in ("menet", "menet_siamese"):
        with pytest.raises(ValueError, match="unordered set of views"):
            train(TrainConfig(kind=kind, backbone="mobilenet_v3_small", image_size=(32, 24), epochs=1),
                  [walk, views], progress=False)
    cfg = TrainConfig(kind="mapnet", backbone="mobilenet_v3_small", image_size=(32, 24), epochs=1, batch_size=6,
                      window=3)
    with pytest.raises(ValueError, match="needs at least one walk"):
        train(cfg, [views], progress=False)
    task = _AbsoluteTask(cfg, [walk, views], [], transform=None)
    assert task.views.tolist() == list(range(10, 18))
    seen = []
    for epoch in (0, 1):
        batches = task.batches(epoch)
        seen.append(np.concatenate(batches))
        for b in batches:
            n_win = int((b < 10).sum())
            assert n_win % 3 == 0 and (b[:n_win] < 10).all() and (b[n_win:] >= 10).all()  # windows, then views
            pairs = task._batch_pairs(b).numpy()
            assert len(pairs) == 2 * n_win // 3 and (pairs < n_win).all()  # neighbours in windows only
    for s in seen:  # every view once per epoch
        assert sorted(s[s >= 10].tolist()) == list(range(10, 18))
    assert not np.array_equal(seen[0][seen[0] >= 10], seen[1][seen[1] >= 10])  # reshuffled per epoch
    run = train(cfg, [walk, views], progress=False)
    assert len(run.history) == 1 and np.isfinite(run.history[0]["train_loss"])


# ---------------------------------------------------------------------------- the pipeline stage
def test_dense_stage_samples_around_training_frames_and_is_cached(tiny_profile, monkeypatch, plan):
    """The stage draws views around the training walk's training part (not its validation tail),
    caches them, and a PoseNet run with ``dense=True`` trains on walk + views for the profile's
    dense epochs."""

    renders = []
    Fake = counting_renderer(renders)
    prof = pipeline.profile_with(tiny_profile, dense={"views": 12, "epochs": 2, "augment": False, "seed": 0},
                                 train={**tiny_profile.train, "val_fraction": 0.25, "val_gap": 1})
    monkeypatch.setitem(pipeline.PROFILES, "tiny", prof)
    monkeypatch.setattr(pipeline, "get_renderer", lambda profile: Fake(EverywherePlan()))
    import campose.densify

    drawn_around = []
    real = campose.densify.sample_views
    monkeypatch.setattr(campose.densify, "sample_views",
                        lambda plan, x, q, n, *a, **k: drawn_around.append(np.array(x)) or real(plan, x, q, n, *a, **k))
    seq = pipeline.dense_views("tiny", labels="truth")
    assert len(seq) == 12 and not seq.ordered and len(renders) == 12
    assert seq.load_image(0).shape == (24, 32, 3)  # the profile's net_size
    walk = pipeline.render_dataset("tiny")["cli-train"]
    n_train = 14 - round(0.25 * 14) - 1  # frames before the validation tail and its gap
    np.testing.assert_array_equal(drawn_around[0], walk.x[:n_train])  # never around validation frames
    assert seq.meta["around"] == ["cli-train"]
    again = pipeline.dense_views("tiny", labels="truth")  # cached: nothing rendered
    assert len(renders) == 12 and np.array_equal(again.x, seq.x)
    pipeline.dense_views("tiny", views=5, labels="truth")
    assert len(renders) == 17

    run = pipeline.train_model("tiny", "dense", labels="truth", dense=True, kind="posenet", progress=False)
    assert len(run.history) == 2 and run.meta["dense_views"] == 12 and run.config.augment is False
    # a run with its own validation split gets views drawn around its own training frames only
    n_renders = len(renders)
    own = pipeline.train_model("tiny", "dense-own-val", labels="truth", dense=True, kind="posenet", val_fraction=0.5,
                               progress=False)
    np.testing.assert_array_equal(drawn_around[-1], walk.x[:14 - 7 - 1])
    assert own.meta["dense_views"] == 12 and len(renders) == n_renders + 12
    assert (pipeline.stage_dir("tiny", "dense") / "truth-12-val0.5-gap1" / "dense-views" / "poses.csv").is_file()
    pipeline.train_model("tiny", "dense", labels="truth", dense=True, kind="posenet", progress=False)
    assert len(renders) == n_renders + 12  # the profile's own views and run: still cached
    plain = pipeline.train_model("tiny", "plain", labels="truth", kind="posenet", progress=False)
    assert len(plain.history) == prof.train["epochs"] and plain.config.augment  # the walks alone keep the jitter
    with pytest.raises(ValueError, match="no dense views"):
        pipeline.dense_views(pipeline.profile_with(prof, dense={}), labels="truth")


# ---------------------------------------------------------------------------- MeNet's rendered pairs
def test_pairs_step_along_the_heading_and_stay_clear_of_walls(plan, walk):
    from campose.geometry import relative_pose

    sampler = PairSampler(min_step_m=0.2, max_step_m=2.5, sideways_m=0.1, yaw_deg=6, margin_m=0.3)
    xa, qa, xb, qb = sample_pairs(plan, walk.x, walk.q, 300, sampler, seed=0)
    assert xa.shape == xb.shape == (300, 3) and qa.shape == qb.shape == (300, 4)
    np.testing.assert_allclose(xa[:, 2], xb[:, 2], atol=1e-12)  # camera height kept
    yaw = camera_yaw_pitch_roll(qa)[0]
    heading = np.column_stack([np.cos(yaw), np.sin(yaw)])
    step = np.sum((xb - xa)[:, :2] * heading, 1)  # along the first view's heading
    side = np.linalg.norm((xb - xa)[:, :2] - step[:, None] * heading, axis=1)
    assert (np.abs(step) >= 0.2 - 1e-9).all() and (np.abs(step) <= 2.5 + 1e-9).all()
    assert 0.35 < np.mean(step > 0) < 0.65  # forwards and backwards alike
    assert side.max() < 0.6 and 0.05 < np.median(side) < 0.12  # |N(0, 0.1)|: median 0.067
    turn = rotation_error_deg(qa, qb)
    assert np.median(turn) < 10 and turn.max() < 45
    for f in np.linspace(0, 1, 9):  # the whole step keeps the margin
        on = xa[:, :2] + f * (xb - xa)[:, :2]
        for d in ([0, 0], [0.3, 0], [-0.3, 0], [0, 0.3], [0, -0.3]):
            assert plan.inside(on + np.array(d)).all()
    t, _ = relative_pose(xa, qa, xb, qb)  # mostly along camera a's optical axis (z)
    assert np.median(np.abs(t[:, 2]) / np.linalg.norm(t, axis=1)) > 0.9
    again = sample_pairs(plan, walk.x, walk.q, 300, sampler, seed=0)
    for u, v in zip((xa, qa, xb, qb), again):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="min_step_m <= max_step_m"):
        PairSampler(min_step_m=2, max_step_m=1)
    with pytest.raises(ValueError, match="found 0 of 5 pairs"):
        sample_pairs(plan, walk.x, walk.q, 5, PairSampler(min_step_m=200, max_step_m=300), max_tries=2)


def test_rendered_pairs_are_paired_only_with_each_other(plan, walk, tmp_path, tiny_sequence):
    from campose.dataset import PairDataset
    from campose.geometry import relative_pose

    xa, qa, xb, qb = sample_pairs(plan, walk.x, walk.q, 7, seed=1)
    seq = render_pairs(FakeRenderer(plan), xa, qa, xb, qb, Intrinsics.from_fov(64, 48, 65.0), tmp_path / "pairs",
                       size=(32, 24))
    assert len(seq) == 14 and seq.paired and not seq.ordered and seq.split == "train"
    np.testing.assert_allclose(seq.x[0::2], xa, atol=1e-6)
    np.testing.assert_allclose(seq.x[1::2], xb, atol=1e-6)
    w = tiny_sequence("walk", 6, seed=3)
    flips = []
    for seed in range(4):
        d = PairDataset([w, seq], size=(32, 24), max_gap=2, seed=seed)
        mine = d.pairs[(d.pairs >= 6).all(1)] - 6
        assert len(mine) == 7 and len(d.pairs) == 6 + 7  # one pair per walk frame, each rendered pair once
        assert ((d.pairs < 6).all(1) | (d.pairs >= 6).all(1)).all()  # never across sequences
        assert sorted(map(tuple, np.sort(mine, 1))) == [(2 * m, 2 * m + 1) for m in range(7)]
        flips.append(mine[:, 0] % 2 == 1)
        k = int(np.flatnonzero((d.pairs >= 6).all(1))[0])
        i, j = d.pairs[k] - 6
        t, q = relative_pose(seq.x[i], seq.q[i], seq.x[j], seq.q[j])
        np.testing.assert_allclose(d.t_rel[k], t, atol=1e-5)
    flips = np.concatenate(flips)
    assert 0 < flips.mean() < 1  # both orders
    with pytest.raises(ValueError, match="at least one pair"):
        render_pairs(FakeRenderer(plan), xa, qa, xb[:3], qb[:3], Intrinsics.from_fov(64, 48, 65.0), tmp_path / "x")


def test_menet_trains_on_rendered_pairs_and_still_refuses_plain_views(tiny_sequence, tmp_path, plan, walk):
    from campose.train import TrainConfig, train

    w = tiny_sequence("walk", 10, seed=1)
    xa, qa, xb, qb = sample_pairs(plan, walk.x, walk.q, 6, seed=2)
    pairs = render_pairs(FakeRenderer(plan), xa, qa, xb, qb, Intrinsics.from_fov(64, 48, 65.0), tmp_path / "p",
                         size=(32, 24))
    cfg = TrainConfig(kind="menet", backbone="mobilenet_v3_small", image_size=(32, 24), epochs=1, batch_size=4,
                      max_gap=2, val_fraction=0.3)
    run = train(cfg, [w, pairs], progress=False)
    assert run.status == "completed" and np.isfinite(run.history[0]["train_loss"])
    assert run.split["p"] == {"train": [0, 12]}  # all rendered pairs train; validation is the walk's tail
    views = tiny_sequence("views", 4, seed=2)
    views.meta["ordered"] = False
    with pytest.raises(ValueError, match="views is an unordered set of views"):
        train(cfg, [w, views], progress=False)


def test_dense_pairs_stage_draws_around_training_frames_and_menet_runs_use_it(tiny_profile, monkeypatch):
    """``dense_sequence`` gives MeNet the rendered pairs (PoseNet the views); the stage steps up to
    the distance the walks cover in ``max_gap`` frames, is cached, and a MeNet run with
    ``dense=True`` trains on walk pairs plus rendered pairs for the profile's pair epochs."""

    renders = []
    Fake = counting_renderer(renders)
    prof = pipeline.profile_with(tiny_profile, dense={"views": 4, "epochs": 2, "augment": False, "pairs": 5,
                                                      "pair_epochs": 3, "seed": 0},
                                 train={**tiny_profile.train, "val_fraction": 0.25, "val_gap": 1, "max_gap": 2})
    monkeypatch.setitem(pipeline.PROFILES, "tiny", prof)
    monkeypatch.setattr(pipeline, "get_renderer", lambda profile: Fake(EverywherePlan()))
    seq = pipeline.dense_sequence("tiny", "menet", labels="truth")
    assert len(seq) == 10 and seq.paired and len(renders) == 10
    walk = pipeline.render_dataset("tiny")["cli-train"]
    n_train = 14 - round(0.25 * 14) - 1
    steps = np.linalg.norm(walk.x[2:n_train] - walk.x[:n_train - 2], axis=1)  # max_gap = 2 frames apart
    assert seq.meta["sampler"]["max_step_m"] == pytest.approx(np.percentile(steps, 90), abs=1e-3)
    assert seq.meta["around"] == ["cli-train"]
    assert pipeline.dense_sequence("tiny", "menet_siamese", labels="truth").paired and len(renders) == 10  # cached
    assert not pipeline.dense_sequence("tiny", "posenet", labels="truth").paired
    # the profile's settings for runs on rendered data: epochs; views without colour jitter
    assert pipeline.dense_changes("tiny", {"kind": "menet"}) == {"kind": "menet", "epochs": 3}
    assert pipeline.dense_changes("tiny", {"kind": "posenet"}) == {"kind": "posenet", "epochs": 2, "augment": False}
    assert pipeline.dense_changes("tiny", {"kind": "mapnet", "epochs": 5, "augment": True}) == {
        "kind": "mapnet", "epochs": 5, "augment": True}  # what the run sets wins
    run = pipeline.train_model("tiny", "menet-pairs", labels="truth", dense=True, kind="menet", progress=False)
    assert len(run.history) == 3 and run.meta["dense_pairs"] == 5 and "dense_views" not in run.meta
    with pytest.raises(ValueError, match="no rendered pairs"):
        pipeline.dense_pairs(pipeline.profile_with(prof, dense={}), labels="truth")
    with pytest.raises(ValueError, match="unknown model kind"):
        pipeline.dense_sequence("tiny", "nonet", labels="truth")


def test_plot_views_draws_every_view_and_a_sample_of_headings(plan, walk):
    import matplotlib

    matplotlib.use("Agg")
    from campose.plots import plot_views

    class Views:  # what plot_views reads of a sequence
        def __init__(self, x, q):
            self.x, self.q = x, q

        def __len__(self):
            return len(self.x)

    x, q, _ = sample_views(plan, walk.x, walk.q, 40, seed=3)
    ax = plot_views(plan, [walk], Views(x, q), arrows=10)
    dots = [c for c in ax.collections if c.get_label() == "40 views"]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == 40
    quivers = [c for c in ax.collections if type(c).__name__ == "Quiver"]
    assert len(quivers) == 1 and quivers[0].N == 10
