"""``varestorer demo`` in a real headless Chromium: upload, restore, compare, download, clean exit.

Needs the ``browser-test`` extra (gradio, selenium) and Debian's ``chromium`` + ``chromium-driver``
(no browser downloads); skips with the reason otherwise. Slow tier: the embedded default model
restores the example twice (the page and ``varestorer restore`` for the reference), ~25 s each here.
Set ``VARESTORER_UPDATE_SCREENSHOT=1`` to also write the page's screenshot to docs/demo_screenshot.png.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env
from varestorer.io.images import read_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "chelsea.png"  # the smallest example: 112x75, a few 64 px tiles
SCALE = 3.5
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("selenium") is None, reason="needs selenium: pip install -e '.[browser-test]'"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("gradio") is None, reason="needs gradio: pip install -e '.[browser-test]'"
    ),
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the demo exited with {server.returncode}: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the demo did not answer at {url} within {seconds:.0f} s")


@pytest.fixture
def demo_server(tmp_path):
    """The demo on a free 127.0.0.1 port, in an empty working folder, its temp files under tmp_path/tmp."""
    port, cwd, temp = _free_port(), tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    env = subprocess_env() | {"OMP_NUM_THREADS": "1", "TMPDIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, "-m", "varestorer", "demo", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, server, 180)
        yield url, server, cwd, temp
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))


def test_restore_in_the_browser_matches_the_command(tmp_path, demo_server, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, server, cwd, temp = demo_server
    driver, downloads = browser
    driver.get(url)

    # Bad input: a clear message in the page, no traceback.
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not pixels")
    _upload(driver, not_an_image)
    WebDriverWait(driver, 60).until(lambda d: "notes.png is not an image" in d.find_element(By.TAG_NAME, "body").text)
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text

    driver.refresh()
    _upload(driver, EXAMPLE)
    WebDriverWait(driver, 60).until(lambda d: "112x75 RGB 8-bit" in d.find_element(By.ID, "status").text)
    scale = driver.find_element(By.CSS_SELECTOR, "#scale input")
    scale.send_keys(Keys.CONTROL, "a")
    scale.send_keys(str(SCALE), Keys.TAB)
    driver.find_element(By.ID, "restore").click()

    seen: list[str] = []  # the page's progress text while the tiles run

    def finished(d):
        seen.extend(e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=status-tracker]"))
        return next(iter(d.find_elements(By.CSS_SELECTOR, "#download a[href]")), None)

    link = WebDriverWait(driver, 600, poll_frequency=0.25).until(finished)
    # progress over the tiles was shown (their count: the restorer's, mirrored edge context included)
    assert any(re.search(r"\b[1-9]\d*/[1-9]\d* tiles", text) for text in seen), seen
    status = driver.find_element(By.ID, "status").text
    expected_w, expected_h = round(SCALE * 112), round(SCALE * 75)
    assert f"-> {expected_w}x{expected_h} RGB 8-bit in" in status, status
    # The comparison shows both images at the output size (before: bicubic input; after: the result).
    sizes = WebDriverWait(driver, 60).until(
        lambda d: (
            [
                s
                for s in d.execute_script(
                    "return [...document.querySelectorAll('#compare img')].map(i => [i.naturalWidth, i.naturalHeight])"
                )
                if s[0]
            ]
            or None
        )
    )
    assert sizes and all(tuple(s) == (expected_w, expected_h) for s in sizes), sizes

    link.click()
    name = f"chelsea_x{SCALE:g}.png"
    deadline = time.monotonic() + 60
    while not (downloads / name).is_file() or list(downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"no download of {name}: {list(downloads.iterdir())}"
        time.sleep(0.2)

    shot = tmp_path / "demo_screenshot.png"
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(shot))
    if os.environ.get("VARESTORER_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "demo_screenshot.png")

    # The download equals `varestorer restore` on the same input with the same model and options.
    reference = subprocess.run(
        [
            sys.executable,
            "-m",
            "varestorer",
            "restore",
            str(EXAMPLE),
            "-o",
            str(tmp_path / "ref"),
            "--scale",
            str(SCALE),
        ],
        env=subprocess_env() | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    assert reference.returncode == 0, reference.stderr
    downloaded = read_image(downloads / name)
    expected = read_image(tmp_path / "ref" / "chelsea.png")
    assert downloaded.shape == (expected_h, expected_w, 3) and downloaded.dtype == np.uint8
    np.testing.assert_array_equal(downloaded, expected)

    # Ended like Ctrl-C: nothing left in the working folder or the temporary folder.
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == [], (list(cwd.iterdir()), list(temp.iterdir()))
