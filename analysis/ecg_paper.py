"""ECG paper: the one page layout of a 12-lead ECG, and the one renderer of ECGs to PNG.

Conventions a clinician expects: pink ECG paper at 25 mm/s and 10 mm/mV (small squares 0.04 s ×
0.1 mV, large squares 0.2 s × 0.5 mV), amplitudes in mV as recorded (each trace's median
subtracted for display, no filtering). As on a printed page, a tall complex may run across the
neighbouring rows; a trace is clipped only beyond them (``CLIP_MV``, 1.5 rows from its baseline)
or at the page's edge (``PAGE_MARGIN_MV`` past the first and last rows) — see `clip_bounds`. The web
atlas also draws at 5 / 20 mm/mV and 50 mm/s (``GAINS``, ``SPEEDS``); the bounds are lengths on the
paper, so they hold at every gain.

**The page** (`page_pieces`): three rows of four columns (I aVR V1 V4 / II aVL V2 V5 / III aVF V3
V6), each column a quarter of the page (2.5 s of a 10-s page), then a rhythm strip (lead II) over
the whole page. Row r's baseline sits at y = −(r + 0.5)·``ROW_MV``. `plot_ecg` draws it to PNG;
the web atlas sends the same pieces to the browser (ecg_atlas/web/traces.py).

**Figures** (each writes a PNG atomically and returns its path; matplotlib runs headless, imported
on first use):

* `plot_ecg` — the 12-lead page, its rhythm strip coloured by saliency when given (``explain``);
* `plot_saliency_lead` — one lead, every line segment coloured by saliency;
* `plot_ecg_grid` — one lead of several ECGs, a row per group (cluster exemplars, outliers);
* `plot_neighbours` — a query ECG and its neighbours, each a panel of limb | chest leads over
  5 s at the ECG's own rate (``search --plot``, ``quickstart``).

Saliency is drawn as ECG-FM's demo does (ecgfm_spec.md §11): the 156 per-token values of each 5-s
window resampled to the samples with a cubic spline, min–max normalised to [0, 1] over the
record, and each line segment coloured from blue #0047AB (0) to red #DC143C (1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.leads import canonical_lead_name
from ecg_atlas.embedder.recording import SEGMENT_SAMPLES, STANDARD_LEADS, TARGET_FS

from .figures import pyplot, save_png

# ---------------------------------------------------------------------------------------------
# The page layout (no drawing library needed: the web atlas uses it too)

#: The printed 12-lead page: rows of four leads side by side, then the rhythm strip.
ROWS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
#: Seconds across a full page.
PAGE_S = 10.0
#: The standard paper speed and gain, and the others a cart offers (the web atlas's toggles).
MM_PER_S = 25.0
MM_PER_MV = 10.0
SPEEDS = (25.0, 50.0)
GAINS = (5.0, 10.0, 20.0)
#: Height of one row in mV at the standard gain (30 mm of paper).
ROW_MV = 3.0
#: How far a trace may leave its baseline before it is clipped: across the rows above and below it
#: (as on paper, a tall QRS overlaps its neighbours), never beyond them.
CLIP_MV = 1.5 * ROW_MV
#: Paper above the first row and below the last one (room for their complexes), in mV at 10 mm/mV.
PAGE_MARGIN_MV = 0.5 * ROW_MV
#: 25 mm/s and 10 mm/mV: one mV is drawn as tall as 0.4 s is wide.
ASPECT = MM_PER_MV / MM_PER_S


@dataclass(frozen=True)
class Piece:
    """One lead's stretch of the page: which row and column, and the seconds it spans."""

    lead: str
    row: int
    column: int
    start_s: float
    stop_s: float

    @property
    def baseline(self) -> float:
        return row_baseline(self.row)

    def samples(self, fs: float) -> tuple[int, int]:
        """The sample range [start, stop) of this piece at `fs`."""
        return int(round(self.start_s * fs)), int(round(self.stop_s * fs))


def row_baseline(row: int) -> float:
    """The y (mV) of row `row`'s baseline; rows run downwards from 0."""
    return -(row + 0.5) * ROW_MV


