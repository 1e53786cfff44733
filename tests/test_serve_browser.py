"""The dashboard end to end in headless Chromium: the real ``campose serve``, a photo uploaded through
the page's file input, the marker drawn on the plan, and a screenshot.

Chromium is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte, commands on fd 3, answers on fd 4), so no Python package beyond
the standard library is needed. Skipped where ``/usr/bin/chromium`` is absent (``make test``
installs it with apt where it can).
"""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason="no /usr/bin/chromium (Debian: apt-get install chromium; `make test` tries)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900", "--remote-debugging-pipe"]


class DevTools:
    """A Chromium process and its DevTools pipe: ``send(method, params, session)`` -> result."""

    def __init__(self, profile_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds():  # in the child: the protocol reads fd 3, writes fd 4
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                     preexec_fn=wire_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id, self._answers, self._cond = 0, {}, threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._answers[msg["id"]] = msg
                        self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: self._next_id in self._answers, timeout):
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            answer = self._answers.pop(self._next_id)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)


class Page:
    """One tab: JavaScript evaluation and waiting for a condition."""

    def __init__(self, cdp: DevTools, url: str):
        self.cdp = cdp
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def send(self, method, params=None, timeout=30):
        return self.cdp.send(method, params, self.session, timeout)

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                status = self.js("document.getElementById('status').textContent")
                raise TimeoutError(f"not true within {timeout} s: {expression}; the page's status: {status!r}")
            time.sleep(0.1)

    def upload(self, selector: str, path: Path):
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "campose.cli", "serve", "--checkpoint", str(ckpt),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, "campose serve exited early"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "campose serve did not answer /health within 120 s"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dashboard_locates_an_uploaded_photo(server, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(photo, quality=90)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")

    cdp = DevTools(tmp_path / "chromium-profile")
    try:
        page = Page(cdp, server + "/")
        page.wait_for("document.getElementById('plan')?.dataset.state === 'ready'")  # once navigated and drawn
        assert page.js("document.querySelectorAll('#plan-walls line').length") > 10
        assert page.js("document.getElementById('marker').dataset.state") == "empty"

        page.upload("#file", photo)
        page.wait_for("document.getElementById('marker').dataset.state === 'shown'")
        marker = page.js("""(() => { const m = document.getElementById('marker'), b = m.getBoundingClientRect();
            return {visible: m.getAttribute('visibility'), snapped: m.dataset.snapped, w: b.width, h: b.height,
                    status: document.getElementById('status').dataset.state,
                    position: document.getElementById('n-position').textContent,
                    preview: document.getElementById('preview').naturalWidth}; })()""")
        assert marker["visible"] == "visible" and marker["w"] > 0 and marker["h"] > 0, marker
        assert marker["snapped"] == "true" and marker["status"] == "done" and marker["position"].startswith("x -1.")
        assert marker["preview"] == 320

        shot = base64.b64decode(page.send("Page.captureScreenshot", {"format": "png"})["data"])
        out = tmp_path / "dashboard.png"
        out.write_bytes(shot)
        assert out.stat().st_size > 0 and shot.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(shot)).size[0] > 0

        page.upload("#file", not_image)  # the server's refusal is shown to the person
        page.wait_for("document.getElementById('status').dataset.state === 'error'")
        assert "not a JPEG or PNG" in page.js("document.getElementById('status').textContent")
    finally:
        cdp.close()
