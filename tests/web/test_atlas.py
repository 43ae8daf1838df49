"""The web atlas in a real headless Chromium against a real gRPC server and web process."""

from __future__ import annotations

import json
import re
import urllib.parse

import numpy as np
import pyarrow as pa
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.service.conftest import READ_TOKEN
from tests.web.conftest import PROBE, RUN

pytestmark = pytest.mark.slow  # a real server with the whole corpus, a web process and Chromium

QUERY = "cinc_ptb/S0001"
SAME_PATIENT_QUERY = "cinc_ptb/S0002"  # its patient's other recordings are among its neighbours


def wait(driver, condition, timeout=30, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message)


def open_view(driver, web, **params):
    driver.get(web.url + "?" + urllib.parse.urlencode(params))


def neighbour_ids(driver) -> list[str]:
    return [c.get_attribute("data-ecg-id") for c in driver.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour")]


def wait_for_traces(driver, n_neighbours: int) -> None:
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours .paper[data-drawn]")) == n_neighbours
         and d.find_elements(By.CSS_SELECTOR, "#query-card .paper[data-drawn]"), message="traces not drawn")


def lead_labels(driver, card_selector: str) -> list[str]:
    return [t.text.replace("✂", "").strip() for t in
            driver.find_elements(By.CSS_SELECTOR, f"{card_selector} .paper .annotation-text")]


def test_search_view_shows_the_query_on_paper_and_its_k_neighbours(web, browser, client, screenshot):
    open_view(browser, web, view="search", id=QUERY, k=4)
    wait_for_traces(browser, 4)
    expected = client.search(ecg_id=QUERY, k=4, exclude_self=True)
    assert neighbour_ids(browser) == [h.ecg_id for h in expected.hits]
    scores = [float(s.text.split()[1]) for s in browser.find_elements(By.CSS_SELECTOR, "#neighbours .score")]
    assert scores == pytest.approx([h.score for h in expected.hits], abs=1e-4)
    # the 3 x 4 page plus the lead II rhythm strip, on every card
    page = ["I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II"]
    assert lead_labels(browser, "#query-card") == page
    assert all(lead_labels(browser, f'.neighbour[data-ecg-id="{i}"]') == page for i in neighbour_ids(browser))
    stored = client.get([QUERY])[0][0].metadata
    query_text = browser.find_element(By.CSS_SELECTOR, "#query-card .meta").text
    assert f"age {stored['age']}" in query_text and f"sex {stored['sex']}" in query_text
    screenshot(browser, "search-stored-id")


def test_type_ahead_lists_the_stored_ids_with_that_prefix(web, browser, client):
    open_view(browser, web, view="search")
    box = wait(browser, lambda d: d.find_element(By.ID, "search-id"))
    box.send_keys("cinc_ptb/S")
    wait(browser, lambda d: d.find_element(By.ID, "id-suggestions").get_attribute("data-prefix") == "cinc_ptb/S")
    shown = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#id-suggestions option")]
    assert shown and shown == client.suggest_ids("cinc_ptb/S", limit=12)
    assert all(s.startswith("cinc_ptb/S") for s in shown)


def test_filters_and_same_patient_exclusion_travel_in_a_shareable_url(web, browser, client):
    patient = client.get([SAME_PATIENT_QUERY])[0][0].patient_id
    plain = client.search(ecg_id=SAME_PATIENT_QUERY, k=8, exclude_self=True)
    assert any(h.patient_id == patient for h in plain.hits), "the query needs same-patient neighbours to test"
    open_view(browser, web, view="search", id=SAME_PATIENT_QUERY, k=8, where="age>=50", xsp=1)
    wait(browser, lambda d: d.find_element(By.ID, "neighbours").get_attribute("data-count") == "8")
    shown = neighbour_ids(browser)
    expected = client.search(ecg_id=SAME_PATIENT_QUERY, k=8, exclude_self=True, where="age>=50",
                             exclude_same_patient=True)
    assert shown == [h.ecg_id for h in expected.hits]
    rows = client.get(shown)[0]
    assert all(r.patient_id != patient and r.metadata["age"] >= 50 for r in rows)
    # the form shows what the URL said, and submitting it writes the URL again
    assert browser.find_element(By.ID, "search-where").get_attribute("value") == "age>=50"
    assert browser.find_element(By.ID, "search-xsp").is_selected()
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait(browser, lambda d: "xsp=1" in d.current_url and "where=age%3E%3D50" in d.current_url)


def test_dropping_a_wfdb_file_searches_with_its_signal(web, browser, ecg_dir, screenshot):
    record = ecg_dir / "cinc_cpsc2018" / "A0001"
    open_view(browser, web, view="search")
    picker = wait(browser, lambda d: d.find_element(By.ID, "file-input"))
    picker.send_keys(f"{record}.hea\n{record}.mat")
    wait_for_traces(browser, 5)
    assert "A0001" in browser.find_element(By.CSS_SELECTOR, "#query-card h3").text
    # the stored copy of the same ECG is its nearest neighbour
    assert neighbour_ids(browser)[0] == "cinc_cpsc2018/A0001"
    assert float(browser.find_element(By.CSS_SELECTOR, "#neighbours .score").text.split()[1]) > 0.999
    screenshot(browser, "search-dropped-wfdb")


