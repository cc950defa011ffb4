"""Debian's Chromium driven by Playwright (never `playwright install`), as the browser tests and
benchmarks/rehearsal.py use it."""
from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]


def launch():
    """(playwright, browser): stop both when done (``browser.close(); pw.stop()``)."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    return pw, pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
