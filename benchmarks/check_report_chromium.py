"""Open a `cnncli report` page in headless Chromium and fail on any console message.

Usage: python benchmarks/check_report_chromium.py RUN/report.html [SCREENSHOT.png]
Prints what the browser logged to its console (errors from scripts, failed resources) and
exits 1 if there was anything or no screenshot could be taken, 2 if Chromium is missing; 0 and
one "ok" line otherwise. The page has no script, so any console line means it is broken. The
screenshot (default: the page's name with .png) is for a person to look at. Chromium:
`apt-get install chromium` (Debian).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

CONSOLE = re.compile(r":CONSOLE[:(]")
SECTIONS = ("config", "summary", "curves", "metrics", "per-class", "confusion", "errors",
            "filters")


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome")) if p), None)


def _chromium(browser: str, page: Path, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--window-size=1280,2400", action, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)


def check(page: Path, browser: str, screenshot: Path) -> list[str]:
    """The problems: console lines, sections missing from the DOM Chromium built, and a
    screenshot it could not take (headless Chromium does one action per start)."""
    problems = []
    screenshot.unlink(missing_ok=True)
    for action in ("--dump-dom", f"--screenshot={screenshot.resolve()}"):
        result = _chromium(browser, page, action)
        problems += [line for line in result.stderr.splitlines() if CONSOLE.search(line)]
        if result.returncode != 0:
            problems.append(f"chromium {action} exited with {result.returncode}")
        if action == "--dump-dom":
            problems += [f"no section id={s!r} in the page Chromium rendered" for s in SECTIONS
                         if f'id="{s}"' not in result.stdout]
    if not screenshot.is_file() or screenshot.stat().st_size == 0:
        problems.append(f"chromium wrote no screenshot to {screenshot}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    browser = chromium()
    if browser is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    page = Path(argv[0])
    screenshot = Path(argv[1]) if len(argv) == 2 else page.with_suffix(".png")
    problems = check(page, browser, screenshot)
    for line in problems:
        print(line)
    if not problems:
        print(f"ok: {page} renders in {Path(browser).name} with no console messages; "
              f"screenshot {screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
