"""The cohort map in a real headless Chromium against a real gRPC server and web process: every
point drawn, hover thumbnails, "contains LABEL" colouring, finding an id, the run's enrichment
table, selections with their histograms and saved cohorts."""

from __future__ import annotations

import collections
import csv
import io
import json
import urllib.parse

import numpy as np
import pyarrow as pa
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.service.conftest import READ_TOKEN
from tests.web.conftest import RUN
from tests.web.test_atlas import open_view, wait, wait_for_traces

pytestmark = pytest.mark.slow  # a real server with the whole corpus, a web process and Chromium

LABELS = "label_groups"


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
    target = isolated_point(browser)
    move_to(browser, plot, target)
    ActionChains(browser).click().perform()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-view") == "search")
    wait_for_traces(browser, 5)
    assert browser.find_element(By.CSS_SELECTOR, "#query-card h3 strong").text == target["id"]
    assert f"id={urllib.parse.quote(target['id'], safe='')}" in browser.current_url


def test_colour_by_a_numeric_column_bins_it_by_value(web, browser, client, screenshot):
    plot = map_ready(browser, web, colour="age")
    wait(browser, lambda d: plot.get_attribute("data-colour") == "age")
    assert "coloured by age" in browser.find_element(By.CSS_SELECTOR, "#map-plot .gtitle").text
    ages = run_column(client, "age")
    bins = json.loads(plot.get_attribute("data-bins"))
    known = [a for a in ages.values() if a is not None]
    assert 5 <= len(bins) <= 11 and bins[0]["lo"] <= min(known) and max(known) <= bins[-1]["hi"]
    widths = {round(b["hi"] - b["lo"], 9) for b in bins}
    assert len(widths) == 1  # one round width
    for i, b in enumerate(bins):  # each bin holds the ECGs of its range (the last one closed)
        last = i == len(bins) - 1
        assert b["n"] == sum(b["lo"] <= a < b["hi"] or (last and a == b["hi"]) for a in known), b
    legend = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#map-plot .legendtext")]
    unknown = sum(a is None for a in ages.values())
    # plotly lists a trace with points only
    named = [f"age {b['name']} ({b['n']})" for b in bins if b["n"]]
    assert legend == named + [f"age unknown ({unknown})"] * (unknown > 0)
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


def test_a_selection_draws_its_metadata_histograms_against_the_run(web, browser, client, screenshot):
    plot = map_ready(browser, web)
    n, box = box_select(browser, plot)
    hists = browser.find_element(By.ID, "selection-hists")
    wait(browser, lambda d: hists.get_attribute("data-drawn") == "3", message="no histograms")
    table = client.cluster_run(RUN)["assignments"]
    x, y = table.column("map_x").to_numpy(), table.column("map_y").to_numpy()
    inside = ((x >= min(box["x"])) & (x <= max(box["x"])) & (y >= min(box["y"])) & (y <= max(box["y"])))
    chosen = set(np.array(table.column("ecg_id").to_pylist())[inside])
    assert len(chosen) == n

    def shown(column):
        div = hists.find_element(By.CSS_SELECTOR, f'.hist[data-column="{column}"]')
        assert div.find_elements(By.CSS_SELECTOR, ".bars .point"), f"no bars drawn for {column}"
        return json.loads(div.get_attribute("data-selected"))

    sexes = collections.Counter("unknown" if v is None else v for e, v in run_column(client, "sex").items()
                                if e in chosen)
    assert shown("sex") == {k: sexes.get(k, 0) for k in shown("sex")} and sum(shown("sex").values()) == n
    ages = [v for e, v in run_column(client, "age").items() if e in chosen and v is not None]
    assert sum(shown("age").values()) == len(ages)
    assert shown("age").get("60s", 0) == sum(60 <= a < 70 for a in ages)
    labels = {e: v for e, v in run_column(client, LABELS).items() if e in chosen and v is not None}
    for label, count in shown(LABELS).items():
        assert count == sum(label in v for v in labels.values()), label
    screenshot(browser, "map-selection-histograms")


def isolated_point(driver) -> dict:
    """The drawn point farthest from any other: hovering or clicking there can only mean it."""
    found = point_pixels(driver)
    xy = np.array([[p["px"], p["py"]] for p in found["points"]])
    gaps = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]
    return found["points"][int(np.argmax(gaps))]


