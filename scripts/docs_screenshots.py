"""Screenshot pages of the built docs in headless Chromium, offline, after MathJax has typeset.

    mkdocs build --strict --site-dir site
    python scripts/docs_screenshots.py site            # writes docs/assets/screenshots/*.png

The site is served from a local HTTP server (no other network is needed or used); Chromium loads
each page, waits for MathJax (served from the site itself) and saves a PNG. ``tests/test_docs.py``
uses the same helpers to check, in the DOM Chromium renders, that every formula was typeset.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "assets" / "screenshots"
# (page of the site, PNG name): the formula-heavy pages
PAGES = [
    ("components/smooth_proxy_anchor/", "smooth_proxy_anchor_page.png"),
    ("api/losses/", "api_smooth_proxy_anchor_loss.png"),
]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@contextlib.contextmanager
def serve(site_dir: Path) -> Iterator[str]:
    """Serve ``site_dir`` on a free localhost port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def _run_browser(browser: str, url: str, *args: str, timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            # no request may leave the machine: any host but localhost fails to resolve
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            *args,
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{browser} failed on {url}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(browser: str, url: str) -> str:
    """The page's DOM after its scripts ran (MathJax included)."""
    return _run_browser(browser, url, "--dump-dom")


def screenshot(browser: str, url: str, png: Path, size: str = "1280,1400") -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    _run_browser(browser, url, f"--screenshot={png}", f"--window-size={size}")
    if not png.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot for {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG folder (default {OUT})")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"no browser found (looked for {', '.join(BROWSERS)})", file=sys.stderr)
        return 1
    with serve(args.site) as base:
        for page, name in PAGES:
            screenshot(browser, base + page, args.out / name)
            print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
