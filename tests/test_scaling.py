"""Growth measurements (campose.scaling): the exponent fit, the checks on sizes, the cached
training table on the tiny profile of conftest.py, the SfM table's bookkeeping with a stand-in for
COLMAP, and the figure. One slow test runs real SfM on a few quick-profile renders when they are
cached."""

import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campose import pipeline, scaling


# ---------------------------------------------------------------------------- fit_exponent
@settings(max_examples=60, deadline=None)
@given(k=st.floats(-1.0, 3.0), c=st.floats(1e-3, 1e3),
       n=st.lists(st.integers(1, 100_000), min_size=2, max_size=8, unique=True))
def test_fit_exponent_recovers_a_power_law(k, c, n):
    seconds = c * np.asarray(n, float) ** k
    assert scaling.fit_exponent(n, seconds) == pytest.approx(k, abs=1e-6)


def test_fit_exponent_is_a_least_squares_slope_and_skips_failed_runs():
    n = np.array([8, 16, 32, 64])
    noisy = 0.5 * n ** 1.5 * np.array([1.1, 0.9, 1.05, 0.97])
    assert scaling.fit_exponent(n, noisy) == pytest.approx(np.polyfit(np.log(n), np.log(noisy), 1)[0])
    assert scaling.fit_exponent([4, 8, 16], [1.0, 4.0, math.nan]) == pytest.approx(2.0)  # NaN: a failed run


@pytest.mark.parametrize("n, s, match", [([8, 8], [1.0, 2.0], "two distinct sizes"),
                                         ([8], [1.0], "two distinct sizes"),
                                         ([0, 8], [1.0, 2.0], "positive"),
                                         ([4, 8], [1.0, -2.0], "positive"),
                                         ([4, 8, 16], [1.0, 2.0], "differ in length")])
def test_fit_exponent_refuses_what_it_cannot_fit(n, s, match):
    with pytest.raises(ValueError, match=match):
        scaling.fit_exponent(n, s)


# ---------------------------------------------------------------------------- sizes
def test_default_sizes_are_within_the_brief():
    for name in ("quick", "full"):
        assert name in pipeline.PROFILES
        sfm, train = scaling.SIZES[name]["sfm"], scaling.SIZES[name]["train"]
        assert len(sfm) >= 4 and len(train) >= 3
        assert list(sfm) == sorted(set(sfm)) and min(sfm) >= 3 and min(train) >= 2


def test_unknown_profile_and_bad_sizes_are_refused(tiny_profile):
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        scaling.sfm_scaling("nope")
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        scaling.training_scaling("nope")
    with pytest.raises(ValueError, match="sizes must be positive, got -4"):
        scaling.sfm_scaling(tiny_profile, sizes=(-4, 8))
    with pytest.raises(ValueError, match="sizes must be positive, got 0"):
        scaling.training_scaling(tiny_profile, sizes=(0,), labels="truth")
    with pytest.raises(ValueError, match="at least 3"):
        scaling.sfm_scaling(tiny_profile, sizes=(2, 8))
    with pytest.raises(ValueError, match="whole numbers"):
        scaling.training_scaling(tiny_profile, sizes=(2.5,), labels="truth")
    with pytest.raises(ValueError, match="give at least one size"):
        scaling.sfm_scaling(tiny_profile, sizes=())
    with pytest.raises(ValueError, match="matcher must be one of"):
        scaling.sfm_scaling(tiny_profile, sizes=(4,), matchers=("vocab_tree",))


def test_sizes_beyond_the_frames_available_name_what_there_is(tiny_profile):
    # the tiny profile's training walk cli-train has 14 frames
    with pytest.raises(ValueError, match=r"'cli-train'.*14 frames are available.*\[20, 100\]"):
        scaling.sfm_scaling(tiny_profile, sizes=(8, 20, 100))
    with pytest.raises(ValueError, match=r"cli-train.*14 frames are available.*\[15\]"):
        scaling.training_scaling(tiny_profile, sizes=(4, 15), labels="truth")


