"""The uploader page in headless Chromium (Debian chromium + chromium-driver, selenium)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest_api import SAMPLES, running_server

pytestmark = pytest.mark.slow

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists() or not Path(CHROMIUM).exists():
        pytest.fail("chromium / chromedriver missing: `apt-get install chromium chromium-driver` (make browser)")
    profile = tempfile.mkdtemp(prefix="shelfready-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _upload_and_wait(driver, photo: Path, timeout: float = 240):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2)
    wait.until(lambda d: d.execute_script(
        "return document.getElementById('status').className === 'error'"
        " || (document.getElementById('cleaned').complete &&"
        "     document.getElementById('cleaned').naturalWidth > 0 && !!document.getElementById('checks'));"))
    return driver.find_element(By.ID, "status").text


def test_uploader_page_cleans_a_photo(browser, tmp_path):
    from selenium.webdriver.common.by import By

    with running_server(workers=2, timeout=600) as srv:
        browser.get(srv.url + "/")
        assert "shelfready" in browser.title
        status = _upload_and_wait(browser, SAMPLES / "shoes.jpg")
        assert status.startswith(("Ready for amazon", "Not ready for amazon")) and "u2netp" in status, status
        assert browser.find_element(By.ID, "status").get_attribute("class") in ("", "warn")
        raw_w = browser.execute_script("return document.getElementById('raw').naturalWidth")
        clean_w, clean_h = browser.execute_script(
            "const i = document.getElementById('cleaned'); return [i.naturalWidth, i.naturalHeight];")
        assert raw_w == 400  # the photo as uploaded
        assert clean_w == clean_h and clean_w > 400  # square, enlarged for the preset
        rows = browser.find_elements(By.CSS_SELECTOR, "#checks tbody tr")
        names = {r.get_attribute("data-check") for r in rows}
        assert {"white_background", "size", "square", "fill", "centred", "sharpness"} <= names
        square = browser.find_element(By.CSS_SELECTOR, "#checks tr[data-check='square'] td:last-child")
        assert square.text == "pass"
        link = browser.find_element(By.ID, "download")
        assert link.get_attribute("download") == "cleaned.jpg" and link.get_attribute("href").startswith("blob:")
        browser.save_screenshot(str(tmp_path / "uploader.png"))


def test_uploader_page_shows_api_errors(browser, tmp_path):
    from selenium.webdriver.common.by import By

    with running_server(keys=("k-123",), warmup=False) as srv:
        browser.get(srv.url + "/")
        status = _upload_and_wait(browser, SAMPLES / "dress.jpg", timeout=60)
        assert status.startswith("401 unauthorized") and "X-API-Key" in status, status
        key = browser.find_element(By.ID, "apikey")
        key.send_keys("k-123")
        notes = tmp_path / "notes.jpg"
        notes.write_text("this is not an image")
        status = _upload_and_wait(browser, notes, timeout=60)
        assert status.startswith("415"), status  # the key was accepted, the bytes were not


def test_docs_render_offline(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server(keys=("k-9",), warmup=False) as srv:
        browser.get(srv.url + "/docs")
        html = browser.page_source
        assert "cdn." not in html and "/docs-assets/swagger-ui-bundle.js" in html  # local assets only
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
        title = browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
        assert title.startswith("shelfready")
        paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/v1/clean", "/v1/check", "/v1/search", "/v1/catalog/items"} <= {p.replace("\u200b", "") for p in paths}
