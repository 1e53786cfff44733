"""Headless Chromium over the DevTools protocol, standard library only: open a page, evaluate
JavaScript, upload a file through an ``<input type=file>``, wait for a condition, take a screenshot.

Used by chapter 10 (a screenshot of the pose server's dashboard) and ``tests/test_serve_browser.py``.
Chromium is driven on a pipe (``--remote-debugging-pipe``: JSON messages ending in a NUL byte,
commands on fd 3, answers on fd 4), so neither selenium nor a websocket client is needed. Each
:class:`Chromium` starts its own process, headless and without network services (no sync, no
component updates, no QUIC, no background networking), with a fresh profile in a temporary folder
that is removed when it closes. :func:`find_chromium` says whether a Chromium is installed (on
Debian: ``apt-get install chromium``).

    from campose.browser import screenshot
    screenshot("http://127.0.0.1:8000/", "dashboard.png", upload="photo.jpg", selector="#file",
               ready="document.getElementById('plan').dataset.state === 'ready'",
               done="document.getElementById('marker').dataset.state === 'shown'")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

#: The command-line flags every :class:`Chromium` gets (plus ``--window-size`` and its profile folder).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")
CANDIDATES = ("chromium", "/usr/bin/chromium", "chromium-browser")


def find_chromium() -> Path | None:
    """The Chromium executable (``chromium`` on the PATH, ``/usr/bin/chromium``, ``chromium-browser``),
    or None where none is installed."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


class Chromium:
    """A headless Chromium process and its DevTools pipe. ``send(method, params, session)`` returns
    the command's result (RuntimeError for a protocol error or a browser that exited, TimeoutError
    when it does not answer); :meth:`open` gives a :class:`Page`. A context manager: :meth:`close`
    ends the process and removes its profile folder.

    ``executable``: default :func:`find_chromium` (FileNotFoundError where there is none);
    ``window_size``: (width, height) CSS pixels, the viewport of its pages and the size of screenshots."""

    def __init__(self, executable=None, window_size: tuple[int, int] = (1280, 900)):
        exe = Path(executable) if executable is not None else find_chromium()
        if exe is None or not exe.is_file():
            raise FileNotFoundError(f"no Chromium executable ({executable or ', '.join(CANDIDATES)}); "
                                    "on Debian: apt-get install chromium")
        self.profile_dir = Path(tempfile.mkdtemp(prefix="campose-chromium-"))
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds():  # in the child: the protocol reads fd 3, writes fd 4
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        w, h = self.window_size = tuple(int(v) for v in window_size)
        cmd = [str(exe), *FLAGS, f"--window-size={w},{h}", f"--user-data-dir={self.profile_dir}", "about:blank"]
        try:
            self.proc = subprocess.Popen(cmd, preexec_fn=wire_fds, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except BaseException:
            for fd in (to_chrome_r, self._to_chrome, self._from_chrome, from_chrome_w):
                os.close(fd)
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            raise
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id, self._answers, self._eof = 0, {}, False
        self._cond, self._send_lock, self._closed = threading.Condition(), threading.Lock(), False
        threading.Thread(target=self._read, daemon=True, name="chromium-devtools").start()

    def _read(self):
        buf = b""
        try:
            while chunk := os.read(self._from_chrome, 1 << 16):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        with self._cond:
                            self._answers[msg["id"]] = msg
                            self._cond.notify_all()
        except OSError:
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()
            os.close(self._from_chrome)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        """Send one DevTools command (to the browser, or to a page's ``session``) and wait for its result."""
        with self._send_lock:
            self._next_id += 1
            mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        if self._eof:
            raise RuntimeError(f"{method}: Chromium has exited (code {self.proc.poll()})")
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._answers or self._eof, timeout):
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            if mid not in self._answers:
                raise RuntimeError(f"{method}: Chromium exited before answering (code {self.proc.poll()})")
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def open(self, url: str) -> "Page":
        """A new tab navigating to ``url`` (returns at once: wait for the page with :meth:`Page.wait_for`)."""
        return Page(self, url)

    def close(self) -> int:
        """Close the browser (politely, then by force), remove its profile folder; returns its exit code."""
        if not self._closed:
            self._closed = True
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
            shutil.rmtree(self.profile_dir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One tab of a :class:`Chromium`: JavaScript evaluation, waiting for a condition, file upload
    and screenshots."""

    def __init__(self, browser: Chromium, url: str):
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        w, h = browser.window_size  # the viewport exactly (a headless window keeps some height for itself)
        self.send("Emulation.setDeviceMetricsOverride", {"width": w, "height": h, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.send("Page.navigate", {"url": url})

    def send(self, method: str, params: dict | None = None, timeout: float = 30):
        return self.browser.send(method, params, self.session, timeout)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-like values; RuntimeError if it throws)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, explain: str | None = None) -> None:
        """Poll the JavaScript ``expression`` every 0.1 s until it is truthy; TimeoutError after
        ``timeout`` seconds, with the value of the ``explain`` expression (e.g. a status line) if given."""
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                said = f"; {explain}: {self.js(explain)!r}" if explain else ""
                raise TimeoutError(f"not true within {timeout} s: {expression}{said}")
            time.sleep(0.1)

    def upload(self, selector: str, path) -> None:
        """Put the file ``path`` into the ``<input type=file>`` matched by the CSS ``selector`` (the
        page sees a change event, as when a person picks the file)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise RuntimeError(f"no element matches {selector!r}")
        self.send("DOM.setFileInputFiles", {"files": [str(Path(path).resolve())], "nodeId": node})

    def screenshot(self, path=None) -> bytes:
        """A PNG of the viewport; also written to ``path`` if given."""
        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return png


def screenshot(url: str, path, upload=None, selector: str = "input[type=file]", ready: str | None = None,
               done: str | None = None, timeout: float = 60, window_size: tuple[int, int] = (1280, 900),
               executable=None) -> Path:
    """Open ``url`` in headless Chromium, wait until the JavaScript expression ``ready`` is true,
    upload the file ``upload`` (if given) into the file input matched by ``selector``, wait until
    ``done`` is true, and save a PNG screenshot of the ``window_size`` viewport to ``path``.
    FileNotFoundError where no Chromium is installed (:func:`find_chromium`); TimeoutError when a
    condition stays false for ``timeout`` seconds. Returns ``path``."""
    path = Path(path)
    with Chromium(executable, window_size) as browser:
        page = browser.open(url)
        page.wait_for(ready or "document.readyState === 'complete'", timeout)
        if upload is not None:
            page.upload(selector, upload)
        if done:
            page.wait_for(done, timeout)
        page.screenshot(path)
    return path