def test_pair_count_is_what_colmap_matched():
    # COLMAP 4.2.1 on the quick walk: sequential (overlap 8) and exhaustive pairs for 4, 8, 16, 32 frames
    assert [scaling.pair_count(n) for n in (4, 8, 16, 32)] == [5, 17, 49, 129]
    assert [scaling.pair_count(n, "exhaustive") for n in (4, 8, 16, 32)] == [6, 28, 120, 496]
    assert scaling.pair_count(1000, overlap=3) == 999 + 998 + 996
    with pytest.raises(ValueError, match="matcher must be one of"):
        scaling.pair_count(10, "spatial")


# ---------------------------------------------------------------------------- training
def test_training_scaling_times_each_size_and_is_cached(tiny_profile, monkeypatch):
    table = scaling.training_scaling(tiny_profile, sizes=(8, 4), labels="truth")
    assert list(table.columns[:len(scaling.TRAIN_COLUMNS)]) == scaling.TRAIN_COLUMNS
    assert table["images"].tolist() == [4, 8] and (table["epochs"] == 1).all()
    assert (table["seconds"] > 0).all() and (table["images_per_s"] > 0).all()
    assert (table["decode_s"] > 0).all() and (table["setup_s"] >= 0).all() and (table["threads"] >= 0).all()
    assert np.allclose(table["images_per_s"], table["images"] / table["seconds"], rtol=0.02)
    out = pipeline.stage_dir(tiny_profile, "scaling/train")
    assert (out / "rows.json").is_file() and (out / "rows.csv").is_file() and (out / "stage.json").is_file()
    assert table.attrs["labels"] == "truth" and table.attrs["config"]["val_fraction"] == 0.0

    import campose.train as T

    def no_training(*a, **k):
        raise AssertionError("a cached table must not train again")

    monkeypatch.setattr(T, "train", no_training)
    again = scaling.training_scaling(tiny_profile, sizes=(4, 8), labels="truth")
    pd.testing.assert_frame_equal(again, table)
    with pytest.raises(AssertionError, match="must not train"):  # other sizes: measured again
        scaling.training_scaling(tiny_profile, sizes=(4, 6), labels="truth")
    with pytest.raises(AssertionError, match="must not train"):
        scaling.training_scaling(tiny_profile, sizes=(4, 8), labels="truth", force=True)


# ---------------------------------------------------------------------------- SfM bookkeeping
def _fake_reconstruct(calls):
    """A stand-in for campose.sfm.reconstruct: records its arguments, writes an empty database."""
    import pycolmap

    def reconstruct(root, out, image_names, intrinsics, progress, **options):
        calls.append({"out": out, "names": list(image_names), "intrinsics": intrinsics, **options})
        out.mkdir(parents=True)
        with pycolmap.Database.open(str(out / "database.db")):
            pass
        n = len(image_names)
        shared = options.get("features_from") is not None
        timings = {"extract": 0.001 if shared else 0.1 * n, "match": 0.01 * n ** (2 if options["matcher"] ==
                                                                                    "exhaustive" else 1),
                   "map": 0.05 * n}
        return SimpleNamespace(timings=timings, registered=n - 1, num_models=1)

    return reconstruct


def test_sfm_scaling_rows_options_sharing_and_cache(tiny_profile, monkeypatch):
    import campose.sfm as S

    calls = []
    monkeypatch.setattr(S, "reconstruct", _fake_reconstruct(calls))
    table = scaling.sfm_scaling(tiny_profile, sizes=(8, 4))
    assert list(table.columns[:len(scaling.SFM_COLUMNS)]) == scaling.SFM_COLUMNS
    assert table[["frames", "matcher"]].values.tolist() == [[4, "sequential"], [4, "exhaustive"],
                                                          [8, "sequential"], [8, "exhaustive"]]
    assert table["extraction"].tolist() == ["own", "shared"] * 2
    # the shared extraction is reported (and counted in total_s) for the exhaustive rows
    assert table["extract_s"].tolist() == pytest.approx([0.4, 0.4, 0.8, 0.8])
    assert (table["registered"] == table["frames"] - 1).all() and (table["models"] == 1).all()
    assert np.allclose(table["seconds_per_image"], table["total_s"] / table["frames"], rtol=0.01, atol=1e-3)
    assert (table.loc[table.matcher == "exhaustive", "total_s"].values >= 0.4 - 1e-3).all()
    # the first frames of the first training walk, fixed intrinsics, incremental mapper, no retrieval
    assert calls[0]["names"] == [pipeline.sfm_name("cli-train", f"{i:06d}.png") for i in range(4)]
    assert all(c["intrinsics"] == tiny_profile.intrinsics() for c in calls)
    assert all(c["mapper"] == "incremental" and c["retrieval"] == 0 for c in calls)
    assert [c.get("features_from") is not None for c in calls] == [False, True, False, True]
    assert calls[0]["overlap"] == tiny_profile.sfm["overlap"]

    n_calls = len(calls)
    again = scaling.sfm_scaling(tiny_profile, sizes=(4, 8))
    assert len(calls) == n_calls  # loaded, not measured
    pd.testing.assert_frame_equal(again, table)
    scaling.sfm_scaling(tiny_profile, sizes=(4, 8), share_extraction=False, matchers="exhaustive")
    assert len(calls) == n_calls + 2 and all(c.get("features_from") is None for c in calls[n_calls:])


