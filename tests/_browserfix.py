"""Drive the edge-serve page in Debian's headless Chromium with Playwright (no browser download).

Used by tests/test_serve_page.py and benchmarks/serve_screenshot.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CHROMIUM = os.environ.get("MURAKIT_CHROMIUM", "/usr/bin/chromium")
# No network beyond loopback, no first-run or background traffic, no GPU on this machine.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_until(page, predicate: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (a JS arrow function) from Python until it returns true.

    Not ``page.wait_for_function``: its in-page polling evaluates the predicate with ``eval``,
    which the page's Content-Security-Policy (no 'unsafe-eval') refuses whenever the first check
    is false; ``page.evaluate`` runs over the DevTools protocol, outside the page's CSP.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never satisfied {predicate} within {timeout:.0f} s")
        time.sleep(0.05)


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    return None


def upload_study(url: str, files: list, screenshot: Path | None = None, width: int = 1100) -> dict:
    """Open the page, upload ``files`` as one study, wait for the result and read it back.

    Returns
    -------
    dict with ``model_name``, ``model_version``, ``probability`` (float), ``label``,
    ``threshold`` (float), ``views`` (list of (name, text)), ``cam_widths`` (naturalWidth of
    each CAM image; 0 = not rendered), ``requests`` (URLs the page fetched).
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url + "/")
            wait_until(page, "() => document.getElementById('model-name').textContent !== '\u2026'")
            page.set_input_files("#files", [str(f) for f in files])
            page.wait_for_selector("#result", state="visible", timeout=30_000)
            wait_until(page, "() => [...document.querySelectorAll('img.cam')].every(i => i.complete)")
            out = {
                "model_name": page.text_content("#model-name"),
                "model_version": page.text_content("#model-version"),
                "probability": float(page.text_content("#probability")),
                "label": page.text_content("#label"),
                "threshold": float(page.text_content("#threshold")),
                "views": [(v.query_selector(".name").text_content(), v.query_selector(".p").text_content())
                          for v in page.query_selector_all("#views .view")],
                "cam_widths": page.eval_on_selector_all("img.cam", "imgs => imgs.map(i => i.naturalWidth)"),
                "requests": [u for u in requests if not u.startswith("data:")],
            }
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            return out
        finally:
            browser.close()


def upload_error(url: str, file: Path) -> str:
    """Upload one file that the server refuses; returns the error text the page shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#files", [str(file)])
            page.wait_for_selector("#error", state="visible", timeout=30_000)
            return page.text_content("#error")
        finally:
            browser.close()


def token_flow(url: str, token: str, files: list) -> dict:
    """Open the page of a server that wants a token: read what it shows, enter the token, upload."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector("#token-box", state="visible", timeout=30_000)
            before = page.text_content("#model-name")
            page.fill("#token", token)
            page.click("#token-save")
            wait_until(page, "() => document.getElementById('model-name').textContent !== '\u2026'")
            page.set_input_files("#files", [str(f) for f in files])
            page.wait_for_selector("#result", state="visible", timeout=30_000)
            return {"before": before, "model_name": page.text_content("#model-name"),
                    "label": page.text_content("#label"), "token_box_visible": page.is_visible("#token-box")}
        finally:
            browser.close()
