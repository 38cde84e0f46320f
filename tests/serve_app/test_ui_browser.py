"""The /ui page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium with the system browser: nothing is downloaded). The fake microphone plays a
speech WAV; the page's counters (window.rvcStats) show converted audio coming back.

RVC_UI_SCREENSHOT=docs/ui.png python -m pytest tests/serve_app/test_ui_browser.py
also saves the screenshot the docs show.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import soundfile as sf

from rvc_pipeline.testing.audio import wav_bytes

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")


def _wait_for(driver, script: str, timeout_s: float = 120.0):
    """Poll a JavaScript expression until it is truthy; its value, or an AssertionError with the page's state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.25)
    state = driver.execute_script("return JSON.stringify(window.rvcStats) + ' ' + document.body.innerText;")
    raise AssertionError(f"timed out waiting for {script}: {state[:800]}")


@pytest.fixture
def browser(tmp_path, espeak_speech):
    from selenium.webdriver.chrome.service import Service

    speech = tmp_path / "mic.wav"
    speech.write_bytes(wav_bytes(espeak_speech("Hello, this is the live microphone test of the voice service. " * 2)))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={speech}", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def test_ui_converts_a_file_and_streams_the_microphone(service, browser, tmp_path, espeak_speech):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/ui")
    _wait_for(browser, "window.rvcStats && window.rvcStats.voices > 0", 60)
    Select(browser.find_element(By.ID, "voice")).select_by_value("alice")
    Select(browser.find_element(By.ID, "f0-method")).select_by_value("pm")

    # A file through /convert: played back from a blob: URL, with a download link.
    upload = tmp_path / "upload.wav"
    sf.write(upload, espeak_speech("Convert this file, please."), 16000)
    browser.find_element(By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "convert").click()
    _wait_for(browser, "window.rvcStats.conversions >= 1", 180)
    assert browser.find_element(By.ID, "result").get_attribute("src").startswith("blob:")
    assert browser.find_element(By.ID, "download").is_displayed()

    # Live: fake microphone -> AudioWorklet -> /stream -> playback.
    for field, value in (("block-ms", "200"), ("extra-ms", "500")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "start-live").click()
    _wait_for(browser, "window.rvcStats.ready", 60)
    _wait_for(browser, "window.rvcStats.blocksReceived >= 12", 240)
    stats = browser.execute_script("return window.rvcStats;")
    assert stats["errors"] == 0, browser.find_element(By.ID, "live-error").text
    assert stats["blocksSent"] >= stats["blocksReceived"] >= 12
    assert stats["maxOutputRms"] > 0.005  # converted speech came back, not only silence
    assert float(browser.find_element(By.ID, "latency-ms").text) == 200 + 50 + 10
    screenshot = os.environ.get("RVC_UI_SCREENSHOT")
    browser.save_screenshot(str(Path(screenshot) if screenshot else tmp_path / "ui.png"))
    browser.find_element(By.ID, "stop-live").click()
    _wait_for(browser, "document.getElementById('live-state').textContent.startsWith('closed') || "
                       "document.getElementById('start-live').disabled === false", 30)