def move_to(driver, plot, point: dict) -> None:
    ActionChains(driver).move_to_element_with_offset(plot, 0, 0).perform()
    size = plot.size
    ActionChains(driver).move_to_element_with_offset(
        plot, point["px"] - size["width"] / 2, point["py"] - size["height"] / 2).pause(0.3).perform()


def run_column(client, column: str) -> dict:
    """ecg_id -> the stored value of `column`, for every ECG of the run."""
    ids = set(client.cluster_run(RUN)["assignments"].column("ecg_id").to_pylist())
    table = pa.Table.from_batches(list(client.export(columns=[column], vectors=False)))
    return {e: v for e, v in zip(table.column("ecg_id").to_pylist(), table.column(column).to_pylist()) if e in ids}


def test_hovering_a_point_shows_a_thumbnail_of_its_ecg(web, browser, client, screenshot):
    plot = map_ready(browser, web)
    target = isolated_point(browser)
    move_to(browser, plot, target)
    thumb = browser.find_element(By.ID, "map-thumb")
    wait(browser, lambda d: thumb.get_attribute("data-ecg-id") == target["id"] and thumb.is_displayed()
         and int(thumb.get_attribute("data-points") or 0) > 0, message="no thumbnail for the hovered point")
    assert thumb.get_attribute("data-lead") == "II"
    assert target["id"] in thumb.find_element(By.CSS_SELECTOR, ".thumb-caption").text
    # the thumbnail draws lead II as stored: its envelope's extremes are the centred lead's
    status, body = web.json("/api/thumb?" + urllib.parse.urlencode({"id": target["id"]}))
    assert status == 200 and body["lead"] == "II"
    recording = client.get_signal(target["id"])
    lead = np.asarray(recording.signal)[list(recording.lead_names).index("II")]
    lead = lead[: int(round(min(10.0, body["seconds"]) * recording.fs))]
    lead = lead - np.median(lead[np.isfinite(lead)])
    drawn = [v for v in body["y"] if v is not None]
    assert min(drawn) == pytest.approx(np.nanmin(lead), abs=2e-3)
    assert max(drawn) == pytest.approx(np.nanmax(lead), abs=2e-3)
    screenshot(browser, "map-hover-thumbnail", viewport=True)
    # moving off the map hides it
    ActionChains(browser).move_to_element_with_offset(plot, 0, -plot.size["height"] / 2 - 40).perform()
    wait(browser, lambda d: not thumb.is_displayed(), message="the thumbnail stayed after the pointer left")


def test_colour_by_contains_a_label_counts_what_the_store_holds(web, browser, client, screenshot):
    plot = map_ready(browser, web)
    Select(browser.find_element(By.ID, "map-colour")).select_by_value(LABELS)
    picker = browser.find_element(By.ID, "map-label")
    wait(browser, lambda d: plot.get_attribute("data-colour") == LABELS and picker.is_displayed())
    stored = run_column(client, LABELS)
    counts = collections.Counter(label for labels in stored.values() if labels for label in set(labels))
    # the picker lists every label of the column in the run, most frequent first, with its count
    options = [o.text for o in picker.find_elements(By.TAG_NAME, "option")]
    assert options[0] == f"{counts.most_common(1)[0][0]} ({counts.most_common(1)[0][1]})"
    assert sorted(options) == sorted(f"{label} ({n})" for label, n in counts.items())
    for label in ("AF_AFL", "NORM"):
        Select(picker).select_by_value(label)
        wait(browser, lambda d, label=label: plot.get_attribute("data-label") == label,
             message=f"not recoloured by {label}")
        holding = [e for e, labels in stored.items() if labels and label in labels]
        unknown = [e for e, labels in stored.items() if labels is None]
        assert int(plot.get_attribute("data-contains")) == len(holding) > 0
        legend = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#map-plot .legendtext")]
        assert f"contains {label} ({len(holding)})" in legend
        assert f"without {label} ({len(stored) - len(holding) - len(unknown)})" in legend
        drawn = browser.execute_script("""const t = document.getElementById('map-plot').data
            .find((t) => t.name.startsWith('contains ')); return t.text.map((s) => s.split('<br>')[0]);""")
        assert sorted(drawn) == sorted(holding)
    assert f"colour={LABELS}" in browser.current_url and "label=NORM" in browser.current_url
    screenshot(browser, "map-contains-label")
    # a SNOMED CT list: its codes are offered by name
    Select(browser.find_element(By.ID, "map-colour")).select_by_value("labels_snomed")
    wait(browser, lambda d: plot.get_attribute("data-colour") == "labels_snomed")
    af = sum(1 for codes in run_column(client, "labels_snomed").values() if codes and "164889003" in codes)
    assert f"164889003 atrial fibrillation ({af})" in [o.text for o in picker.find_elements(By.TAG_NAME, "option")]