# ---------------------------------------------------------------------------- figure
def _synthetic_tables():
    n = np.array([8, 16, 32, 64])
    rows = []
    for m, k in (("sequential", 1.0), ("exhaustive", 2.0)):
        for v in n:
            t = 0.01 * v ** k
            rows.append({"frames": v, "matcher": m, "extract_s": t / 3, "match_s": t / 3, "map_s": t / 3,
                         "total_s": t})
    train = pd.DataFrame({"images": [32, 64, 128], "epochs": 1, "seconds": [0.5, 1.0, 2.0]})
    return pd.DataFrame(rows), train


def test_plot_scaling_draws_log_log_panels_with_the_exponents():
    import matplotlib.pyplot as plt

    sfm, train = _synthetic_tables()
    fig = scaling.plot_scaling(sfm, train)
    try:
        assert len(fig.axes) == 3
        for ax in fig.axes:
            assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
            assert ax.get_ylabel() == "time (s)" and ax.get_xlabel()
        assert "frames" in fig.axes[0].get_xlabel() and "images" in fig.axes[2].get_xlabel()
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert "sequential (k = 1.00)" in legend and "exhaustive (k = 2.00)" in legend
        steps = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert {"extract, exhaustive", "match, sequential", "map, exhaustive"} <= set(steps)  # nothing shared
        assert any("k = 1.00" in t.get_text() for t in fig.axes[2].get_legend().get_texts())
    finally:
        plt.close(fig)
    fig = scaling.plot_scaling(sfm)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_exponents_of_the_tables():
    sfm, train = _synthetic_tables()
    k = scaling.exponents(sfm, train)
    assert k == pytest.approx({"sfm_sequential": 1.0, "sfm_exhaustive": 2.0, "training": 1.0})


# ---------------------------------------------------------------------------- real SfM
@pytest.mark.slow
def test_sfm_scaling_on_quick_renders(tmp_path, monkeypatch):
    """Real COLMAP on the first 4 and 6 frames of the quick training walk (about 10 s on 2 cores),
    when the quick render stage is cached; the scaling stage goes to a temporary data root."""
    real = pipeline.stage_dir("quick", "render")
    if not pipeline.stage_is_current(real, pipeline.render_key(pipeline.get_profile("quick"))):
        pytest.skip("the quick profile's render stage is not built")
    (tmp_path / "quick").mkdir()
    os.symlink(real, tmp_path / "quick" / "render")
    monkeypatch.setenv("CAMPOSE_DATA", str(tmp_path))
    table = scaling.sfm_scaling("quick", sizes=(4, 6), progress=False)
    assert len(table) == 4 and (table["registered"] == table["frames"]).all() and (table["models"] == 1).all()
    assert (table[["extract_s", "match_s", "map_s", "total_s"]] > 0).all().all()
    seq, exh = (table[table.matcher == m].set_index("frames") for m in ("sequential", "exhaustive"))
    assert exh.loc[6, "pairs"] == 15 and seq.loc[6, "pairs"] == 5 + 4 + 2  # offsets 1, 2, 4 (overlap 8)
    assert (tmp_path / "quick" / "scaling" / "sfm" / "rows.json").is_file()
