"""The page of `rnnrs serve` in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium through /usr/bin/chromedriver, so nothing is downloaded): type a prefix, click
Generate, the text appears and grows; Stop stops it and frees the server's slot. In CI
(RNNRS_REQUIRED=1) a missing browser fails; elsewhere the test is skipped."""

import os
import shutil
import time

import pytest

import rnnrs
from rnnrs.generate import DEFAULT_MODEL_DIR

from test_serve import serving

REQUIRED = bool(os.environ.get("RNNRS_REQUIRED"))
DRIVER = "/usr/bin/chromedriver"


def _browser_or_skip():
    missing = []
    for mod in ("selenium", "fastapi", "uvicorn", "httpx"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(f"the {mod} package")
    if not os.path.exists(DRIVER):
        missing.append(DRIVER + " (apt-get install chromium-driver)")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        missing.append("chromium (apt-get install chromium)")
    if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")):
        missing.append("the built-in model")
    if missing:
        if REQUIRED:
            pytest.fail("the browser test needs " + ", ".join(missing))
        pytest.skip("needs " + ", ".join(missing))


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,800"):
        opts.add_argument(a)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    opts.binary_location = binary
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_page_generates_streams_and_stops(browser):
    import httpx
    from selenium.webdriver.common.by import By
    from rnnrs.serve import create_app
    gen = rnnrs.LyricGenerator.default()
    # A long limit so that generation lasts long enough to watch it grow, and to stop it.
    app = create_app(gen, "songci", max_batch=8, max_tokens=50000)
    with serving(app) as base:
        d = browser
        d.get(base + "/")
        assert d.title == "rnnrs"
        _wait(lambda: "songci" in d.find_element(By.ID, "model").text, 10, "the model's description")
        prefix = d.find_element(By.ID, "prefix")
        prefix.clear()
        prefix.send_keys("春风")
        length = d.find_element(By.ID, "length")
        length.clear()
        length.send_keys("50000")
        seed = d.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("4")
        out = d.find_element(By.ID, "output")
        d.find_element(By.ID, "generate").click()
        first = _wait(lambda: len(out.text) > 12 and out.text, 20, "generated text")
        assert first.startswith("春风")
        _wait(lambda: len(out.text) > len(first) + 20, 20, "the text to grow")
        grown = out.text
        assert grown.startswith(first[:10])
        # The streamed text is the server's: the same seed and options as generate().
        want = gen.generate("春风", length=40, temperature=0.8, top_p=0.9, seed=4)
        assert grown[:len(want)] == want[:len(grown)]
        assert d.find_element(By.ID, "generate").get_attribute("disabled") is not None
        d.find_element(By.ID, "stop").click()
        _wait(lambda: d.find_element(By.ID, "status").text == "stopped", 10, "the page to say stopped")
        stopped = out.text
        time.sleep(0.5)
        assert out.text == stopped, "the text kept growing after Stop"
        assert len(stopped) < 2 + 50000
        assert d.find_element(By.ID, "generate").get_attribute("disabled") is None
        # Stop cancelled the request: the server freed the slot.
        _wait(lambda: httpx.get(base + "/health").json()["active"] == 0, 10, "the server to free the slot")
        # An error from the server is shown, not swallowed.
        length.clear()
        length.send_keys("60000")
        d.find_element(By.ID, "generate").click()
        _wait(lambda: "max_tokens" in d.find_element(By.ID, "status").text, 10, "the error message")