def page_pieces(page_s: float = PAGE_S, rhythm_lead: str = RHYTHM_LEAD) -> list[Piece]:
    """Every piece of a page `page_s` seconds wide, row by row: the 3 × 4 leads, then the strip."""
    pieces = []
    for row, leads in enumerate(ROWS + ((rhythm_lead,),)):
        span = page_s / len(leads)
        for column, lead in enumerate(leads):
            pieces.append(Piece(lead, row, column, column * span, (column + 1) * span))
    return pieces


def centred(trace: np.ndarray) -> np.ndarray:
    """`trace` less the median of its finite values, so it sits on its baseline (display only: the
    samples' shape is untouched, no filter runs)."""
    finite = np.isfinite(trace)
    return trace - np.median(trace[finite]) if finite.any() else trace


def clip_bounds(row: int, n_rows: int, gain: float = MM_PER_MV) -> tuple[float, float]:
    """(low, high) in mV of a centred trace in row `row` of a page of `n_rows` rows drawn at `gain`
    mm/mV: ``CLIP_MV`` of paper either side of the baseline, or the page's edge when nearer."""
    scale = MM_PER_MV / gain  # paper lengths are set at the standard gain
    above = min(CLIP_MV, (row + 0.5) * ROW_MV + PAGE_MARGIN_MV)
    below = min(CLIP_MV, (n_rows - row - 0.5) * ROW_MV + PAGE_MARGIN_MV)
    return -below * scale, above * scale


def clipped(trace: np.ndarray, bounds: tuple[float, float] = (-CLIP_MV, CLIP_MV)) -> np.ndarray:
    """A centred trace kept within `bounds` (mV; default ``CLIP_MV`` either side of the baseline)."""
    return np.clip(trace, *bounds)


def is_clipped(trace: np.ndarray, bounds: tuple[float, float]) -> bool:
    """Whether any finite sample of a centred trace lies outside `bounds`."""
    finite = trace[np.isfinite(trace)]
    return bool(finite.size and (finite.min() < bounds[0] or finite.max() > bounds[1]))


# ---------------------------------------------------------------------------------------------
# Drawing

SALIENCY_COLOURS = ("#0047AB", "#DC143C")
PAPER = "#fff4f2"
MINOR = "#F6C9C9"
MAJOR = "#E88E8E"
TRACE = "#111111"
LABEL_BOX = {"facecolor": PAPER, "edgecolor": "none", "alpha": 0.85, "pad": 0.6}


def _grid(ax, t0: float, t1: float, y0: float, y1: float, *, seconds_axis: bool = True) -> None:
    """ECG paper over [t0, t1] s × [y0, y1] mV, at the paper's aspect ratio. seconds_axis: tick
    marks every second and the scale as the x label; otherwise no ticks."""
    ax.set_facecolor(PAPER)
    for step, colour, width in ((0.04, MINOR, 0.4), (0.2, MAJOR, 0.8)):
        for x in np.arange(np.ceil(t0 / step) * step, t1 + 1e-9, step):
            ax.axvline(x, color=colour, lw=width, zorder=0)
    for step, colour, width in ((0.1, MINOR, 0.4), (0.5, MAJOR, 0.8)):
        for y in np.arange(np.ceil(y0 / step) * step, y1 + 1e-9, step):
            ax.axhline(y, color=colour, lw=width, zorder=0)
    ax.set_xlim(t0, t1)
    ax.set_ylim(y0, y1)
    ax.set_aspect(ASPECT)
    ax.set_yticks([])
    if seconds_axis:
        ax.set_xticks(np.arange(np.ceil(t0), t1 + 1e-9, 1.0))
        ax.set_xlabel("time (s) — 25 mm/s, 10 mm/mV; small squares 0.04 s × 0.1 mV")
    else:
        ax.set_xticks([])


