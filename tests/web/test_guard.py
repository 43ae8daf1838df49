"""What the atlas answers at all: Host names, cross-site writes, malformed bodies, JSON errors.

Against the real web process and gRPC server of conftest, and a real headless Chromium on a page
served from another loopback port.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from tests.web.conftest import ALLOWED_HOST, assert_json_error


def cohort_columns(client) -> set[str]:
    return {c for c in client.info()["columns"] if c.startswith("cohort_")}


class _EvilPage(BaseHTTPRequestHandler):
    html = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args):
        pass


def cross_site_page(atlas: str, ids: list[str]) -> bytes:
    """A page that tries three cross-site writes of a cohort: a text/plain fetch (sent without a
    preflight), a JSON fetch (preflighted) and a text/plain form post whose body parses as JSON."""
    body = {"name": "xsite_text", "ecg_ids": ids}
    # text/plain form encoding sends NAME=VALUE: split so that the body is {..., "pad": "="}
    form_name = json.dumps({"name": "xsite_form", "ecg_ids": ids, "pad": ""})[:-2]  # ends '"pad": "'
    return f"""<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" action="{atlas}/api/cohort" target="sink">
<input name='{form_name}' value='"}}'></form>
<script>
const atlas = {json.dumps(atlas)}, results = {{}};
document.getElementById("f").submit();
Promise.allSettled([
  fetch(atlas + "/api/cohort", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
                                 body: {json.dumps(json.dumps(body))}}})
    .then(r => results.text = r.type, e => results.text = "error " + e),
  fetch(atlas + "/api/cohort", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                 body: {json.dumps(json.dumps({**body, "name": "xsite_json"}))}}})
    .then(r => results.json = r.status, e => results.json = "blocked"),
]).then(() => {{ document.body.dataset.results = JSON.stringify(results); }});
</script></body></html>""".encode()


@pytest.fixture()
def evil_site():
    """A tiny http.server on another loopback port; yields a function that sets its page."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Evil", (_EvilPage,), {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: bytes) -> str:
        server.RequestHandlerClass.html = html
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.slow
def test_a_page_on_another_port_cannot_write_a_cohort(web, browser, client, evil_site):
    ids = client.suggest_ids("code15/", limit=3)
    before = cohort_columns(client)
    refused_before = web.log().count("POST /api/cohort 403")
    browser.get(evil_site(cross_site_page(web.origin, ids)))
    done = WebDriverWait(browser, 30, poll_frequency=0.05).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-results"))
    results = json.loads(done)
    assert results["text"] == "opaque" and results["json"] == "blocked"  # the JSON one failed its preflight
    # the text/plain fetch and the form post reached the atlas and were refused
    WebDriverWait(browser, 30, poll_frequency=0.05).until(
        lambda d: web.log().count("POST /api/cohort 403") >= refused_before + 2, "the cross-site posts never arrived")
    assert cohort_columns(client) == before
    assert not {"cohort_xsite_text", "cohort_xsite_json", "cohort_xsite_form"} & set(client.info()["columns"])
    console = " ".join(e["message"] for e in browser.get_log("browser"))  # read, so later tests start clean
    assert "CORS policy" in console  # the JSON fetch: stopped by its preflight
    browser.get("about:blank")


@pytest.mark.slow
def test_a_write_needs_this_origin_and_a_json_body(web, client):
    ids = client.suggest_ids("code15/", limit=2)
    body = json.dumps({"name": "guarded", "ecg_ids": ids}).encode()
    port = urllib.parse.urlsplit(web.url).port
    for origin in (None, "null", "http://evil.example", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}",
                   f"http://evil.example:{port}"):
        headers = {"Content-Type": "application/json", **({"Origin": origin} if origin else {})}
        assert_json_error(*web.request("/api/cohort", data=body, headers=headers), 403, "bad_origin")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Origin": web.origin, **({"Content-Type": content_type} if content_type else {})}
        assert_json_error(*web.request("/api/cohort", data=body, headers=headers), 403, "bad_content_type")
    assert "cohort_guarded" not in client.info()["columns"]
    # the file upload is a POST too: another site's page gets nothing from it either
    assert_json_error(*web.request("/api/search-file", data=b"--x--\r\n", headers={
        "Origin": "http://evil.example", "Content-Type": "multipart/form-data; boundary=x"}), 403, "bad_origin")
    # the same write from the page's own origin goes through
    status, answer = web.json("/api/cohort", {"name": "guarded", "ecg_ids": ids})
    assert status == 200 and answer["updated"] == len(ids)
    assert client.info()["columns"]["cohort_guarded"] == "BOOLEAN"


@pytest.mark.slow
def test_host_names_not_on_the_allowed_list_are_refused(web, second_web):
    port = urllib.parse.urlsplit(web.url).port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"127.0.0.1:{port + 1}",
                 f"{ALLOWED_HOST}:{port}"):
        for path in ("/", "/api/info", "/healthz", "/static/js/api.js"):
            assert_json_error(*web.request(path, headers={"Host": host}), 403, "bad_host")
        assert_json_error(*web.request("/api/cohort", data=b"{}", headers={
            "Host": host, "Origin": f"http://{host}", "Content-Type": "application/json"}), 403, "bad_host")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert web.request("/api/info", headers={"Host": host})[0] == 200
    # --allowed-host NAME adds that name (on any port); others stay refused
    other = urllib.parse.urlsplit(second_web.url).port
    for host in (ALLOWED_HOST, f"{ALLOWED_HOST}:{other}", f"{ALLOWED_HOST}:8443", f"localhost:{other}"):
        assert second_web.request("/api/info", headers={"Host": host})[0] == 200, host
    assert_json_error(*second_web.request("/api/info", headers={"Host": "evil.example"}), 403, "bad_host")


