"""A 12-lead ECG laid out as a cart prints it, ready for the browser to draw on ECG paper.

The page is the one `analysis.ecg_paper` defines (and draws to PNG): three rows of four columns
(I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6), each column 2.5 s of its leads, then lead II over
the full 10 s as a rhythm strip. At 25 mm/s and 10 mm/mV one row is ``ROW_MV`` (30 mm) high; a
lead that saturates or carries artefacts is clipped to its own row (the flat tops show where), so
it never draws across its neighbours.

Coordinates are in seconds and millivolts of the page: x runs 0–10 s (plus the calibration pulse
left of 0), row r's baseline sits at y = −(r + 0.5)·ROW_MV. The browser only adds the grid.
"""

from __future__ import annotations

import numpy as np

from ecg_atlas.analysis.ecg_paper import CLIP_MV, PAGE_S, ROW_MV, ROWS, centred, clipped, page_pieces
from ecg_atlas.embedder.leads import canonical_lead_name

CAL_S = (-0.35, -0.3, -0.1, -0.05)  # calibration pulse: 1 mV for 0.2 s, left of the page
MAX_DRAW_HZ = 500.0  # samples per second sent to the browser: 1 mm at 25 mm/s holds 20 of them


def _decimated(signal: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    step = max(1, int(fs // MAX_DRAW_HZ))
    return signal[:, ::step], fs / step


def paper(signal: np.ndarray, fs: float, lead_names: list[str]) -> dict:
    """The page for one ECG: {"x": [...], "y": [...]} polylines (None between pieces), lead labels,
    which leads were clipped and which are missing. ``signal`` is (leads, samples) in mV."""
    signal, fs = _decimated(np.asarray(signal, dtype=np.float64), float(fs))
    rows_of = {canonical_lead_name(n): i for i, n in enumerate(lead_names)}
    n_page = min(signal.shape[1], int(round(PAGE_S * fs)))
    leads = {name: signal[i, :n_page] for name, i in rows_of.items() if name}
    xs: list[float | None] = []
    ys: list[float | None] = []
    labels, clipped_leads, missing = [], set(), []

    for piece in page_pieces(PAGE_S):
        baseline = piece.baseline
        if piece.column == 0:
            xs.extend([CAL_S[0], CAL_S[1], CAL_S[1], CAL_S[2], CAL_S[2], CAL_S[3], None])
            ys.extend([baseline, baseline, baseline + 1.0, baseline + 1.0, baseline, baseline, None])
        labels.append({"lead": piece.lead, "x": piece.start_s + 0.05, "y": baseline + 0.55 * ROW_MV - 0.35})
        if piece.lead not in leads:
            if piece.lead not in missing:
                missing.append(piece.lead)
            continue
        start, stop = piece.samples(fs)
        if start >= n_page:
            continue
        stop = min(stop, n_page)
        trace = centred(leads[piece.lead][start:stop])
        if np.any(np.abs(trace[np.isfinite(trace)]) > CLIP_MV):
            clipped_leads.add(piece.lead)
        trace = clipped(trace) + baseline
        xs.extend(np.round(np.arange(start, stop) / fs, 4).tolist())
        ys.extend(np.where(np.isfinite(trace), np.round(trace, 3), np.nan).tolist())
        xs.append(None)
        ys.append(None)
    # NaN (a gap in the recording) is not JSON: it travels as null, which also breaks the line
    ys = [None if y is not None and y != y else y for y in ys]
    return {"x": xs, "y": ys, "labels": labels, "clipped": sorted(clipped_leads), "missing": missing,
            "duration_s": round(signal.shape[1] / fs, 2), "page_s": PAGE_S, "row_mv": ROW_MV,
            "rows": len(ROWS) + 1}