def _coloured_line(ax, t: np.ndarray, v: np.ndarray, colour_values: np.ndarray, width: float = 1.3):
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    points = np.column_stack([t, v]).reshape(-1, 1, 2)
    segments = np.concatenate([points[:-1], points[1:]], axis=1)
    cmap = LinearSegmentedColormap.from_list("ecgfm_saliency", list(SALIENCY_COLOURS))
    lc = LineCollection(segments, cmap=cmap, norm=Normalize(0, 1), linewidths=width, zorder=3)
    lc.set_array((colour_values[:-1] + colour_values[1:]) / 2)
    ax.add_collection(lc)
    return lc


@dataclass
class ECGTrace:
    """An ECG ready to draw: (12, N) mV at 500 Hz in ECG-FM lead order (NaN rows = lead absent)."""

    signal: np.ndarray
    title: str = ""
    saliency: np.ndarray | None = None  # (N,) in [0, 1], aligned with the samples

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / TARGET_FS


def trace_from_recording(recording, title: str = "", saliency: np.ndarray | None = None) -> ECGTrace:
    """A Recording's standard leads in ECG-FM order, resampled to 500 Hz as preprocessing does, in
    the recording's own units (mV for WFDB physical signals); absent leads are NaN (not drawn)."""
    from ecg_atlas.embedder.preprocessing import resample_to_target

    resampled = resample_to_target(np.nan_to_num(recording.signal, nan=0.0), recording.fs)
    signal = np.full((len(STANDARD_LEADS), resampled.shape[1]), np.nan)
    for row, name in enumerate(recording.lead_names):
        lead = canonical_lead_name(name)
        if lead is not None:
            signal[STANDARD_LEADS.index(lead)] = resampled[row]
    return ECGTrace(signal, title, saliency)


def saliency_to_samples(saliency: np.ndarray, segment_samples: int = SEGMENT_SAMPLES) -> np.ndarray:
    """(n_segments, T) token saliency → (n_segments · segment_samples,) in [0, 1] (spec §11)."""
    from scipy.ndimage import map_coordinates

    saliency = np.atleast_2d(np.asarray(saliency, dtype=np.float64))
    tokens = saliency.shape[1]
    grid = np.linspace(0, tokens - 1, segment_samples)
    per_sample = np.concatenate([map_coordinates(row, [grid]) for row in saliency])
    lo, hi = per_sample.min(), per_sample.max()
    return np.zeros_like(per_sample) if hi == lo else (per_sample - lo) / (hi - lo)


def plot_ecg(trace: ECGTrace, out: str | os.PathLike, *, rhythm_lead: str = RHYTHM_LEAD,
             max_seconds: float = PAGE_S) -> Path:
    """The 12-lead page (`page_pieces` over the first `max_seconds`, or the whole ECG when shorter);
    the rhythm strip coloured by saliency if the trace has it."""
    plt = pyplot()
    n_show = int(min(trace.signal.shape[1], max_seconds * TARGET_FS))
    seconds = n_show / TARGET_FS
    index = {lead: i for i, lead in enumerate(STANDARD_LEADS)}
    n_rows = len(ROWS) + 1
    height = n_rows * ROW_MV + 2 * PAGE_MARGIN_MV
    fig_w = max(8.0, seconds * 1.25 + 1.5)
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * height * ASPECT / seconds * 0.95 + 1.4))
    _grid(ax, 0, seconds, PAGE_MARGIN_MV - height, PAGE_MARGIN_MV)
    for piece in page_pieces(seconds, rhythm_lead):
        a, b = piece.samples(TARGET_FS)
        bounds = clip_bounds(piece.row, n_rows)
        v = clipped(centred(trace.signal[index[piece.lead], :n_show])[a:b], bounds) + piece.baseline
        t = np.arange(a, a + len(v)) / TARGET_FS
        if piece.row < len(ROWS):
            ax.plot(t, v, color=TRACE, lw=0.8, zorder=3)
            ax.text(piece.start_s + 0.04, piece.baseline + 0.9, piece.lead, fontsize=9, weight="bold", zorder=4,
                    bbox=LABEL_BOX)  # legible where a neighbouring row's complex runs across it
            if piece.column:  # the mark a cart prints where one lead gives way to the next
                ax.plot([piece.start_s] * 2, [piece.baseline - 0.4, piece.baseline + 0.4], color=TRACE, lw=0.8,
                        zorder=3)
            continue
        if trace.saliency is not None:
            lc = _coloured_line(ax, t, v, np.asarray(trace.saliency[:n_show], dtype=float))
            cbar = fig.colorbar(lc, ax=ax, orientation="horizontal", fraction=0.04, pad=0.12, aspect=50)
            cbar.set_label(f"ECG-FM attention saliency on lead {rhythm_lead} (0 = lowest, 1 = highest in this ECG)")
            label = f"{rhythm_lead} (saliency)"
        else:
            ax.plot(t, v, color=TRACE, lw=0.8, zorder=3)
            label = f"{rhythm_lead} (rhythm)"
        ax.text(0.04, piece.baseline + 0.9, label, fontsize=9, weight="bold", zorder=4, bbox=LABEL_BOX)
    _calibration_pulse(ax, seconds)
    ax.set_title(trace.title or "12-lead ECG", fontsize=11)
    return save_png(fig, out)


