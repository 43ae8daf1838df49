"""The ECG page the browser draws (ecg_atlas/web/traces.py): every lead in its place at both paper
speeds, a tall complex allowed across the neighbouring rows, only an artefact clipped, and what a
record does not hold left "not recorded"."""

from __future__ import annotations

import numpy as np

from ecg_atlas.analysis.ecg_paper import ROW_MV, ROWS, centred
from ecg_atlas.embedder import read_ecg
from ecg_atlas.web.traces import paper

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
PAGE = [lead for row in ROWS for lead in row] + ["II"]
PHILIPS = "sierra/philipsecg104_pagewriter_touch_ZZDEMOPTONLY.xml"


def pieces(page, speed="25"):
    return page["layouts"][speed]["pieces"]


def test_a_tall_complex_may_cross_into_the_next_row_and_only_an_artefact_is_clipped():
    fs = 500
    t = np.arange(10 * fs) / fs
    signal = np.tile(0.8 * np.sin(2 * np.pi * 1.2 * t), (12, 1)).astype(np.float32)
    signal[LEADS.index("V2"), 2700:2720] = -3.2  # a deep S wave: past its own row (1.5 mV), as on paper
    signal[LEADS.index("V1"), 2600:2900] = 40.0  # an artefact far beyond the page, in V1's 5.0-7.5 s
    page = paper(signal, fs, LEADS)
    assert page["clipped"]["25"] == {"5": ["V1"], "10": ["V1"], "20": ["V1", "V2"]}
    assert page["missing"] == []
    v1, v2 = pieces(page)[2], pieces(page)[6]
    assert (v1["lead"], v1["row"], v1["start_s"]) == ("V1", 0, 5.0)
    # the browser gets the samples as recorded (centred) and the paper bounds to clip them at:
    # the neighbouring rows (45 mm), or the page's edge above the first row (30 mm)
    assert max(v1["v"]) > 39 and (v1["low_mm"], v1["high_mm"]) == (-45.0, 30.0)
    assert min(v2["v"]) < -ROW_MV and (v2["low_mm"], v2["high_mm"]) == (-45.0, 45.0)
    assert (pieces(page)[-1]["low_mm"], pieces(page)[-1]["high_mm"]) == (-30.0, 45.0)  # the rhythm strip


def test_the_philips_pagewriter_file_clips_no_lead_at_the_standard_gain(shared_data):
    """Issue 28: at 10 mm/mV, 6 of this file's 12 leads were clipped to their own row."""
    rec = read_ecg(shared_data / "formats" / PHILIPS)
    page = paper(rec.signal, rec.fs, rec.lead_names)
    half_row = 0.48 * ROW_MV  # the old rule: every lead kept inside its own row
    old = {p["lead"] for p in pieces(page) if p["v"] and np.nanmax(np.abs(np.array(p["v"], float))) > half_row}
    assert len(old) == 6
    assert page["clipped"]["25"]["10"] == [] and page["clipped"]["50"]["10"] == []
    # its deep V2-V3 S waves (-3.1, -4.1 mV) run past the neighbouring rows only at 20 mm/mV
    assert page["clipped"]["25"]["20"] == ["V2", "V3"] and page["clipped"]["25"]["5"] == []


def test_both_paper_speeds_lay_out_a_real_ecg(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea")
    page = paper(rec.signal, rec.fs, rec.lead_names)
    assert page["duration_s"] == 15.0 and page["fs"] == 500.0
    for speed, page_s in (("25", 10.0), ("50", 5.0)):
        laid = pieces(page, speed)
        assert page["layouts"][speed]["page_s"] == page_s
        assert [p["lead"] for p in laid] == PAGE
        assert all(len(p["v"]) == page_s / 4 * 500 for p in laid[:12]) and len(laid[12]["v"]) == page_s * 500
        assert all(p["recorded_s"] == p["stop_s"] for p in laid)
    # the samples as recorded, each piece centred on its baseline (no filter)
    first = pieces(page)[0]
    expected = centred(np.asarray(rec.signal[0, :1250], np.float64))
    assert np.allclose(first["v"], expected, atol=5e-4)


def test_a_short_record_leaves_the_rest_of_the_page_not_recorded(ecg_dir):
    rec = read_ecg(ecg_dir / "code15" / "47946.hea")  # 7.335 s at 400 Hz
    page = paper(rec.signal, rec.fs, rec.lead_names)
    laid = pieces(page)
    last_column = [p for p in laid if p["column"] == 3]
    assert [p["lead"] for p in last_column] == ["V4", "V5", "V6"]
    assert all(p["v"] == [] and p["recorded_s"] == 7.5 for p in last_column)
    assert all(p["recorded_s"] == 7.335 for p in laid if p["column"] == 2 or p["row"] == 3)
    assert len(laid[-1]["v"]) == 2934
    # at 50 mm/s the page holds 5 s: all of it recorded
    assert all(p["recorded_s"] == p["stop_s"] for p in pieces(page, "50"))


def test_leads_a_record_lacks_are_named_and_left_empty(shared_data):
    rec = read_ecg(shared_data / "formats" / "scp" / "welchallyn_mdw14_testpatient_20170504.scp")  # 8 leads
    page = paper(rec.signal, rec.fs, rec.lead_names)
    assert page["missing"] == ["aVR", "aVL", "III", "aVF"]
    empty = [p for p in pieces(page) if not p["v"]]
    assert sorted(p["lead"] for p in empty) == sorted(page["missing"])
    assert all(p["recorded_s"] == p["start_s"] for p in empty)
