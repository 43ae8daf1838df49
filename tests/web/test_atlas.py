"""The web atlas in a real headless Chromium against a real gRPC server and web process."""

from __future__ import annotations

import re
import urllib.parse

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.web.conftest import PROBE

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
    texts = [t.text for t in driver.find_elements(By.CSS_SELECTOR, f"{card_selector} .paper .annotation-text")]
    return [t.replace("✂", "").strip() for t in texts if t != "not recorded"]


def drawing(driver, selector: str) -> dict:
    """What a drawn page shows: its gain / speed / clip / not-recorded marks, the height of its first
    piece (lead I, mm of paper), its sample spacing and right edge (mm)."""
    return driver.execute_script("""
        const gd = document.querySelector(arguments[0]);
        const line = gd.data.find((t) => t.name === 'ecg'), cut = gd.data.find((t) => t.name === 'clipped');
        const xs = line.x.filter((v) => v !== null), first = line.y.slice(0, line.y.indexOf(null));
        return {gain: gd.dataset.gain, speed: gd.dataset.speed, clipped: Number(gd.dataset.clipped),
                notRecorded: Number(gd.dataset.notRecorded), span: Math.max(...first) - Math.min(...first),
                step: line.x[1] - line.x[0], right: Math.max(...xs), cut: cut.x.filter((v) => v !== null).length,
                hatches: gd.data.filter((t) => t.name === 'not recorded').length};""", selector)


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
    curve = card.find_element(By.CSS_SELECTOR, ".curve.fraction")
    n_points = browser.execute_script("return arguments[0].data[0].x.length", curve)
    assert n_points == len(probe["report"]["fraction_curve"])
    screenshot(browser, "probes")


def test_probes_view_shows_each_probe_beside_its_random_init_baseline_with_roc_and_pr(web, browser, client,
                                                                                      screenshot):
    open_view(browser, web, view="probes")
    wait(browser, lambda d: d.find_element(By.ID, "probes").get_attribute("data-ready"))
    card = browser.find_element(By.CSS_SELECTOR, f'.probe[data-probe="{PROBE}"]')
    report = next(p for p in client.list_probes() if p["name"] == PROBE)["report"]
    own, baseline = report["test"]["labels"][0], report["baseline"]["test"]["labels"][0]
    assert card.get_attribute("data-baselines") == "1"
    rows = [r.text for r in card.find_elements(By.CSS_SELECTOR, ".probe-table tr")]
    below = rows[rows.index(next(r for r in rows if r.startswith("label_groups:AF_AFL"))) + 1]
    auroc = baseline["auroc"]
    assert below.startswith("vs random-init encoder")
    assert f"{auroc['value']:.3f} [{auroc['ci_low']:.3f}–{auroc['ci_high']:.3f}]" in below
    assert any(r.startswith("vs random-init encoder") for r in rows[rows.index(next(r for r in rows
                                                                                     if r.startswith("macro"))):])
    # ROC and PR: this probe's points as its report keeps them, and the baseline's beside them
    roc, pr = (card.find_element(By.CSS_SELECTOR, f".curve.{kind}") for kind in ("roc", "pr"))
    assert roc.get_attribute("data-curves") == "2" and pr.get_attribute("data-curves") == "2"
    drawn = browser.execute_script("return arguments[0].data.map((t) => [t.name, t.x, t.y])", roc)
    assert drawn[0][1] == own["curves"]["roc"]["fpr"] and drawn[0][2] == own["curves"]["roc"]["tpr"]
    assert drawn[1][0].startswith("random-init encoder") and drawn[1][2] == baseline["curves"]["roc"]["tpr"]
    drawn = browser.execute_script("return arguments[0].data.map((t) => t.y)", pr)
    assert drawn == [own["curves"]["pr"]["precision"], baseline["curves"]["pr"]["precision"]]
    screenshot(browser, "probes-baseline-roc-pr")


def test_the_probes_empty_state_gives_the_clis_own_syntax(web):
    from tests.service.conftest import cli

    usage = " ".join(cli("probe", "train", "--help").stdout.split())
    _, _, script = web.request("/static/js/probes.js")
    hint = re.search(r'"(ecg-atlas probe train [^"]*)"', script.decode()).group(1)
    assert hint == "ecg-atlas probe train --name NAME --target SPEC" and "--name NAME --target SPEC" in usage


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


PHILIPS = "sierra/philipsecg104_pagewriter_touch_ZZDEMOPTONLY.xml"


