"""The web atlas against real processes: an `ecg-atlas serve` on loopback holding the sample corpus
(ingested with `ecg-atlas ingest`, manifest as metadata) with a real cluster run and a trained
probe, an `ecg-atlas web` subprocess in front of it, and Debian's headless Chromium driven by
selenium (never a downloaded browser).

Screenshots of every view are written under the session's tmp dir, and copied to
$ECG_ATLAS_WEB_SCREENSHOTS when it is set (e.g. runs/web-screenshots, git-ignored).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service.conftest import CLI, WRITE_TOKEN, cli_json, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RUN = "webmap"
PROBE = "web_af"
SCREENSHOTS_ENV = "ECG_ATLAS_WEB_SCREENSHOTS"


@pytest.fixture(scope="session")
def atlas_server(tmp_path_factory, tiny_checkpoint, ecg_dir):
    root = tmp_path_factory.mktemp("web-corpus")
    server = start_server(root / "store", tiny_checkpoint, root / "logs")
    try:
        cli_json("ingest", str(ecg_dir), "--metadata", str(ecg_dir / "manifest.csv"), "--id-column", "record",
                 "--server", server.address, "--token", WRITE_TOKEN)
        with server.client() as client:
            client.cluster(RUN, n_epochs=30, label_columns=["label_groups"], timeout=300)
            # with its random-init baseline: the probes view shows the two side by side
            client.train_probe(PROBE, "label_groups:AF_AFL", n_bootstrap=100, baseline=True, timeout=300)
        yield server
    finally:
        server.stop()


@pytest.fixture()
def client(atlas_server):
    with atlas_server.client() as c:
        yield c


def assert_json_error(status: int, headers: dict, raw: bytes, expected_status: int, reason: str | None = None) -> dict:
    """A refusal as every error is sent: JSON with a reason, and the headers a 200 carries."""
    body = json.loads(raw)
    assert status == expected_status, (status, body)
    assert set(body) >= {"error", "code", "reason"} and body["error"] and body["reason"]
    if reason is not None:
        assert body["reason"] == reason, body
    from ecg_atlas.web.app import SECURITY_HEADERS

    lowered = {k.lower(): v for k, v in headers.items()}
    assert all(lowered.get(k.decode()) == v.decode() for k, v in SECURITY_HEADERS), lowered
    assert lowered["content-type"].startswith("application/json")
    return body


@dataclass
class WebProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, path: str, *, data: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of one HTTP request to the atlas."""
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def chunked(self, path: str, chunks, headers: dict):
        """(status, headers, body, bytes sent) of a POST whose body goes out in HTTP chunks without a
        Content-Length, sending until the atlas answers (or the chunks end)."""
        parts = urllib.parse.urlsplit(self.url)
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Transfer-Encoding: chunked",
                 *(f"{k}: {v}" for k, v in headers.items())]
        sent = 0
        with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            try:
                for chunk in chunks:
                    if select.select([sock], [], [], 0)[0]:  # it answered: stop sending
                        break
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                else:
                    sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # it answered and closed while this was still sending
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, dict(response.getheaders()), response.read(), sent

    def declaring(self, path: str, length: int, headers: dict):
        """(status, headers, body) of a POST that declares a Content-Length of `length` and sends
        no body at all: the answer must not wait for one."""
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            connection.putrequest("POST", path)
            for key, value in {**headers, "Content-Length": str(length)}.items():
                connection.putheader(key, value)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    @property
    def origin(self) -> str:
        """The page's own origin, as a browser on it sends it with a write."""
        return self.url.rstrip("/")

    def json(self, path: str, body: dict | None = None, token: str | None = None):
        headers = {"Content-Type": "application/json", "Origin": self.origin} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, _, raw = self.request(path, data=None if body is None else json.dumps(body).encode(), headers=headers)
        return status, json.loads(raw)


def start_web(server_address: str, log_dir: Path, *extra: str) -> WebProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "web.log"
    process = subprocess.Popen([str(CLI), "-v", "web", "--server", server_address, "--port", "0", "--json", *extra],
                               stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True,
                               env={**os.environ, "ECG_ATLAS_TOKEN": WRITE_TOKEN})
    line = process.stdout.readline()
    if not line.startswith("{"):
        process.kill()
        raise AssertionError(f"web did not start: {line!r}\n{log_path.read_text()}")
    web = WebProcess(process, json.loads(line)["url"], log_path)
    give_up = time.monotonic() + 30
    while True:
        try:
            if web.request("/healthz")[0] == 200:
                return web
        except OSError:
            pass
        if time.monotonic() > give_up:
            process.kill()
            raise AssertionError(f"web never answered /healthz\n{web.log()}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def web(atlas_server, tmp_path_factory):
    process = start_web(atlas_server.address, tmp_path_factory.mktemp("web-logs"))
    yield process
    process.process.terminate()
    process.process.wait(30)


ALLOWED_HOST = "atlas.example"


@pytest.fixture(scope="session")
def second_web(atlas_server, tmp_path_factory):
    """A web process of its own (hostile uploads measure its memory; its log is theirs alone),
    answering to --allowed-host ALLOWED_HOST too."""
    process = start_web(atlas_server.address, tmp_path_factory.mktemp("web2-logs"), "--allowed-host", ALLOWED_HOST)
    yield process
    process.process.terminate()
    process.process.wait(30)


def chromium_options(window: str = "1500,1900"):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # no GPU here: WebGL (the map's scattergl) runs on SwiftShader, which Chromium now
                 # wants named explicitly
                 "--enable-unsafe-swiftshader", f"--window-size={window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} missing: apt-get install chromium chromium-driver (make test does)"
    profile = tempfile.mkdtemp(prefix="atlas-chromium-")
    options = chromium_options()
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web-screenshots")
    copy_to = os.environ.get(SCREENSHOTS_ENV)

    def take(driver, name: str, viewport: bool = False) -> Path:
        path = folder / f"{name}.png"
        if viewport:  # the window as it is (a whole-page capture resizes it: a plot redraws, a hover ends)
            path.write_bytes(driver.get_screenshot_as_png())
        else:  # the whole page, not just the window
            size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}})
            path.write_bytes(base64.b64decode(shot["data"]))
        if copy_to:
            Path(copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(copy_to) / path.name)
        return path

    return take
