import json

import pytest

from campose.camera import Intrinsics, IntrinsicsError


def test_from_fov_and_scaling():
    K = Intrinsics.from_fov(640, 480, 65.0)
    assert K.hfov_deg == pytest.approx(65.0)
    k2 = K.scaled(320, 240)
    assert k2.fx == pytest.approx(K.fx / 2) and k2.cx == 160 and k2.hfov_deg == pytest.approx(65.0)


def test_round_trip(tmp_path):
    K = Intrinsics.from_fov(320, 240)
    K.save(tmp_path / "k.json")
    assert Intrinsics.load(tmp_path / "k.json") == K
    assert K.colmap_params().count(",") == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        (json.dumps({"width": 320, "height": 240, "fx": 200, "fy": 200, "cx": 160}), "missing cy"),
        (json.dumps({"width": 320, "height": 240, "fx": -1, "fy": 200, "cx": 160, "cy": 120}), "positive"),
        (json.dumps({"width": 320.5, "height": 240, "fx": 1, "fy": 200, "cx": 160, "cy": 120}), "integer"),
        (json.dumps({"width": 320, "height": 240, "fx": 200, "fy": 200, "cx": 900, "cy": 120}), "outside"),
        (json.dumps({"model": "OPENCV", "width": 320}), "PINHOLE"),
        (json.dumps([1, 2]), "JSON object"),
    ],
)
def test_bad_intrinsics_files(tmp_path, content, message):
    p = tmp_path / "k.json"
    p.write_text(content)
    with pytest.raises(IntrinsicsError, match=message):
        Intrinsics.load(p)


def test_missing_file(tmp_path):
    with pytest.raises(IntrinsicsError, match="not found"):
        Intrinsics.load(tmp_path / "none.json")