def click_setting(driver, name: str, value: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'input[name="{name}"][value="{value}"] + span').click()


def test_gain_and_speed_toggles_redraw_every_page_and_a_normal_ecg_is_not_clipped(web, browser, shared_data,
                                                                                  screenshot):
    """Issue 28: this Philips file had 6 of its 12 leads clipped at 10 mm/mV."""
    open_view(browser, web, view="search")
    k = wait(browser, lambda d: d.find_element(By.ID, "search-k"))
    k.clear()
    k.send_keys("2")
    browser.find_element(By.ID, "file-input").send_keys(str(shared_data / "formats" / PHILIPS))
    wait_for_traces(browser, 2)
    query = "#query-card .paper"
    standard = drawing(browser, query)
    assert (standard["gain"], standard["speed"], standard["clipped"], standard["cut"]) == ("10", "25", 0, 0)
    note = browser.find_element(By.CSS_SELECTOR, "#query-card .paper-note").text
    assert note.startswith("10 mm/mV · 25 mm/s") and "clipped" not in note
    screenshot(browser, "paper-philips-10mm-25mms")

    click_setting(browser, "paper-gain", "20")
    wait(browser, lambda d: all(p.get_attribute("data-gain") == "20"
                                for p in d.find_elements(By.CSS_SELECTOR, ".paper[data-drawn]")))
    doubled = drawing(browser, query)
    assert doubled["span"] == pytest.approx(2 * standard["span"], rel=1e-3)  # lead I: twice as tall
    # its deep V2-V3 S waves run past the neighbouring rows only at 20 mm/mV: marked, and named
    assert doubled["clipped"] == 2 and doubled["cut"] > 0
    note = browser.find_element(By.CSS_SELECTOR, "#query-card .paper-note").text
    assert note.startswith("20 mm/mV · 25 mm/s") and "clipped at this gain (✂, red): V2, V3" in note
    assert lead_labels(browser, "#query-card")[6] == "V2"  # the clip mark sits beside the name, not over it
    assert "gain=20" in browser.current_url
    screenshot(browser, "paper-philips-20mm-25mms")

    click_setting(browser, "paper-speed", "50")
    wait(browser, lambda d: all(p.get_attribute("data-speed") == "50"
                                for p in d.find_elements(By.CSS_SELECTOR, ".paper[data-drawn]")))
    fast = drawing(browser, query)
    assert fast["step"] == pytest.approx(2 * doubled["step"]) and fast["right"] <= 250  # 5 s on the same page
    assert browser.find_element(By.CSS_SELECTOR, "#query-card .paper-note").text.startswith("20 mm/mV · 50 mm/s")
    screenshot(browser, "paper-philips-20mm-50mms")


def test_a_short_record_shows_its_missing_seconds_as_not_recorded(web, browser, client, screenshot):
    short = "code15/47946"  # 7.3 s of a 10-s page
    open_view(browser, web, view="search", id=short, k=1)
    wait_for_traces(browser, 1)
    page = drawing(browser, "#query-card .paper")
    # the last column (3 rows) and the end of the third (3 rows) and of the rhythm strip
    assert page["notRecorded"] == page["hatches"] == 7
    texts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#query-card .paper .annotation-text")]
    assert texts.count("not recorded") >= 4
    assert "not recorded after 7.33 s" in browser.find_element(By.CSS_SELECTOR, "#query-card .paper-note").text
    screenshot(browser, "paper-short-record")
    # at 50 mm/s the page holds 5 s, all of them recorded
    click_setting(browser, "paper-speed", "50")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#query-card .paper").get_attribute("data-speed") == "50")
    assert drawing(browser, "#query-card .paper")["hatches"] == 0


def test_a_lone_header_dropped_in_the_page_asks_for_its_signal_file(web, browser, ecg_dir):
    open_view(browser, web, view="search")
    picker = wait(browser, lambda d: d.find_element(By.ID, "file-input"))
    picker.send_keys(str(ecg_dir / "cinc_cpsc2018" / "A0001.hea"))
    status = wait(browser, lambda d: d.find_element(By.ID, "status") if "A0001" in d.find_element(By.ID, "status").text
                  else None)
    text = status.text
    assert "A0001.hea" in text and "add its .dat (or .mat) beside it" in text
    assert "/" not in text.replace(".dat/.mat", "") and "ecg-atlas-web-" not in text and "tmp" not in text
