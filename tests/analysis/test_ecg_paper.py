"""ECG paper (analysis/ecg_paper.py): the one page layout that the PNGs and the web atlas share,
and the neighbour panels `search --plot` and the quickstart draw."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ecg_atlas.analysis.ecg_paper import CLIP_MV, ROWS, Panel, centred, clipped, page_pieces, plot_neighbours
from ecg_atlas.embedder import read_ecg


def test_the_page_is_three_rows_of_four_leads_then_the_rhythm_strip():
    pieces = page_pieces()
    assert [p.lead for p in pieces] == [lead for row in ROWS for lead in row] + ["II"]
    assert [(p.start_s, p.stop_s) for p in pieces[:4]] == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    assert (pieces[-1].row, pieces[-1].start_s, pieces[-1].stop_s) == (3, 0.0, 10.0)
    assert [p.baseline for p in pieces if p.column == 0] == [-1.5, -4.5, -7.5, -10.5]
    assert page_pieces(6.0, "V5")[-1].lead == "V5" and page_pieces(6.0)[1].samples(500) == (750, 1500)


def test_a_trace_sits_on_its_baseline_and_stays_in_its_row():
    trace = np.array([2.0, 2.0, np.nan, 2.0, 40.0, -40.0])
    shown = clipped(centred(trace))
    assert shown[0] == 0.0 and np.isnan(shown[2]) and shown[4] == CLIP_MV and shown[5] == -CLIP_MV


def test_neighbour_panels_draw_what_the_server_kept_and_say_what_it_did_not(ecg_dir, tmp_path):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea")
    panels = [Panel("QUERY  A0001", "age 74", rec.signal, rec.fs, list(rec.lead_names), highlight=True),
              Panel("#1  gone", "")]
    out = plot_neighbours(panels, tmp_path / "plots" / "neighbours.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[:2] == (660, 1672)  # the figure's own size (7.6 x 6.0 in a panel at 110 dpi), not cropped
    left, right = img[:, : img.shape[1] // 2], img[:, img.shape[1] // 2:]
    trace = img.max(axis=2) < 60  # black ink: traces and lead names
    assert trace[:, : img.shape[1] // 2].mean() > 5 * trace[:, img.shape[1] // 2:].mean()
    border = (np.abs(left - [0xC0, 0x39, 0x2B]).sum(axis=2) < 40).sum()  # the query's red frame
    assert border > 1000 and (np.abs(right - [0xC0, 0x39, 0x2B]).sum(axis=2) < 40).sum() == 0
