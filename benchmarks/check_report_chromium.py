"""Open a `cnncli report` page in headless Chromium and fail on any console message.

Usage: python benchmarks/check_report_chromium.py RUN/report.html
Prints what the browser logged to its console (errors from scripts, failed resources) and
exits 1 if there was anything, 2 if Chromium is missing; 0 and one "ok" line otherwise. The
page has no script, so any console line means it is broken. Chromium: `apt-get install
chromium` (Debian).
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


def check(page: Path, browser: str) -> list[str]:
    """The problems: console lines, and sections missing from the DOM Chromium built."""
    result = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    problems = [line for line in result.stderr.splitlines() if CONSOLE.search(line)]
    if result.returncode != 0:
        problems.append(f"chromium exited with {result.returncode}")
    problems += [f"no section id={s!r} in the page Chromium rendered" for s in SECTIONS
                 if f'id="{s}"' not in result.stdout]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    browser = chromium()
    if browser is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    problems = check(Path(argv[0]), browser)
    for line in problems:
        print(line)
    if not problems:
        print(f"ok: {argv[0]} renders in {Path(browser).name} with no console messages")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