def _calibration_pulse(ax, seconds: float) -> None:
    """The 1 mV, 0.2 s calibration box every printed ECG starts with, here at the top right."""
    x0, y0 = seconds - 0.3, row_baseline(0)
    ax.plot([x0, x0, x0 + 0.2, x0 + 0.2], [y0 + 0.4, y0 + 1.4, y0 + 1.4, y0 + 0.4], color=TRACE, lw=0.8, zorder=3)
    ax.text(x0 - 0.02, y0 + 1.45, "1 mV", fontsize=6, ha="right", zorder=4)


def plot_saliency_lead(signal_mv: np.ndarray, saliency: np.ndarray, out: str | os.PathLike, *, lead: str = "II",
                       title: str = "") -> Path:
    """One lead on ECG paper, every line segment coloured by saliency (blue low → red high)."""
    plt = pyplot()
    v = centred(np.asarray(signal_mv, dtype=float))
    t = np.arange(len(v)) / TARGET_FS
    lo = min(-1.0, np.floor(np.nanmin(v) * 2) / 2)
    hi = max(1.0, np.ceil(np.nanmax(v) * 2) / 2)
    seconds = len(v) / TARGET_FS
    fig, ax = plt.subplots(figsize=(max(8.0, seconds * 1.25 + 1.5), max(2.6, (hi - lo) * 0.55 + 1.6)))
    _grid(ax, 0, seconds, lo, hi)
    lc = _coloured_line(ax, t, v, np.asarray(saliency, dtype=float))
    ax.set_yticks(np.arange(lo, hi + 1e-9, 0.5))
    ax.set_ylabel(f"lead {lead} (mV)")
    cbar = fig.colorbar(lc, ax=ax, fraction=0.03, pad=0.01)
    cbar.set_label("saliency (normalised)")
    ax.set_title(title or f"ECG-FM attention saliency over lead {lead}", fontsize=11)
    return save_png(fig, out)


def plot_ecg_grid(rows: Sequence[tuple[str, Sequence[ECGTrace]]], out: str | os.PathLike, *, lead: str = "II",
                  seconds: float = 5.0, title: str = "") -> Path:
    """A grid of one lead of several ECGs: one row per group (a cluster's exemplars, the outliers)."""
    plt = pyplot()
    index = STANDARD_LEADS.index(lead)
    half = ROW_MV / 2
    n_cols = max((len(t) for _, t in rows), default=1)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3.3 * n_cols, 1.25 * len(rows) + 0.7), squeeze=False)
    for r, (row_title, traces) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(traces):
                ax.axis("off")
                continue
            trace = traces[c]
            n = int(min(trace.signal.shape[1], seconds * TARGET_FS))
            v = np.clip(centred(trace.signal[index, :n]), -half, half)
            _grid(ax, 0, n / TARGET_FS, -half, half)
            ax.plot(np.arange(n) / TARGET_FS, v, color=TRACE, lw=0.7, zorder=3)
            ax.set_xlabel("")
            ax.tick_params(labelsize=6)
            ax.set_title(trace.title, fontsize=7)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"Lead {lead}, first {seconds:g} s (25 mm/s, 10 mm/mV; small squares 0.04 s × 0.1 mV)",
                 fontsize=10)
    return save_png(fig, out)


