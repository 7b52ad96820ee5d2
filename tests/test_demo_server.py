"""``varestorer demo`` as a server, driven over HTTP (issue 31): stops during a restore, files outside
its folder, the console on bad uploads, the folder of a killed demo.

Slow tier: each test starts the server (gradio's import alone is seconds of CPU) with a tiny model, so
that a restore of many 8 px tiles keeps torch busy in a worker thread for as long as needed.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import subprocess_env
from test_demo_browser import _free_port, _wait_for_server
from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="needs gradio: pip install -e '.[demo]'"),
]


@pytest.fixture
def tiny_model(tmp_path) -> str:
    return str(SRVGGNetCompact(SRVGGConfig(num_feat=8, num_conv=2, upscale=2)).save_pretrained(tmp_path / "model"))


def _start(model: str, cwd: Path, temp: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = subprocess_env() | {"OMP_NUM_THREADS": "1", "TMPDIR": str(temp), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, "-m", "varestorer", "demo", "--model", model, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    _wait_for_server(url, server, 180)
    return server, url


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.kill()
        server.wait()


def test_cache_files_of_the_working_folder_are_not_served_and_bad_uploads_are_one_console_line(
    tmp_path, tiny_model
) -> None:
    from gradio_client import Client, handle_file

    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    secret = cwd / ".gradio" / "cached_examples" / "12" / "secret.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("not for the web")
    temp.mkdir()
    server, url = _start(tiny_model, cwd, temp)
    try:
        for route in (".gradio/cached_examples/12/secret.txt", str(secret)):
            assert _status(f"{url}gradio_api/file={route}") == 403, route
        notes = tmp_path / "notes.png"
        notes.write_text("not pixels")
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="notes.png is not an image"):
            client.predict(handle_file(str(notes)), api_name="/show_input")
        time.sleep(1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    err = server.stderr.read()
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if "notes.png" in line] == [
        "WARNING varestorer.demo.app: refused: notes.png is not an image (upload a PNG, JPEG, WebP, TIFF or BMP file)"
    ], err
    assert server.returncode == 143 and list(temp.iterdir()) == [], (server.returncode, list(temp.iterdir()))


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_during_a_restore_cancels_it_and_exits_cleanly(tmp_path, tiny_model, stop, code) -> None:
    from gradio_client import Client, handle_file

    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    # A killed demo leaves its folder behind; the next one removes it.
    killed, _ = _start(tiny_model, cwd, temp)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert [p.name for p in temp.iterdir() if p.name.startswith(f"varestorer-demo-{killed.pid}-")]

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo)
    server, url = _start(tiny_model, cwd, temp)
    try:
        assert not [p for p in temp.iterdir() if p.name.startswith(f"varestorer-demo-{killed.pid}-")]
        job = Client(url, verbose=False).submit(handle_file(str(photo)), 2.0, 8, "none", "", api_name="/run")
        deadline = time.monotonic() + 120
        while not (job.status().progress_data or []) and time.monotonic() < deadline:  # tiles are running
            time.sleep(0.2)
        assert job.status().progress_data, "the restore did not start"
        server.send_signal(stop)
        server.wait(60)
    finally:
        _stop(server)
    err = server.stderr.read()
    assert server.returncode == code, (server.returncode, err)
    assert "terminate called" not in err and "Traceback" not in err, err
    assert "refused: the demo is stopping; this restore was cancelled" in err, err
    assert list(temp.iterdir()) == [] and list(cwd.iterdir()) == [], (list(temp.iterdir()), list(cwd.iterdir()))