def map_ready(driver, web, **params):
    open_view(driver, web, view="map", run=RUN, **params)
    wait(driver, lambda d: d.find_element(By.ID, "map-plot").get_attribute("data-ready"), message="map not drawn")
    return driver.find_element(By.ID, "map-plot")


def point_pixels(driver) -> list[dict]:
    """Every drawn point's page position and ecg_id, from the plot's own axes."""
    return driver.execute_script("""
        const gd = document.getElementById('map-plot'), box = gd.getBoundingClientRect();
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, out = [];
        gd.data.forEach((t, c) => { for (let i = 0; i < t.x.length; i++)
            out.push({c, i, px: xa._offset + xa.l2p(t.x[i]), py: ya._offset + ya.l2p(t.y[i]), x: t.x[i], y: t.y[i],
                      id: t.text[i].split('<br>')[0]}); });
        return {points: out, left: box.left, top: box.top};""")


def test_the_map_renders_every_point_and_a_click_opens_that_ecg(web, browser, client, screenshot):
    plot = map_ready(browser, web)
    table = client.cluster_run(RUN)["assignments"]
    assert int(plot.get_attribute("data-points")) == table.num_rows
    legend = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#map-plot .legendtext")]
    sizes = table.column("cluster").value_counts().to_pylist()
    assert len(legend) == len(sizes) and "noise" in " ".join(legend)
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"
                or "Content Security Policy" in e["message"] or "WebGL is not supported" in e["message"]]
    assert not problems  # WebGL drew under the CSP
    assert not browser.find_elements(By.CSS_SELECTOR, "#map-plot .no-webgl")
    screenshot(browser, "map-by-cluster")
    # the point farthest from any other: a click there can only mean it
    found = point_pixels(browser)
    xy = np.array([[p["px"], p["py"]] for p in found["points"]])
    gaps = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]
    target = found["points"][int(np.argmax(gaps))]
    ActionChains(browser).move_to_element_with_offset(plot, 0, 0).perform()
    size = plot.size
    ActionChains(browser).move_to_element_with_offset(
        plot, target["px"] - size["width"] / 2, target["py"] - size["height"] / 2).pause(0.3).click().perform()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "search")
    wait_for_traces(browser, 5)
    assert browser.find_element(By.CSS_SELECTOR, "#query-card h3 strong").text == target["id"]
    assert f"id={urllib.parse.quote(target['id'], safe='')}" in browser.current_url


def test_colour_by_a_numeric_column_has_a_scale(web, browser, screenshot):
    map_ready(browser, web, colour="age")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#map-plot .colorbar"))
    assert "coloured by age" in browser.find_element(By.CSS_SELECTOR, "#map-plot .gtitle").text
    screenshot(browser, "map-by-age")


def box_select(driver, plot, frac=(0.25, 0.2, 0.6, 0.75)):
    size = plot.size
    x0, y0, x1, y1 = (frac[0] * size["width"], frac[1] * size["height"],
                      frac[2] * size["width"], frac[3] * size["height"])
    ActionChains(driver).move_to_element_with_offset(plot, x0 - size["width"] / 2, y0 - size["height"] / 2) \
        .click_and_hold().move_by_offset((x1 - x0) / 2, (y1 - y0) / 2).move_by_offset((x1 - x0) / 2, (y1 - y0) / 2) \
        .pause(0.2).release().perform()
    count = driver.find_element(By.ID, "selection-count")
    wait(driver, lambda d: count.get_attribute("data-count") != "0", message="nothing selected")
    wait(driver, lambda d: d.find_element(By.ID, "selection-stats").get_attribute("data-n-selected"))
    return int(count.get_attribute("data-count")), json.loads(count.get_attribute("data-range"))


