"""The models stage (pipeline.train_model, evaluate_model), the chapters' studies and the architecture
summary, on the tiny profile of conftest.py (no rendering, no SfM)."""

from types import SimpleNamespace

import numpy as np
import pytest

from campose import models, pipeline, plots, study
from campose.train import TrainConfig

SMALL = {"backbone": "mobilenet_v3_small", "hidden": (16,), "batch_size": 4, "epochs": 1, "num_threads": 1}


def test_train_config_layers_profile_then_changes(tiny_profile):
    cfg = pipeline.train_config(tiny_profile, loss="mse")
    assert isinstance(cfg, TrainConfig) and cfg.image_size == (32, 24) and cfg.loss == "mse"
    for k, v in tiny_profile.train.items():
        assert getattr(cfg, k) == (tuple(v) if isinstance(v, list) else v)
    with pytest.raises(ValueError, match="unknown model kind"):
        pipeline.train_config(tiny_profile, kind="posenet3")


def test_train_model_is_cached_and_keyed_by_config(tiny_profile, monkeypatch):
    first = pipeline.train_model(tiny_profile, "pn", labels="truth", **SMALL)
    ckpt = pipeline.model_dir(tiny_profile, "pn") / "model.pt"
    assert first.checkpoint == ckpt and ckpt.is_file() and first.meta["labels"] == "truth"
    assert first.meta["name"] == "pn" and first.config.image_size == (32, 24)

    import campose.train as T

    def no_training(*a, **k):
        raise AssertionError("a cached run must not train again")

    monkeypatch.setattr(T, "train", no_training)
    again = pipeline.train_model(tiny_profile, "pn", labels="truth", **SMALL)
    assert again.history == first.history and again.best_epoch == first.best_epoch
    with pytest.raises(AssertionError, match="must not train"):  # another config is another run
        pipeline.train_model(tiny_profile, "pn", labels="truth", **{**SMALL, "lr": 3e-4})


def test_train_model_checks_its_inputs(tiny_profile):
    with pytest.raises(ValueError, match="labels must be one of"):
        pipeline.train_model(tiny_profile, "pn", labels="gps", **SMALL)
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="plain folder name"):
            pipeline.model_dir(tiny_profile, bad)


def test_evaluate_model_scores_labels_and_truth(tiny_profile, monkeypatch):
    truth = pipeline.render_dataset(tiny_profile)

    def labels(seq):  # SfM left the first frame of every walk unregistered
        return type(seq)(seq.name, seq.root, seq.images[1:], seq.x[1:], seq.q[1:], seq.intrinsics, seq.meta)

    stand_in = SimpleNamespace(sequences={n: labels(s) for n, s in truth.items()}, truth=truth)
    monkeypatch.setattr(pipeline, "label_dataset", lambda profile, **kw: stand_in)
    res = pipeline.train_model(tiny_profile, "pn-sfm", labels="sfm", **SMALL)
    ev = pipeline.evaluate_model(tiny_profile, res)
    assert ev.table.loc[("truth", "cli-test"), "frames"] == 6  # every frame against the truth
    assert ev.table.loc[("labels", "cli-test"), "frames"] == 5  # only labelled frames against labels


