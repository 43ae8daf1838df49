"""The ECG page layout the browser draws: every lead in its place, an artefact clipped to its row."""

from __future__ import annotations

import numpy as np

from ecg_atlas.analysis.ecg_paper import CLIP_MV, ROW_MV, ROWS
from ecg_atlas.embedder import read_ecg
from ecg_atlas.web.traces import paper

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def pieces(page):
    """The polylines of a page (calibration pulses included), split at the nulls."""
    out, current = [], []
    for x, y in zip(page["x"], page["y"]):
        if x is None:
            out.append(np.array(current, dtype=float))
            current = []
        else:
            current.append((x, np.nan if y is None else y))
    return out


def row_of(y_mean: float) -> int:
    return int(-y_mean // ROW_MV)


def test_a_saturated_lead_stays_inside_its_own_row():
    fs = 500
    t = np.arange(10 * fs) / fs
    signal = np.tile(0.8 * np.sin(2 * np.pi * 1.2 * t), (12, 1)).astype(np.float32)
    signal[LEADS.index("V1"), 2600:2900] = 40.0  # an artefact far beyond the page, in V1's 5.0-7.5 s
    page = paper(signal, fs, LEADS)
    assert page["clipped"] == ["V1"] and page["missing"] == []
    traces = [p for p in pieces(page) if p[0, 0] >= 0]
    assert len(traces) == 13  # 3 x 4 columns plus the rhythm strip
    for piece in traces:
        row = row_of(np.nanmean(piece[:, 1]))
        baseline = -(row + 0.5) * ROW_MV
        assert np.nanmax(np.abs(piece[:, 1] - baseline)) <= CLIP_MV + 1e-6  # never into the next row
    v1 = traces[2]  # row 0, third column: 5.0-7.5 s
    assert v1[0, 0] == 5.0 and np.nanmax(v1[:, 1]) == np.float64(round(-0.5 * ROW_MV + CLIP_MV, 3))


def test_the_layout_of_a_real_ecg(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea")
    page = paper(rec.signal, rec.fs, rec.lead_names)
    assert [label["lead"] for label in page["labels"]] == [lead for row in ROWS for lead in row] + ["II"]
    traces = [p for p in pieces(page) if p[0, 0] >= 0]
    assert max(p[-1, 0] for p in traces) < 10.0 and page["duration_s"] == 15.0
    assert all(len(p) == 1250 for p in traces[:12]) and len(traces[12]) == 5000  # 2.5 s and 10 s at 500 Hz


def test_missing_leads_are_named_not_drawn():
    signal = np.zeros((8, 5000), np.float32)
    page = paper(signal, 500, ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"])
    assert set(page["missing"]) == {"III", "aVR", "aVL", "aVF"}
    assert len([p for p in pieces(page) if p[0, 0] >= 0]) == 9
