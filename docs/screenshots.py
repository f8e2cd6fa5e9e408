"""Take the page's screenshots in docs/: the real daemon, the tour's files, headless Chromium.

    .venv/bin/python docs/screenshots.py

Needs Debian's `chromium` and `chromium-driver` (as the page's tests do). The viewport is a
laptop's, 1366x900.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen_workers import write_workers  # noqa: E402
from tests.browser import Browser, missing  # noqa: E402
from tests.daemon_process import Daemon  # noqa: E402

CONFIG = """[inbox]
path = "inbox"
settle_ms = 100
rescan_s = 0
[store]
path = "var/objects"
[state]
path = "var/state"
[server]
port = 0
"""
QUERY = (
    "SELECT role, count(*) AS workers, round(avg(salary), 2) AS avg_salary,\n"
    "       min(hired_at) AS first_hired\n"
    "FROM workers\nGROUP BY role\nORDER BY workers DESC"
)


def shoot(browser: Browser, url: str, name: str, ready: str, settle_s: float = 0.6) -> None:
    """Open `url`, wait for the element `ready` (a CSS selector), save docs/<name>.png."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser.driver
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    time.sleep(settle_s)  # let the last fetches paint
    driver.save_screenshot(str(ROOT / "docs" / f"{name}.png"))
    print(f"docs/{name}.png")


def main() -> int:
    reason = missing()
    if reason:
        print(f"screenshots need a browser: {reason}", file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="lakehoused-shots-"))
    inbox = home / "inbox"
    (inbox / "sales").mkdir(parents=True)
    write_workers(20_000, inbox / "workers.csv")
    for day in sorted((ROOT / "examples" / "sales").glob("*.csv")):
        shutil.copy(day, inbox / "sales")
    shutil.copy(ROOT / "examples" / "stores.csv", inbox)
    (home / "config.toml").write_text(CONFIG)
    daemon = Daemon(home / "config.toml", {})
    browser = Browser()
    try:
        daemon.wait_for(lambda: len(daemon.events()) == 4, what="the first files")
        shutil.copy(ROOT / "examples" / "bad.csv", inbox)
        daemon.wait_for(lambda: len(daemon.events()) == 5, what="the rejection")
        # A large file on its way in, so the backlog shows an ingest in flight.
        write_workers(600_000, home / "big.csv", na_rate=0)  # no N/A: the same schema
        (home / "big.csv").rename(inbox / "workers.csv")  # a newer export: version 2
        daemon.wait_for(lambda: daemon.get("/status")["in_flight"], what="the ingest in flight")
        time.sleep(0.8)
        shoot(browser, daemon.url + "/#/", "overview", ".flight")
        daemon.wait_for(lambda: len(daemon.events()) == 6, timeout=60, what="the large file")
        daemon.wait_for(lambda: not daemon.get("/status")["files_pending"], what="an idle inbox")
        shoot(browser, daemon.url + "/#/datasets/workers", "dataset", "#history-table")
        q = urllib.parse.quote(QUERY)
        shoot(browser, daemon.url + f"/#/sql?q={q}", "query", "#result-table")
        shoot(browser, daemon.url + "/#/events", "events", "#events-table")
    finally:
        browser.quit()
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
