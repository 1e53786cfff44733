"""The dashboard end to end in headless Chromium: the real ``campose serve``, a photo uploaded through
the page's file input, the marker drawn on the plan, and a screenshot.

Chromium is driven over the Chrome DevTools Protocol on a pipe by :mod:`campose.browser` (standard
library only). Skipped where no Chromium is installed (:func:`campose.browser.find_chromium`;
``make test`` installs it with apt where it can).
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from campose.browser import FLAGS, Chromium, find_chromium, screenshot
from campose.serve import serving

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no Chromium (Debian: apt-get install chromium; `make test` tries)")
STATUS = "document.getElementById('status').textContent"


@pytest.fixture
def server(tmp_path):
    """The real ``campose serve`` on a free loopback port with an untrained 64x48 PoseNet checkpoint
    that predicts outside the building (so the page shows a prediction and its snapped position)."""
    from campose.models import build_model
    from campose.train import TrainConfig, save_checkpoint

    torch.manual_seed(0)
    model = build_model("posenet", backbone="mobilenet_v3_small", hidden=[64], translation_mean=[-1.5, 8.0, 1.6],
                        translation_std=[0.05, 0.05, 0.01])
    cfg = TrainConfig(kind="posenet", backbone="mobilenet_v3_small", hidden=(64,), image_size=(64, 48))
    ckpt = save_checkpoint(tmp_path / "model.pt", model, train_config=cfg.to_dict(), status="completed",
                           metrics={}, meta={"profile": "quick", "labels": "truth", "name": "browser-test"})
    with serving(ckpt) as url:
        yield url


def test_dashboard_locates_an_uploaded_photo(server, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(photo, quality=90)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")

    with Chromium() as browser:
        profile_dir = browser.profile_dir
        assert profile_dir.is_dir()
        page = browser.open(server + "/")
        page.wait_for("document.getElementById('plan')?.dataset.state === 'ready'", explain=STATUS)
        assert page.js("document.querySelectorAll('#plan-walls line').length") > 10
        assert page.js("document.getElementById('marker').dataset.state") == "empty"

        page.upload("#file", photo)
        page.wait_for("document.getElementById('marker').dataset.state === 'shown'", explain=STATUS)
        marker = page.js("""(() => { const m = document.getElementById('marker'), b = m.getBoundingClientRect();
            return {visible: m.getAttribute('visibility'), snapped: m.dataset.snapped, w: b.width, h: b.height,
                    status: document.getElementById('status').dataset.state,
                    position: document.getElementById('n-position').textContent,
                    preview: document.getElementById('preview').naturalWidth}; })()""")
        assert marker["visible"] == "visible" and marker["w"] > 0 and marker["h"] > 0, marker
        assert marker["snapped"] == "true" and marker["status"] == "done" and marker["position"].startswith("x -1.")
        assert marker["preview"] == 320

        out = tmp_path / "dashboard.png"
        shot = page.screenshot(out)
        assert out.read_bytes() == shot and shot.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(shot)).size == (1280, 900)

        page.upload("#file", not_image)  # the server's refusal is shown to the person
        page.wait_for("document.getElementById('status').dataset.state === 'error'", explain=STATUS)
        assert "not a JPEG or PNG" in page.js(STATUS)
    assert browser.proc.returncode is not None and not profile_dir.exists()  # closed, fresh profile removed


def test_screenshot_after_an_upload(server, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(photo)
    out = screenshot(server + "/", tmp_path / "shot.png", upload=photo, selector="#file",
                     ready="document.getElementById('plan')?.dataset.state === 'ready'",
                     done="document.getElementById('marker').dataset.state === 'shown'", window_size=(800, 600))
    assert out == tmp_path / "shot.png" and Image.open(out).size == (800, 600)


def test_flags_keep_chromium_headless_and_offline():
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-pipe"):
        assert flag in FLAGS
