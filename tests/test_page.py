"""The web page in a real browser (headless Chromium), served by the real daemon.

Under CI=true these run or fail, never skip; on a machine without Chromium they skip with
one line saying what to install.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.gen_workers import write_workers
from tests import browser as chromium

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WAIT_S = 15


@pytest.fixture(scope="module")
def browser():
    """One Chromium for every test of the page (each daemon is its own origin)."""
    reason = chromium.missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the browser tests must run, but {reason}")
        pytest.skip(reason)
    session = chromium.Browser()
    yield session
    session.quit()


def wait(driver, check, what: str):
    """Poll `check(driver)` until it is truthy; fail saying what was awaited."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(
            driver, WAIT_S, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
        ).until(check)
    except WebDriverException as e:
        raise AssertionError(f"the page never showed {what}: {driver.current_url}") from e


def cells(driver, table_id: str) -> list[list[str]]:
    """The text of each body row of a table (one round trip, not one per cell)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(tr => [...tr.cells].map(td => td.innerText.trim()))",
        f"#{table_id} tbody tr",
    )


def table_is(driver, table_id: str, predicate, what: str) -> list[list[str]]:
    def check(d):
        found = cells(d, table_id)
        return found if found and predicate(found) else None

    return wait(driver, check, what)


def test_browse_query_search_and_download(make_daemon, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    # In the inbox before the daemon starts: its first scan takes them while it warms up.
    inbox = tmp_path / "inbox"
    (inbox / "sales").mkdir(parents=True)
    write_workers(300, inbox / "workers.csv")
    shutil.copy(EXAMPLES / "sales" / "2026-11-01.csv", inbox / "sales")
    shutil.copy(EXAMPLES / "sales" / "2026-11-02.csv", inbox / "sales")
    shutil.copy(EXAMPLES / "bad.csv", inbox)
    daemon = make_daemon()
    daemon.wait_for(lambda: len(daemon.events()) == 4, what="four events")
    driver = browser.driver

    # The overview: the datasets, and the rejected file with its reason, first.
    driver.get(daemon.url + "/")
    table_is(
        driver,
        "datasets-table",
        lambda rows: [r[0] for r in rows] == ["sales", "workers"],
        "both datasets",
    )
    assert [r[1:4] for r in cells(driver, "datasets-table")] == [
        ["append", "2", "6"],
        ["replace", "1", "300"],
    ]
    rejected = wait(driver, lambda d: d.find_element(By.ID, "rejected-files"), "the rejections")
    assert "bad.csv" in rejected.text and "line 3: expected 2 fields, got 3" in rejected.text

    # One dataset: schema with types, versions, parts, history.
    driver.find_element(By.LINK_TEXT, "sales").click()
    wait(driver, lambda d: d.find_element(By.ID, "dataset-name").text == "sales", "sales")
    assert [r[:2] for r in table_is(driver, "schema-table", bool, "the schema")] == [
        ["day", "DATE"],
        ["store", "VARCHAR"],
        ["amount", "DOUBLE"],
    ]
    assert [r[0] for r in cells(driver, "versions-table")] == ["2", "1"]
    parts = sorted(r[1] for r in cells(driver, "parts-table"))  # in the order they arrived
    assert parts == ["2026-11-01.csv", "2026-11-02.csv"]
    history = table_is(driver, "history-table", lambda r: len(r) == 2, "the history")
    assert [(r[0], r[2], r[3]) for r in history] == [
        ("2", "dataset.registered", "6"),
        ("1", "dataset.registered", "3"),
    ]
    assert sorted(r[5] for r in history) == ["sales/2026-11-01.csv", "sales/2026-11-02.csv"]

    # A query from the dataset's page, then one typed in; the table reads back.
    driver.find_element(By.ID, "query-dataset").click()
    table_is(driver, "result-table", lambda r: len(r) == 6, "SELECT * FROM sales")
    editor = driver.find_element(By.ID, "sql-input")
    editor.clear()
    editor.send_keys("SELECT store, sum(amount) AS total FROM sales GROUP BY store ORDER BY store")
    editor.send_keys(Keys.CONTROL, Keys.ENTER)
    totals = [["east", "293.75"], ["north", "251.5"], ["south", "199.75"]]
    table_is(driver, "result-table", lambda r: r == totals, "the totals")
    assert driver.find_element(By.ID, "result-seq").text == "4"
    assert driver.find_element(By.ID, "row-count").text == "3"
    assert not driver.find_elements(By.ID, "truncated")

    # The query is in the address: opening the link runs it again.
    shared = driver.current_url
    assert "#/sql?q=SELECT+store" in shared
    driver.get("about:blank")
    driver.get(shared)
    table_is(driver, "result-table", lambda r: r == totals, "the shared query's answer")

    # A CSV download holds the whole answer.
    driver.find_element(By.ID, "download-csv").click()
    csv_file = browser.downloads / "lakehoused-seq4.csv"
    wait(driver, lambda d: csv_file.exists() and csv_file.stat().st_size, "the CSV download")
    assert csv_file.read_text() == '"store","total"\n"east",293.75\n"north",251.5\n"south",199.75\n'

    # Truncation and errors, as the API gives them.
    editor = driver.find_element(By.ID, "sql-input")
    editor.clear()
    editor.send_keys("SELECT * FROM workers")
    max_rows = driver.find_element(By.ID, "max-rows")
    max_rows.clear()
    max_rows.send_keys("25")
    driver.find_element(By.ID, "run-query").click()
    table_is(driver, "result-table", lambda r: len(r) == 25, "25 of 300 rows")
    assert "truncated" in driver.find_element(By.ID, "truncated").text
    editor.clear()
    editor.send_keys("SELECT nope FROM sales")
    driver.find_element(By.ID, "run-query").click()
    error = wait(driver, lambda d: d.find_element(By.ID, "api-error"), "the error")
    assert error.text.startswith("HTTP 400 bad_sql") and "nope" in error.text

    # The event log: newest first, searched by text, filtered by type.
    driver.find_element(By.LINK_TEXT, "Events").click()
    table_is(
        driver, "events-table", lambda r: [x[0] for x in r] == ["4", "3", "2", "1"], "4 events"
    )
    driver.find_element(By.ID, "events-search").send_keys("fields")
    found = table_is(driver, "events-table", lambda r: len(r) == 1, "the search's one match")
    assert found[0][2] == "ingest.rejected" and "rejected bad.csv: line 3" in found[0][4]
    assert "q=fields" in driver.current_url
    driver.find_element(By.ID, "events-search").clear()
    Select(driver.find_element(By.ID, "events-type")).select_by_value("dataset.registered")
    table_is(
        driver,
        "events-table",
        lambda r: len(r) == 3 and {x[2] for x in r} == {"dataset.registered"},
        "the three registrations",
    )


def test_the_token_is_asked_once_and_kept_for_the_session(make_daemon, browser):
    from selenium.webdriver.common.by import By

    daemon = make_daemon(env={"LH_TOKEN": "tour-token"}, server='token_env = "LH_TOKEN"')
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(daemon.url + "/datasets", timeout=10)
    assert refused.value.code == 401
    driver = browser.driver
    driver.get(daemon.url + "/")
    dialog = wait(driver, lambda d: d.find_element(By.ID, "token-dialog"), "the token dialog")
    wait(driver, lambda d: dialog.is_displayed(), "the token dialog open")

    driver.find_element(By.ID, "token-input").send_keys("wrong")
    driver.find_element(By.ID, "token-submit").click()
    wait(driver, lambda d: d.find_element(By.ID, "token-error").is_displayed(), "the refusal")
    driver.find_element(By.ID, "token-input").send_keys("tour-token")
    driver.find_element(By.ID, "token-submit").click()
    wait(driver, lambda d: not dialog.is_displayed(), "the dialog closed")
    wait(driver, lambda d: "No dataset yet" in d.find_element(By.ID, "view").text, "the overview")

    # Other views and a reload use the kept token: the dialog never opens again.
    driver.find_element(By.LINK_TEXT, "Events").click()
    wait(
        driver, lambda d: "No event matches" in d.find_element(By.ID, "events-list").text, "events"
    )
    driver.refresh()
    time.sleep(0.5)  # long enough for a 401 to have opened the dialog
    wait(
        driver, lambda d: "No event matches" in d.find_element(By.ID, "events-list").text, "events"
    )
    assert not driver.find_element(By.ID, "token-dialog").is_displayed()
    assert driver.find_element(By.ID, "token-button").is_displayed()  # "sign out"
