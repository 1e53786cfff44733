"""``campose train`` and ``campose evaluate`` end to end on a tiny profile, without rendering or SfM.

The ``tiny_profile`` fixture (conftest.py) writes the render stage directly; ``--labels truth``
trains on those poses. The SfM-label path uses a stand-in for ``pipeline.label_dataset``.
"""

from types import SimpleNamespace

import pytest

from campose import cli, pipeline
from campose.train import load_checkpoint

SMALL = ["--backbone", "mobilenet_v3_small", "--hidden", "32", "--batch-size", "4", "--threads", "1"]


def test_train_then_evaluate_on_true_poses(tiny_profile, tmp_path, capsys):
    ckpt = tmp_path / "posenet.pt"
    rc = cli.main(["train", "--profile", "tiny", "--model", "posenet", "--loss", "smoothl1", "--alpha", "1",
                   "--epochs", "2", "--labels", "truth", "--out", str(ckpt), *SMALL])
    out = capsys.readouterr().out
    assert rc == 0 and "status: completed" in out and str(ckpt) in out and "val_position_m" in out
    model, info = load_checkpoint(ckpt)
    assert info["train_config"]["image_size"] == [32, 24] and info["train_config"]["loss"] == "smoothl1"
    assert info["meta"] == {"profile": "tiny", "labels": "truth"} and list(info["split"]) == ["cli-train"]

    rc = cli.main(["evaluate", "--checkpoint", str(ckpt), "--profile", "tiny", "--csv", str(tmp_path / "t.csv")])
    out = capsys.readouterr().out
    assert rc == 0 and "cli-test" in out and "median position (m)" in out and "labels" not in out
    assert (tmp_path / "t.csv").read_text().startswith("reference,sequence,frames")


def test_train_and_evaluate_menet_on_sfm_labels(tiny_profile, tmp_path, capsys, monkeypatch):
    truth = pipeline.render_dataset(tiny_profile)

    def labels(seq):  # SfM left the first frame of every walk unregistered
        return type(seq)(seq.name, seq.root, seq.images[1:], seq.x[1:], seq.q[1:], seq.intrinsics, seq.meta)

    stand_in = SimpleNamespace(sequences={n: labels(s) for n, s in truth.items()}, truth=truth)
    monkeypatch.setattr(pipeline, "label_dataset", lambda profile, **kw: stand_in)
    ckpt = tmp_path / "menet.pt"
    assert cli.main(["train", "--profile", "tiny", "--model", "menet_siamese", "--epochs", "1", "--val-fraction", "0.2",
                     "--out", str(ckpt), *SMALL]) == 0
    _, info = load_checkpoint(ckpt)
    assert info["split"]["cli-train"]["val"][1] == 13  # trained on the 13 labelled frames
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "labels" in out and "truth" in out and "median direction (deg)" in out


def test_clear_errors(tiny_profile, tmp_path, capsys):
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--profile", "tiny"]) == 2
    assert "campose evaluate: error: checkpoint not found" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_text("garbage")
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--profile", "tiny"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    for args, msg in [(["--model", "posenet3"], "invalid choice: 'posenet3'"), (["--loss", "huber"], "invalid choice"),
                      (["--size", "128by96"], "WIDTHxHEIGHT")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--profile", "tiny", *args])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert cli.main(["train", "--profile", "tiny", "--labels", "truth", "--batch-size", "1"]) == 2
    assert "batch_size must be >= 2" in capsys.readouterr().err


def test_train_with_dense_views(tiny_profile, tmp_path, capsys, monkeypatch):
    """``--dense-views N`` adds N views around the training walk (rendered by a stand-in renderer
    here: the tiny walks lie off the default plan) and trains PoseNet on both; MeNet refuses."""
    import numpy as np

    class Anywhere:
        def inside(self, pts):
            return np.ones(len(np.asarray(pts).reshape(-1, 2)), bool)

    class Flat:
        plan = Anywhere()

        def render(self, x, q, K):
            return np.full((K.height, K.width, 3), 128, np.uint8)

    monkeypatch.setattr(pipeline, "get_renderer", lambda profile: Flat())
    ckpt = tmp_path / "dense.pt"
    rc = cli.main(["train", "--profile", "tiny", "--model", "posenet", "--epochs", "1", "--labels", "truth",
                   "--dense-views", "9", "--out", str(ckpt), *SMALL])
    assert rc == 0, capsys.readouterr().err
    _, info = load_checkpoint(ckpt)
    assert info["meta"]["dense_views"] == 9 and info["split"]["dense-views"]["train"] == [0, 9]
    capsys.readouterr()
    ckpt = tmp_path / "pairs.pt"  # MeNet: N rendered pairs instead of views
    rc = cli.main(["train", "--profile", "tiny", "--model", "menet", "--epochs", "1", "--labels", "truth",
                   "--dense-views", "4", "--val-fraction", "0.2", "--out", str(ckpt), *SMALL])
    assert rc == 0, capsys.readouterr().err
    _, info = load_checkpoint(ckpt)
    assert info["meta"]["dense_pairs"] == 4 and info["split"]["dense-pairs"]["train"] == [0, 8]
    capsys.readouterr()
    assert cli.main(["train", "--profile", "tiny", "--labels", "truth", "--dense-views", "-1", *SMALL]) == 2
    assert "--dense-views must be >= 0" in capsys.readouterr().err