def test_evaluate_model_caches_its_scores_beside_the_checkpoint(tiny_profile, monkeypatch):
    import os

    import campose.evaluate as E

    res = pipeline.train_model(tiny_profile, "pn-cache", labels="truth", **SMALL)
    first = pipeline.evaluate_model(tiny_profile, res)
    assert (res.checkpoint.parent / "evaluation-truth.pkl").is_file()

    def no_scoring(*a, **k):
        raise AssertionError("cached scores must not be computed again")

    with monkeypatch.context() as m:
        m.setattr(E, "evaluate", no_scoring)
        again = pipeline.evaluate_model(tiny_profile, res)
        assert again.table.equals(first.table) and again.frames.equals(first.frames)
        # a new checkpoint (retrained: another file) is scored again
        st = res.checkpoint.stat()
        os.utime(res.checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(AssertionError, match="must not be computed"):
            pipeline.evaluate_model(tiny_profile, res)
    (res.checkpoint.parent / "evaluation-truth.pkl").write_bytes(b"not a pickle")  # unreadable: scored again
    assert pipeline.evaluate_model(tiny_profile, res).table.equals(first.table)


def test_run_study_tables_every_run(tiny_profile):
    s = study.run_study(tiny_profile, "posenet", labels="truth", only=["L1", "MSE"], **SMALL)
    t = s.table()
    assert list(t.index) == ["L1", "MSE"] and set(t["loss"]) == {"l1", "mse"}
    assert (t["frames"] == 6).all() and np.isfinite(t["median position (m)"].astype(float)).all()
    assert s.best() in ("L1", "MSE")
    assert (pipeline.model_dir(tiny_profile, "posenet-l1") / "model.pt").is_file()
    assert len(s.frames("L1")) == 6
    axes = s.plot_training()
    assert len(axes[0].get_lines()) >= 2

    m = study.run_study(tiny_profile, "menet", labels="truth", **{**SMALL, "max_gap": 2, "val_fraction": 0.2})
    mt = m.table()
    assert list(mt.index) == list(study.STUDIES["menet"]) and (mt["pairs"] > 0).all()
    assert "median direction (deg)" in mt and m.best() in mt.index


def test_run_study_rejects_unknown_names(tiny_profile):
    with pytest.raises(ValueError, match="unknown study"):
        study.run_study(tiny_profile, "vggnet")
    with pytest.raises(ValueError, match="has no run"):
        study.run_study(tiny_profile, "posenet", only=["Huber"])


def test_run_names_are_distinct_folder_names():
    for name, runs in study.STUDIES.items():
        names = [study.run_name(name, label) for label in runs]
        assert len(set(names)) == len(names)
        assert all("/" not in n and " " not in n and "=" not in n for n in names)
    assert study.run_name("posenet", "L1, alpha = 10") == "posenet-l1-alpha-10"


@pytest.mark.parametrize("kind", ["posenet", "mapnet", "menet", "menet_siamese"])
def test_architecture_accounts_for_every_parameter(kind):
    model = models.build_model(kind, backbone="resnet18", hidden=(64,))
    rows = models.architecture(model, (64, 48))
    assert rows[0]["part"] == "input" and rows[0]["shape"] == (model.in_channels, 48, 64)
    assert [r["part"] for r in rows[-2:]] == ["output", "output"]
    assert rows[-2]["shape"] == (3,) and rows[-1]["shape"] == (model.rotation_dim,)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    pool = next(r for r in rows if r["part"] == "pool")
    assert pool["shape"] == (512 * (2 if model.siamese else 1),)
    assert model.training  # the mode is restored
    ax = plots.plot_architecture(rows, title=kind)
    assert len(ax.patches) == len(rows)


def test_study_figures_and_summary(tiny_profile):
    from campose.floorplan import load_floorplan

    s = study.run_study(tiny_profile, "mapnet", labels="truth", only=["L1"], **SMALL)
    summary = s.summary()
    assert list(summary.index)[0] == "L1" and "report" in summary.index[-1]
    assert summary.iloc[-1]["median position (m)"] == study.REPORT["mapnet"]["position_m"]
    assert "report" not in s.summary(report=False).index[-1]
    a1, a2 = s.plot_cumulative()
    assert len(a1.lines) >= 1 and a2.get_xlabel() == "rotation error (deg)"
    fig = s.plot_predictions(load_floorplan())
    assert len(fig.axes) >= 1 and "cli-test" in fig.axes[0].get_title()


def test_train_all_fills_the_cache_for_the_chapters(tiny_profile):
    out = study.train_all(tiny_profile, studies=["menet"], labels="truth", jobs=1,
                          **{**SMALL, "max_gap": 2, "val_fraction": 0.2})
    assert [r["name"] for r in out["runs"]] == [study.run_name("menet", k) for k in study.STUDIES["menet"]]
    assert all(r["status"] == "completed" and r["train_seconds"] > 0 for r in out["runs"])
    again = study.train_all(tiny_profile, studies=["menet"], labels="truth", jobs=1,
                            **{**SMALL, "max_gap": 2, "val_fraction": 0.2})
    assert again["wall_seconds"] < out["wall_seconds"]  # loaded from the cache, nothing trained
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in out["runs"]]
    with pytest.raises(ValueError, match="unknown study"):
        study.train_all(tiny_profile, studies=["alexnet"])
    with pytest.raises(ValueError, match="jobs must be"):
        study.train_all(tiny_profile, jobs=0)


def test_the_profile_chooses_the_label_source(tiny_profile, monkeypatch):
    truth_profile = pipeline.profile_with(tiny_profile, name="tiny-truth", labels="truth")
    monkeypatch.setitem(pipeline.PROFILES, "tiny-truth", truth_profile)
    out = pipeline.stage_dir(truth_profile, "render")
    out.parent.mkdir(parents=True, exist_ok=True)
    (out).symlink_to(pipeline.stage_dir(tiny_profile, "render"), target_is_directory=True)

    def no_sfm(*a, **k):
        raise AssertionError("a profile that trains on the truth must not need SfM labels")

    monkeypatch.setattr(pipeline, "label_dataset", no_sfm)
    run = pipeline.train_model(truth_profile, "pn", **SMALL)
    assert run.meta["labels"] == "truth"
    test, refs = pipeline.test_walks(truth_profile)
    assert list(refs) == ["truth"] and list(test) == ["cli-test"]
    s = study.run_study(truth_profile, "posenet", only=["L1"], **SMALL)
    assert s.labels == "truth" and list(s.table().index) == ["L1"]
    with pytest.raises(AssertionError, match="must not need SfM"):
        pipeline.train_model(tiny_profile, "pn", **SMALL)  # the tiny profile's own labels are SfM's
