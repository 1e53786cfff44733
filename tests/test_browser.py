"""campose.browser without a real browser: finding Chromium, and failing fast where it is missing or dies."""

import time

import pytest

from campose import browser


def test_find_chromium_returns_none_where_there_is_none(monkeypatch):
    monkeypatch.setattr(browser, "CANDIDATES", ("no-such-browser-campose",))
    assert browser.find_chromium() is None
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        browser.Chromium()
    with pytest.raises(FileNotFoundError):
        browser.screenshot("http://127.0.0.1:1/", "never.png")


def test_missing_executable(tmp_path):
    with pytest.raises(FileNotFoundError):
        browser.Chromium(tmp_path / "chromium")


def test_a_browser_that_exits_is_reported_not_waited_for(tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    b = browser.Chromium(fake)
    profile = b.profile_dir
    t0 = time.monotonic()
    with pytest.raises((RuntimeError, OSError)):
        b.send("Browser.getVersion", timeout=20)
    assert time.monotonic() - t0 < 10
    assert b.close() == 3 and not profile.exists()