def test_box_selection_counts_what_the_store_confirms_and_saves_as_a_cohort(web, browser, client, screenshot,
                                                                              tmp_path):
    plot = map_ready(browser, web)
    n, box = box_select(browser, plot)
    table = client.cluster_run(RUN)["assignments"]
    x, y = table.column("map_x").to_numpy(), table.column("map_y").to_numpy()
    inside = ((x >= min(box["x"])) & (x <= max(box["x"])) & (y >= min(box["y"])) & (y <= max(box["y"])))
    expected = set(np.array(table.column("ecg_id").to_pylist())[inside])
    assert 0 < n == len(expected) < table.num_rows
    stats = browser.find_element(By.ID, "selection-stats")
    assert int(stats.get_attribute("data-n-selected")) == n
    rows = browser.find_elements(By.CSS_SELECTOR, "#selection-table tr")
    assert len(rows) > 1 and rows[1].text.startswith("label_groups:")
    # the downloaded CSV holds exactly the selected ids
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.ID, "download-csv").click()
    csv_file = downloads / f"{RUN}-selection.csv"
    wait(browser, lambda d: csv_file.exists() and csv_file.read_text().endswith("\n"), message="no CSV downloaded")
    lines = csv_file.read_text().strip().split("\n")
    assert lines[0] == "ecg_id" and set(lines[1:]) == expected
    # saved as a cohort: a boolean column search can filter on
    browser.find_element(By.ID, "cohort-name").send_keys("boxed")
    browser.find_element(By.ID, "save-cohort").click()
    wait(browser, lambda d: d.find_elements(By.ID, "cohort-saved"))
    assert "cohort_boxed" in browser.find_element(By.ID, "cohort-saved").text
    batches = list(client.export(where="cohort_boxed = true", columns=["cohort_boxed"], vectors=False))
    assert set(pa.Table.from_batches(batches).column("ecg_id").to_pylist()) == expected
    assert client.info()["columns"]["cohort_boxed"] == "BOOLEAN"
    hits = client.search(ecg_id=sorted(expected)[0], k=3, where="cohort_boxed=true", exclude_self=True).hits
    assert hits and all(h.ecg_id in expected for h in hits)
    screenshot(browser, "map-selection")


def test_a_read_token_cannot_save_a_cohort(web, browser, client):
    ids = client.suggest_ids("code15/", limit=3)
    status, body = web.json("/api/cohort", {"name": "denied", "ecg_ids": ids}, token=READ_TOKEN)
    assert status == 403 and body["code"] == "PERMISSION_DENIED" and body["reason"]
    assert "write" in body["error"]
    assert "cohort_denied" not in client.info()["columns"]
    # the same in the page: a read token typed in the header is what the save goes out with
    plot = map_ready(browser, web)
    token = browser.find_element(By.ID, "token")
    token.send_keys(READ_TOKEN + "\n")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    box_select(browser, plot)
    browser.find_element(By.ID, "cohort-name").send_keys("denied")
    browser.find_element(By.ID, "save-cohort").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "cohort-error"))
    assert error.text.startswith("PERMISSION_DENIED")
    assert "cohort_denied" not in client.info()["columns"]
    browser.execute_script("sessionStorage.clear()")


def test_probes_view_shows_per_label_metrics_and_the_fraction_curve(web, browser, client, screenshot):
    open_view(browser, web, view="probes")
    wait(browser, lambda d: d.find_element(By.ID, "probes").get_attribute("data-ready"))
    card = browser.find_element(By.CSS_SELECTOR, f'.probe[data-probe="{PROBE}"]')
    probe = next(p for p in client.list_probes() if p["name"] == PROBE)
    tested = probe["report"]["test"]["labels"][0]
    row = card.find_elements(By.CSS_SELECTOR, ".probe-table tr")[1].text
    assert row.startswith("label_groups:AF_AFL")
    auroc = tested["auroc"]
    assert f"{auroc['value']:.3f} [{auroc['ci_low']:.3f}–{auroc['ci_high']:.3f}]" in row
    curve = card.find_element(By.CSS_SELECTOR, ".curve")
    n_points = browser.execute_script("return arguments[0].data[0].x.length", curve)
    assert n_points == len(probe["report"]["fraction_curve"])
    screenshot(browser, "probes")


def test_errors_are_json_with_the_grpc_reason(web):
    status, body = web.json("/api/search?id=no/such-ecg")
    assert status == 404 and body["code"] == "NOT_FOUND" and body["reason"] == "not_found"
    status, body = web.json("/api/search?" + urllib.parse.urlencode({"id": QUERY, "where": "age >>= 3"}))
    assert status == 400 and body["reason"] == "bad_filter"
    status, body = web.json("/api/search?id=x&k=0")
    assert status == 400 and body["reason"] == "bad_k"


def test_security_headers_no_inline_scripts_and_a_quiet_access_log(web):
    status, headers, html = web.request("/")
    csp = headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    assert status == 200 and "'unsafe-inline'" not in script_src and "'self'" in script_src
    assert "frame-ancestors 'none'" in csp and headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(rb"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(b"src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(rb"<[^>]*\son[a-z]+\s*=", html, re.I)  # no inline event handlers either
    status, headers, _ = web.request("/api/search?" + urllib.parse.urlencode({"id": QUERY}))
    assert status == 200 and headers["cache-control"] == "no-store"
    status, headers, body = web.request("/vendor/plotly.min.js")
    assert status == 200 and body.startswith(b"/**") and b"plotly.js" in body[:200]
    log = web.log()
    assert "GET /api/search 200" in log  # the web runs with -v: access lines at INFO
    assert QUERY not in log and "S0001" not in log and "patient" not in log


def test_a_public_bind_without_https_is_refused(atlas_server):
    from tests.service.conftest import cli

    done = cli("web", "--server", atlas_server.address, "--host", "0.0.0.0", "--port", "0", check=False,
               env={"ECG_ATLAS_TOKEN": ""})
    assert done.returncode == 2 and "refusing to listen on 0.0.0.0" in done.stderr and "HTTPS" in done.stderr
