"""The web page in headless Chromium (Debian's chromium and chromedriver, driven by Selenium):
pick an example, see its caption, its top beams and, for an attention model, one attention
map per word.

`.ci/run` installs the browser; without it these tests are skipped and say why. With
`SERVE_SCREENSHOTS=FOLDER` they also save the page as FOLDER/serve.png (and
serve_attention.png), as in docs/serve.md.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import EXAMPLES
from tests.serve.running import post_image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser_or_skip():
    try:
        from selenium import webdriver  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -r requirements-dev.txt)")
    browser = next((found for found in map(shutil.which, BROWSERS) if found), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no headless Chromium here: .ci/run installs it with apt-get install "
                    "chromium chromium-driver (missing: "
                    f"{'chromium' if browser is None else 'chromedriver'})")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary, driver = _browser_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1100,1000", "--hide-scrollbars"):
        options.add_argument(flag)
    try:
        session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as error:
        pytest.skip(f"headless Chromium did not start: {error.msg}")
    session.set_page_load_timeout(60)
    yield session
    session.quit()


def _wait(browser, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda _: condition())


def _open(browser, url):
    from selenium.webdriver.common.by import By

    browser.get(url)
    _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#beam option"))
    return lambda selector: browser.find_element(By.CSS_SELECTOR, selector)


def _upload(find, path):
    find("#file").send_keys(str(Path(path).resolve()))


def _screenshot(browser, name):
    folder = os.environ.get("SERVE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        (Path(folder) / name).write_bytes(base64.b64decode(shot["data"]))


def test_the_page_captions_an_uploaded_example(server, browser):
    from selenium.webdriver.common.by import By

    find = _open(browser, server.url)
    assert "saved_models" in find("#release").text
    example = EXAMPLES[2]
    _upload(find, example)
    _wait(browser, lambda: find("#caption").text)
    expected = post_image(server.url, example.read_bytes(), params={"beam": 3, "top": 3}).json()
    assert find("#caption").text == expected["caption"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#beams tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows] == [
        beam["caption"] for beam in expected["alternatives"]]
    assert find("#preview").get_attribute("naturalWidth") == "128"
    assert not find("#attention").is_displayed()
    assert not find("#error").is_displayed()
    _screenshot(browser, "serve.png")


def test_the_page_shows_why_an_upload_is_refused(server, browser, tmp_path):
    find = _open(browser, server.url)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture\n")
    _upload(find, notes)
    _wait(browser, lambda: find("#error").is_displayed())
    assert find("#error").text.startswith("notes.jpg is text, not a JPEG")
    assert not find("#result").is_displayed()


@pytest.mark.slow
def test_the_page_draws_each_words_attention(attention_server, browser, dataset):
    from selenium.webdriver.common.by import By

    find = _open(browser, attention_server.url)
    image = sorted((dataset / "images").glob("*.jpg"))[0]
    _upload(find, image)
    _wait(browser, lambda: find("#caption").text)
    expected = post_image(attention_server.url, image.read_bytes(),
                          params={"beam": 3, "top": 3}).json()
    assert find("#attention").is_displayed()
    panels = browser.find_elements(By.CSS_SELECTOR, "#maps figure")
    assert [panel.text for panel in panels] == expected["words"]
    # Each panel is the picture under a heat map: many distinct colours, none transparent.
    colours = browser.execute_script("""
        return [...document.querySelectorAll('#maps canvas')].map((canvas) => {
          const data = canvas.getContext('2d').getImageData(0, 0, canvas.width,
                                                            canvas.height).data;
          const seen = new Set();
          for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] !== 255) return -1;
            seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
          }
          return seen.size;
        });""")
    assert len(colours) == len(expected["words"]) and min(colours) > 50
    _screenshot(browser, "serve_attention.png")
