"""Check the built site in a real browser: every page loaded in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium), served from 127.0.0.1.

On every page, at each window width of ``WIDTHS``:

- no code block is wider than its column (no line hidden past the edge);
- no table is wider than the content column;
- every Mermaid diagram was drawn (it became an SVG; the raw ``stateDiagram-v2`` text is gone).

Screenshots of the pages in ``SCREENSHOTS`` go to the folder given (a build artefact, not kept
in git). Exit status 1 when any page fails, with one line per problem.

    python docs/_ext/browser_check.py site --screenshots site-screenshots
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

#: Desktop and a narrow laptop window, in CSS pixels.
WIDTHS: Final = (1280, 1024)
HEIGHT: Final = 900
#: Pages to photograph (site paths) and the file names of their screenshots.
SCREENSHOTS: Final = {
    "index.html": "home.png",
    "getting-started/index.html": "getting-started.png",
    "reference/api/index.html": "api.png",
    "benchmarks/index.html": "benchmarks.png",
}
#: Seconds to wait for Mermaid to draw a page's diagrams.
MERMAID_WAIT: Final = 15.0

# Run in the page: what sticks out of the content column, and the state of the diagrams.
MEASURE: Final = """
const column = document.querySelector('.md-content__inner');
const right = column.getBoundingClientRect().right + 1;
const problems = [];
const first = (text) => (text.split('\\n').find((line) => line.trim()) || '').trim().slice(0, 70);
for (const code of column.querySelectorAll('pre > code')) {
  if (code.closest('.mermaid')) continue;
  const hidden = code.scrollWidth - code.clientWidth;
  if (hidden > 1) problems.push(`code block ${hidden}px too wide: ${first(code.textContent)}`);
}
for (const table of column.querySelectorAll('table')) {
  const box = table.getBoundingClientRect();
  const holder = table.parentElement;
  const hidden = Math.max(box.right - right, table.scrollWidth - holder.clientWidth);
  if (hidden > 1) {
    const head = [...table.querySelectorAll('th')].map((th) => th.textContent.trim()).join(' | ');
    problems.push(`table ${Math.round(hidden)}px too wide: ${head.slice(0, 70)}`);
  }
}
const raw = [...document.querySelectorAll('pre.mermaid')].length;
const drawn = [...document.querySelectorAll('div.mermaid')].filter(
  (d) => !d.textContent.trim() && d.getBoundingClientRect().height > 20).length;
return {problems: problems, raw: raw, drawn: drawn};
"""


@contextmanager
def serve(site: Path) -> Iterator[str]:
    """The site on a free loopback port, as a static web server would serve it."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def browser() -> webdriver.Chrome:
    """Headless Chromium from the system (no downloaded browser builds)."""
    options = webdriver.ChromeOptions()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise SystemExit("needs chromium and chromedriver (Debian: chromium chromium-driver)")
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTHS[0]},{HEIGHT}")
    return webdriver.Chrome(service=Service(driver), options=options)


def expected_diagrams(page: Path) -> int:
    return page.read_text(encoding="utf-8").count('class="mermaid"')


def check_page(driver: webdriver.Chrome, url: str, diagrams: int) -> list[str]:
    driver.get(url)
    deadline = time.monotonic() + MERMAID_WAIT
    while True:
        found: dict[str, Any] = driver.execute_script(MEASURE)
        if found["drawn"] >= diagrams or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    problems = list(found["problems"])
    if found["drawn"] < diagrams or found["raw"]:
        problems.append(f"{diagrams - found['drawn']} of {diagrams} Mermaid diagrams not drawn")
    return problems


def screenshot(driver: webdriver.Chrome, url: str, target: Path) -> None:
    driver.set_window_size(WIDTHS[0], HEIGHT)
    driver.get(url)
    time.sleep(0.5)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTHS[0], min(int(height), 6000))
    time.sleep(0.3)
    driver.save_screenshot(str(target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir)")
    parser.add_argument("--screenshots", type=Path, help="folder for the pages' screenshots")
    args = parser.parse_args(argv)
    site: Path = args.site.resolve()
    pages = sorted(p for p in site.rglob("index.html") if "assets" not in p.parts)
    failures = 0
    started = time.monotonic()
    driver = browser()
    try:
        with serve(site) as root:
            for width in WIDTHS:
                driver.set_window_size(width, HEIGHT)
                for page in pages:
                    name = page.relative_to(site).as_posix()
                    for problem in check_page(driver, root + name, expected_diagrams(page)):
                        failures += 1
                        print(f"{width}px {name}: {problem}")
            if args.screenshots is not None:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                for name, file in SCREENSHOTS.items():
                    screenshot(driver, root + name, args.screenshots / file)
    finally:
        driver.quit()
    diagrams = sum(expected_diagrams(page) for page in pages)
    print(
        f"browser check: {len(pages)} pages x {len(WIDTHS)} widths, {diagrams} Mermaid diagrams,"
        f" {failures} problems, {time.monotonic() - started:.1f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