MALFORMED = [
    (b"[]", "bad_json"), (b'"text"', "bad_json"), (b"null", "bad_json"), (b"12", "bad_json"), (b"1e999", "bad_json"),
    (b"\xff\xfe\x00{", "bad_json"), (b'{"name": "\xe9t\xe9"}', "bad_json"),  # latin-1, not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, "bad_json"), (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "bad_json"),
    (b'{"name": ' + b"9" * 5000 + b"}", "bad_json"), (b'{"name": "x", "ecg_ids": ' + b"7" * 5000 + b"}", "bad_json"),
    (b"{", "bad_json"), (b"", "bad_json"),
    (b'{"name": "x", "ecg_ids": 5}', "bad_ecg_ids"), (b'{"name": "x", "ecg_ids": "abc"}', "bad_ecg_ids"),
    (b'{"name": "x", "ecg_ids": [null]}', "bad_ecg_ids"), (b'{"name": "x", "ecg_ids": [["a"]]}', "bad_ecg_ids"),
    (b'{"name": "x", "ecg_ids": {"a": 1}}', "bad_ecg_ids"), (b'{"name": "x", "ecg_ids": [1, 2]}', "bad_ecg_ids"),
    (b'{"name": ["x"], "ecg_ids": ["a"]}', "bad_name"), (b'{"name": NaN, "ecg_ids": ["a"]}', "bad_name"),
]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/cohort", "/api/selection"])
def test_malformed_json_bodies_are_reasoned_400s(web, client, path):
    for raw, reason in MALFORMED:
        if path == "/api/selection" and reason == "bad_name":
            continue
        answer = web.request(path, data=raw, headers={"Origin": web.origin, "Content-Type": "application/json"})
        assert_json_error(*answer, 400, reason)
    assert "cohort_x" not in client.info()["columns"]
    status, answer = web.json("/api/selection", {"run": "webmap", "ecg_ids": 5})
    assert status == 400 and answer["reason"] == "bad_ecg_ids"


@pytest.mark.slow
def test_a_json_body_past_its_cap_is_refused(web, client):
    from ecg_atlas.web.api import MAX_JSON_BYTES

    ids = [f"id{i:08d}" for i in range(MAX_JSON_BYTES // 12 + 1)]
    body = json.dumps({"name": "too_big", "ecg_ids": ids}).encode()
    assert len(body) > MAX_JSON_BYTES
    answer = web.declaring("/api/cohort", len(body), {"Origin": web.origin, "Content-Type": "application/json"})
    assert_json_error(*answer, 413, "too_large")
    status, headers, raw, _ = web.chunked("/api/cohort", (body[i:i + 65536] for i in range(0, len(body), 65536)),
                                          {"Origin": web.origin, "Content-Type": "application/json"})
    assert_json_error(status, headers, raw, 413, "too_large")
    assert "cohort_too_big" not in client.info()["columns"]


@pytest.mark.slow
def test_k_must_be_ascii_digits_in_range(web):
    superscript_two = "\u00b2"
    assert superscript_two.isdigit()  # what made int() raise past the old check
    for k in (superscript_two, "\u0663", "9" * 5000, "-1", "0", "51", "1.5", " "):
        query = urllib.parse.urlencode({"id": "cinc_ptb/S0001", "k": k})
        assert_json_error(*web.request(f"/api/search?{query}"), 400, "bad_k")
        boundary = "k-field"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n{k}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.npy\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\nnot-an-ecg\r\n--{boundary}--\r\n").encode()
        answer = web.request("/api/search-file", data=form, headers={
            "Origin": web.origin, "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert_json_error(*answer, 400, "bad_k")


@pytest.mark.slow
def test_unknown_routes_and_methods_are_json_errors_with_the_headers(web):
    assert_json_error(*web.request("/no/such/page"), 404, "not_found")
    assert_json_error(*web.request("/static/no-such.js"), 404, "not_found")
    assert_json_error(*web.request("/api/cohort"), 405, "method_not_allowed")
    answer = web.request("/api/search-file", data=b"not a form", headers={
        "Origin": web.origin, "Content-Type": "multipart/form-data"})  # no boundary
    assert_json_error(*answer, 400)


def test_an_unexpected_exception_is_a_json_500_with_the_headers_and_no_traceback_above_debug(caplog):
    """The catch-all, in process: a route of the real app that fails the way a bug would."""
    from starlette.testclient import TestClient

    from ecg_atlas.web import Upstream, create_app

    secret_path = "/srv/atlas/secret/store.duckdb"

    def failing(request):
        raise RuntimeError(f"a bug that quotes {secret_path}")

    app = create_app(Upstream("127.0.0.1:9", timeout=1), allowed_hosts=["testserver"])
    app.add_route("/api/failing", failing)
    with caplog.at_level(logging.DEBUG, logger="ecg_atlas.web"), TestClient(app, raise_server_exceptions=False) as web:
        answer = web.get("/api/failing")
    body = assert_json_error(answer.status_code, dict(answer.headers), answer.content, 500, "internal_error")
    assert secret_path not in json.dumps(body) and "RuntimeError" not in body["error"]
    above_debug = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert any("RuntimeError" in r.getMessage() for r in above_debug)
    assert not any(secret_path in r.getMessage() or r.exc_info for r in above_debug)
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)  # the traceback, at DEBUG


def test_allowed_host_takes_names_not_urls():
    from tests.service.conftest import cli

    done = cli("web", "--server", "127.0.0.1:9", "--port", "0", "--allowed-host", "http://atlas.example/", check=False)
    assert done.returncode == 2 and "--allowed-host" in done.stderr and "NAME:PORT" in done.stderr
