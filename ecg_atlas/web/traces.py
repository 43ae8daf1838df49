"""A 12-lead ECG laid out as a cart prints it, ready for the browser to draw on ECG paper.

The page is the one `analysis.ecg_paper` defines (and draws to PNG): three rows of four columns
(I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6), each column a quarter of the page, then lead II over
the whole page as a rhythm strip. The page is 250 mm wide, so it holds 10 s at 25 mm/s and 5 s at
50 mm/s: one layout is sent per paper speed (``layouts``), each piece's samples centred on its
baseline in mV, as recorded. The browser scales them by the gain it draws at (5 / 10 / 20 mm/mV)
and clips each piece at its ``low_mm`` / ``high_mm`` of paper (`ecg_paper.clip_bounds`: a tall
complex runs across the neighbouring rows, as on paper; only beyond them is it clipped).
``clipped`` says which leads that clips, per speed and gain, so the page can mark them.

A piece's ``recorded_s`` is where its lead's recording ends within the piece: a record shorter
than the page leaves the rest of the piece "not recorded", which the browser draws as such, as it
does the pieces of a lead the record does not have (``missing``).
"""

from __future__ import annotations

import numpy as np

from ecg_atlas.analysis import ecg_paper as ep
from ecg_atlas.embedder.leads import canonical_lead_name

MAX_DRAW_HZ = 500.0  # samples per second sent to the browser: 1 mm at 25 mm/s holds 20 of them
PAGE_MM = ep.PAGE_S * ep.MM_PER_S


def _decimated(signal: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    step = max(1, int(fs // MAX_DRAW_HZ))
    return signal[:, ::step], fs / step


def key(value: float) -> str:
    """A speed or gain as the JSON keys spell it: 25, 10, 5."""
    return f"{value:g}"


def _layout(leads: dict[str, np.ndarray], fs: float, n_rows: int, speed: float,
            clipped: dict[str, set[str]]) -> dict:
    """The pieces of the page at `speed` mm/s; adds the leads each gain clips to `clipped`."""
    page_s = PAGE_MM / speed
    pieces = []
    for piece in ep.page_pieces(page_s):
        low, high = ep.clip_bounds(piece.row, n_rows)
        entry = {"lead": piece.lead, "row": piece.row, "column": piece.column, "start_s": piece.start_s,
                 "stop_s": piece.stop_s, "low_mm": round(low * ep.MM_PER_MV, 3),
                 "high_mm": round(high * ep.MM_PER_MV, 3), "recorded_s": piece.start_s, "v": []}
        pieces.append(entry)
        signal = leads.get(piece.lead)
        if signal is None:
            continue
        start, stop = piece.samples(fs)
        trace = ep.centred(signal[start:min(stop, len(signal))])
        if not trace.size:
            continue
        entry["recorded_s"] = round(min(piece.stop_s, piece.start_s + trace.size / fs), 4)
        # NaN (a gap in the recording) is not JSON: it travels as null, which also breaks the line
        entry["v"] = [None if v != v else v for v in np.round(trace, 3).tolist()]
        for gain in ep.GAINS:
            if ep.is_clipped(trace, ep.clip_bounds(piece.row, n_rows, gain)):
                clipped[key(gain)].add(piece.lead)
    return {"page_s": page_s, "pieces": pieces}


def paper(signal: np.ndarray, fs: float, lead_names: list[str]) -> dict:
    """The page for one ECG at every paper speed: pieces of centred mV samples at ``fs`` (the
    drawing rate), where each is clipped, which leads are missing. ``signal`` is (leads, samples) in mV."""
    signal, fs = _decimated(np.asarray(signal, dtype=np.float64), float(fs))
    rows_of = {canonical_lead_name(n): i for i, n in enumerate(lead_names)}
    leads = {name: signal[i] for name, i in rows_of.items() if name}
    n_rows = len(ep.ROWS) + 1
    wanted = [lead for row in ep.ROWS for lead in row]
    layouts, clipped = {}, {}
    for speed in ep.SPEEDS:
        clipped[key(speed)] = {key(gain): set() for gain in ep.GAINS}
        layouts[key(speed)] = _layout(leads, fs, n_rows, speed, clipped[key(speed)])
    return {
        "fs": fs, "duration_s": round(signal.shape[1] / fs, 2),
        "missing": [lead for lead in wanted if lead not in leads], "layouts": layouts,
        "clipped": {s: {g: [lead for lead in wanted if lead in found] for g, found in by_gain.items()}
                    for s, by_gain in clipped.items()},
        "rows": n_rows, "row_mm": ep.ROW_MV * ep.MM_PER_MV, "margin_mm": ep.PAGE_MARGIN_MV * ep.MM_PER_MV,
        "page_mm": PAGE_MM,
        "speeds": [key(s) for s in ep.SPEEDS], "gains": [key(g) for g in ep.GAINS],
        "standard": {"speed": key(ep.MM_PER_S), "gain": key(ep.MM_PER_MV)},
    }