# ---------------------------------------------------------------------------------------------
# A query and its neighbours

#: The neighbour panels' two columns: limb leads, then chest leads, WINDOW_S seconds each.
LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")
CHEST = ("V1", "V2", "V3", "V4", "V5", "V6")
WINDOW_S = 5.0
GAP_S = 0.4
LABEL_KEYS = ("labels_abbr", "labels", "dx")


@dataclass
class Panel:
    """One ECG of a neighbours figure: its title lines and signal ((leads, samples) in mV at `fs`),
    or no signal (the panel says so)."""

    title: str
    subtitle: str = ""
    signal: np.ndarray | None = None
    fs: float | None = None
    lead_names: list[str] = field(default_factory=list)
    highlight: bool = False


def describe(metadata: dict) -> str:
    """age · sex · labels (groups), from whichever of those the store holds."""
    parts = []
    if metadata.get("age") is not None:
        parts.append(f"age {metadata['age']}")
    if metadata.get("sex"):
        parts.append(str(metadata["sex"]))
    labels = next((metadata[k] for k in LABEL_KEYS if metadata.get(k)), None)
    if labels:
        text = ", ".join(labels) if isinstance(labels, list) else str(labels)
        groups = metadata.get("label_groups")
        if groups:
            text += f" ({', '.join(groups) if isinstance(groups, list) else groups})"
        parts.append(text)
    return " · ".join(parts)


def _draw_panel(ax, panel: Panel) -> None:
    width = 2 * WINDOW_S + GAP_S
    height = len(LIMB) * ROW_MV
    _grid(ax, 0, width, -height - PAGE_MARGIN_MV, PAGE_MARGIN_MV, seconds_axis=False)
    for spine in ax.spines.values():
        spine.set_edgecolor("#c0392b" if panel.highlight else "#999999")
        spine.set_linewidth(2.5 if panel.highlight else 0.8)
    color = "#7a0000" if panel.highlight else "black"
    ax.set_title(panel.title + (f"\n{panel.subtitle}" if panel.subtitle else ""), fontsize=10, loc="left",
                 color=color, fontweight="bold" if panel.highlight else "normal")
    if panel.signal is None:
        ax.text(width / 2, -height / 2, "signal not available\n(the server kept no copy of it)",
                ha="center", va="center", fontsize=10, color="#555555")
        return
    rows = {canonical_lead_name(n): i for i, n in enumerate(panel.lead_names)}
    n_window = int(WINDOW_S * panel.fs)
    t = np.arange(min(n_window, panel.signal.shape[1])) / panel.fs
    for column, leads in enumerate((LIMB, CHEST)):
        x0 = column * (WINDOW_S + GAP_S)
        for row, lead in enumerate(leads):
            baseline = row_baseline(row)
            ax.text(x0 + 0.05, baseline + 0.9, lead, fontsize=9, fontweight="bold", va="bottom")
            if lead not in rows:
                ax.text(x0 + 0.6, baseline + 0.9, "(not recorded)", fontsize=8, color="#777777", va="bottom")
                continue
            trace = clipped(centred(np.asarray(panel.signal[rows[lead], :len(t)], dtype=np.float64)),
                            clip_bounds(row, len(LIMB)))
            ax.plot(x0 + t, baseline + trace, color="black", lw=0.7, zorder=2)


def plot_neighbours(panels: list[Panel], out: str | os.PathLike, *, columns: int = 3, dpi: int = 110) -> Path:
    """Write the panels (query first) as one PNG; returns its path."""
    plt = pyplot()
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7.6 * columns, 6.0 * rows), squeeze=False)
    for ax, panel in zip(axes.ravel(), panels):
        _draw_panel(ax, panel)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.text(0.01, 0.005, "25 mm/s · 10 mm/mV · major box 0.2 s × 0.5 mV · first 5 s of each lead",
             fontsize=9, color="#555555")
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    return save_png(fig, out, dpi=dpi, tight=False)
