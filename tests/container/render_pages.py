"""Open Studio pages in headless Chromium and check that each one rendered without an exception.

Used by tests/container/smoke.sh against the Studio served from the image:
    python render_pages.py URL [PAGE_PATH=TEXT[|TEXT...] ...]
Each page is opened at URL + PAGE_PATH; every TEXT must appear on it, and no Streamlit
exception box may. Prints one line per page and exits non-zero when any page fails.
"""

from __future__ import annotations

import sys

from playwright.sync_api import Browser, Error, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000
FINISHED = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def check_page(browser: Browser, url: str, texts: list[str]) -> list[str]:
    """Problems found on the page at `url` (empty when it rendered every text cleanly)."""
    page = browser.new_page()
    problems: list[str] = []
    try:
        page.goto(url, timeout=TIMEOUT_MS)
        # The app's root says when the page's script run has ended, exception or not.
        page.locator(FINISHED).wait_for(timeout=TIMEOUT_MS)
        for text in texts:
            try:
                page.get_by_text(text).first.wait_for(timeout=TIMEOUT_MS)
            except Error:
                problems.append(f"{text!r} never appeared")
        for box in page.locator('[data-testid="stException"]').all():
            problems.append("exception: " + box.inner_text().splitlines()[0])
    except Error as error:
        problems.append(str(error).splitlines()[0])
    finally:
        page.close()
    return problems


def main(argv: list[str]) -> int:
    base = argv[0].rstrip("/")
    pages = [arg.split("=", 1) for arg in argv[1:]]
    failed = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for path, texts in pages:
            problems = check_page(browser, base + path, [t for t in texts.split("|") if t])
            failed += bool(problems)
            mark = "FAIL" if problems else "ok  "
            print(f"  {mark} page {path} renders", *(f"\n       {p}" for p in problems), sep="")
        browser.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