def test_finding_an_id_highlights_and_centres_it(web, browser, client, screenshot):
    table = client.cluster_run(RUN)["assignments"]
    ids = table.column("ecg_id").to_pylist()
    target = "cinc_ptb/S0001"
    row = ids.index(target)
    plot = map_ready(browser, web)
    box = browser.find_element(By.ID, "map-find")
    box.send_keys("cinc_ptb/S00")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#map-find-ids option"))
    suggested = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#map-find-ids option")]
    assert target in suggested and all(s.startswith("cinc_ptb/S00") for s in suggested)
    box.send_keys("01\n")
    wait(browser, lambda d: plot.get_attribute("data-found") == target, message="the id was not found")
    found = browser.execute_script("""const gd = document.getElementById('map-plot');
        const t = gd.data.find((t) => t.meta === 'found');
        return {x: t.x[0], y: t.y[0], xr: gd._fullLayout.xaxis.range, yr: gd._fullLayout.yaxis.range};""")
    x, y = table.column("map_x").to_numpy()[row], table.column("map_y").to_numpy()[row]
    assert found["x"] == pytest.approx(x, rel=1e-5, abs=1e-5) and found["y"] == pytest.approx(y, rel=1e-5, abs=1e-5)
    assert sum(found["xr"]) / 2 == pytest.approx(x, abs=1e-3) and sum(found["yr"]) / 2 == pytest.approx(y, abs=1e-3)
    assert "find=cinc_ptb%2FS0001" in browser.current_url
    assert target in browser.find_element(By.ID, "map-find-result").text
    screenshot(browser, "map-find-id")
    box.clear()
    box.send_keys("no/such-ecg\n")
    wait(browser, lambda d: "not on this map" in d.find_element(By.ID, "map-find-result").text)


def test_the_runs_enrichment_table_is_shown_and_recolours_the_map(web, browser, client, screenshot):
    plot = map_ready(browser, web)
    panel = browser.find_element(By.ID, "map-enrichment")
    wait(browser, lambda d: panel.get_attribute("data-tests"), message="no enrichment table")
    kept = [r for r in csv.DictReader(io.StringIO(client.cluster_run(RUN)["enrichment_csv"])) if r["label"]]
    assert int(panel.get_attribute("data-tests")) == len(kept) > 0
    rows = panel.find_elements(By.CSS_SELECTOR, "#enrichment-table tr[data-label]")
    assert len(rows) == min(40, len(kept)) == int(panel.get_attribute("data-rows"))
    q = [float(r["q_value"]) for r in kept if r["q_value"]]
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert float(first[-1].text) == float(f"{min(q):.2g}")  # the page shows 2 significant digits
    label = rows[0].get_attribute("data-label")
    assert label in {r["label"] for r in kept}
    screenshot(browser, "map-enrichment")
    rows[0].click()
    column, value = label.split(":", 1)
    wait(browser, lambda d: plot.get_attribute("data-colour") == column and plot.get_attribute("data-label") == value)


def test_the_map_endpoints_refuse_in_json(web):
    status, body = web.json("/api/thumb")
    assert status == 400 and body["reason"] == "no_query"
    status, body = web.json("/api/thumb?id=no/such-ecg")
    assert status == 404 and body["code"] == "NOT_FOUND"
    status, body = web.json("/api/map-enrichment?run=no_such_run")
    assert status == 404 and body["code"] == "NOT_FOUND" and "no_such_run" in body["error"]
    status, body = web.json(f"/api/map-column?run={RUN}&name=source_path")  # a server path: never sent
    assert status == 400 and body["reason"] == "unknown_column"
