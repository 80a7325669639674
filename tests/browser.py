"""Headless Chromium for the browser tests (marked `browser`): found on PATH, required in CI."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium() -> str:
    """The Chromium binary; a failure in CI (`.ci/run` installs Debian's chromium), a skip elsewhere."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("headless Chromium is required in CI (.ci/run installs Debian's chromium)")
    pytest.skip("chromium not installed (and not in CI): apt-get install -y chromium")
