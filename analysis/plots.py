"""Figures for people: the cohort map, ECGs drawn on ECG paper, and saliency over a lead.

Conventions a clinician expects: ECGs on pink ECG paper at 25 mm/s and 10 mm/mV (small squares
0.04 s × 0.1 mV, large squares 0.2 s × 0.5 mV), leads in the standard 3 × 4 layout with a lead II
rhythm strip, amplitudes in mV as recorded (each lead's median subtracted, no filtering).
Saliency is drawn as ECG-FM's demo does (ecgfm_spec.md §11): the 156 per-token values of each 5-s
window resampled to the samples with a cubic spline, min–max normalised to [0, 1] over the
record, and each line segment coloured from blue #0047AB (0) to red #DC143C (1).

Every function writes a PNG (atomically: `index.atomic.write_atomic`) and returns its path;
matplotlib runs headless (Agg).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

from ecg_atlas.embedder.recording import SEGMENT_SAMPLES, STANDARD_LEADS, TARGET_FS  # noqa: E402
from ecg_atlas.index.atomic import write_atomic  # noqa: E402

SALIENCY_CMAP = LinearSegmentedColormap.from_list("ecgfm_saliency", ["#0047AB", "#DC143C"])
NOISE_GREY = "#B0B0B0"
UNKNOWN = "unknown"
#: The printed 12-lead layout: rows of the page, each four leads side by side.
PAGE_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
_PAPER_MINOR = "#F6C9C9"
_PAPER_MAJOR = "#E88E8E"
_TRACE = "#111111"
#: 25 mm/s and 10 mm/mV: one mV is drawn as tall as 0.4 s is wide.
_ASPECT = 0.4
_ROW_MV = 3.0


@dataclass
class ECGTrace:
    """An ECG ready to draw: (12, N) mV at 500 Hz in ECG-FM lead order (NaN rows = lead absent)."""

    signal: np.ndarray
    title: str = ""
    saliency: np.ndarray | None = None  # (N,) in [0, 1], aligned with the samples

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / TARGET_FS


def saliency_to_samples(saliency: np.ndarray, segment_samples: int = SEGMENT_SAMPLES) -> np.ndarray:
    """(n_segments, T) token saliency → (n_segments · segment_samples,) in [0, 1] (spec §11)."""
    from scipy.ndimage import map_coordinates

    saliency = np.atleast_2d(np.asarray(saliency, dtype=np.float64))
    tokens = saliency.shape[1]
    grid = np.linspace(0, tokens - 1, segment_samples)
    per_sample = np.concatenate([map_coordinates(row, [grid]) for row in saliency])
    lo, hi = per_sample.min(), per_sample.max()
    return np.zeros_like(per_sample) if hi == lo else (per_sample - lo) / (hi - lo)


def _paper(ax, t0: float, t1: float, y0: float, y1: float) -> None:
    """Pink ECG grid over [t0, t1] s × [y0, y1] mV, at the paper's aspect ratio."""
    for step, colour, width in ((0.04, _PAPER_MINOR, 0.4), (0.2, _PAPER_MAJOR, 0.8)):
        for x in np.arange(np.ceil(t0 / step) * step, t1 + 1e-9, step):
            ax.axvline(x, color=colour, lw=width, zorder=0)
    for step, colour, width in ((0.1, _PAPER_MINOR, 0.4), (0.5, _PAPER_MAJOR, 0.8)):
        for y in np.arange(np.ceil(y0 / step) * step, y1 + 1e-9, step):
            ax.axhline(y, color=colour, lw=width, zorder=0)
    ax.set_xlim(t0, t1)
    ax.set_ylim(y0, y1)
    ax.set_aspect(_ASPECT)
    ax.set_xticks(np.arange(np.ceil(t0), t1 + 1e-9, 1.0))
    ax.set_xlabel("time (s) — 25 mm/s, 10 mm/mV; small squares 0.04 s × 0.1 mV")
    ax.set_yticks([])


def _centred(lead: np.ndarray) -> np.ndarray:
    finite = lead[np.isfinite(lead)]
    return lead - (np.median(finite) if len(finite) else 0.0)


def _coloured_line(ax, t: np.ndarray, v: np.ndarray, colour_values: np.ndarray, width: float = 1.3):
    points = np.column_stack([t, v]).reshape(-1, 1, 2)
    segments = np.concatenate([points[:-1], points[1:]], axis=1)
    lc = LineCollection(segments, cmap=SALIENCY_CMAP, norm=plt.Normalize(0, 1), linewidths=width, zorder=3)
    lc.set_array((colour_values[:-1] + colour_values[1:]) / 2)
    ax.add_collection(lc)
    return lc


def plot_ecg(trace: ECGTrace, out: str | os.PathLike, *, rhythm_lead: str = "II", max_seconds: float = 10.0) -> Path:
    """A printed-style 12-lead page (3 × 4 leads + a rhythm strip); the strip coloured by saliency if given."""
    n_show = int(min(trace.signal.shape[1], max_seconds * TARGET_FS))
    seconds = n_show / TARGET_FS
    quarter = seconds / 4
    index = {lead: i for i, lead in enumerate(STANDARD_LEADS)}
    n_rows = len(PAGE_LAYOUT) + 1
    height = n_rows * _ROW_MV
    fig_w = max(8.0, seconds * 1.25 + 1.5)
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * height * _ASPECT / seconds * 0.95 + 1.4))
    _paper(ax, 0, seconds, -height + _ROW_MV / 2, _ROW_MV / 2)
    for r, leads in enumerate(PAGE_LAYOUT):
        offset = -r * _ROW_MV
        for c, lead in enumerate(leads):
            a, b = int(c * quarter * TARGET_FS), int((c + 1) * quarter * TARGET_FS)
            v = _centred(trace.signal[index[lead], :n_show])[a:b]
            t = np.arange(a, b) / TARGET_FS
            ax.plot(t, np.clip(v, -_ROW_MV / 2, _ROW_MV / 2) + offset, color=_TRACE, lw=0.8, zorder=3)
            ax.text(c * quarter + 0.04, offset + 0.9, lead, fontsize=9, weight="bold", zorder=4)
            if c:
                ax.plot([c * quarter] * 2, [offset - 0.4, offset + 0.4], color=_TRACE, lw=0.8, zorder=3)
    offset = -len(PAGE_LAYOUT) * _ROW_MV
    v = np.clip(_centred(trace.signal[index[rhythm_lead], :n_show]), -_ROW_MV / 2, _ROW_MV / 2) + offset
    t = np.arange(n_show) / TARGET_FS
    if trace.saliency is not None:
        lc = _coloured_line(ax, t, v, np.asarray(trace.saliency[:n_show], dtype=float))
        cbar = fig.colorbar(lc, ax=ax, orientation="horizontal", fraction=0.04, pad=0.12, aspect=50)
        cbar.set_label(f"ECG-FM attention saliency on lead {rhythm_lead} (0 = lowest, 1 = highest in this ECG)")
        label = f"{rhythm_lead} (saliency)"
    else:
        ax.plot(t, v, color=_TRACE, lw=0.8, zorder=3)
        label = f"{rhythm_lead} (rhythm)"
    ax.text(0.04, offset + 0.9, label, fontsize=9, weight="bold", zorder=4)
    _calibration_pulse(ax, seconds)
    ax.set_title(trace.title or "12-lead ECG", fontsize=11)
    return _save(fig, out)


def _calibration_pulse(ax, seconds: float) -> None:
    """The 1 mV, 0.2 s calibration box every printed ECG starts with, here at the top right."""
    x0 = seconds - 0.3
    ax.plot([x0, x0, x0 + 0.2, x0 + 0.2], [0.4, 1.4, 1.4, 0.4], color=_TRACE, lw=0.8, zorder=3)
    ax.text(x0 - 0.02, 1.45, "1 mV", fontsize=6, ha="right", zorder=4)


def plot_saliency_lead(signal_mv: np.ndarray, saliency: np.ndarray, out: str | os.PathLike, *, lead: str = "II",
                       title: str = "") -> Path:
    """One lead on ECG paper, every line segment coloured by saliency (blue low → red high)."""
    v = _centred(np.asarray(signal_mv, dtype=float))
    t = np.arange(len(v)) / TARGET_FS
    lo = min(-1.0, np.floor(np.nanmin(v) * 2) / 2)
    hi = max(1.0, np.ceil(np.nanmax(v) * 2) / 2)
    seconds = len(v) / TARGET_FS
    fig, ax = plt.subplots(figsize=(max(8.0, seconds * 1.25 + 1.5), max(2.6, (hi - lo) * 0.55 + 1.6)))
    _paper(ax, 0, seconds, lo, hi)
    lc = _coloured_line(ax, t, v, np.asarray(saliency, dtype=float))
    ax.set_yticks(np.arange(lo, hi + 1e-9, 0.5))
    ax.set_ylabel(f"lead {lead} (mV)")
    cbar = fig.colorbar(lc, ax=ax, fraction=0.03, pad=0.01)
    cbar.set_label("saliency (normalised)")
    ax.set_title(title or f"ECG-FM attention saliency over lead {lead}", fontsize=11)
    return _save(fig, out)


def plot_map(xy: np.ndarray, values: Sequence, out: str | os.PathLike, *, kind: str = "cluster", title: str = "",
             colour_label: str = "", max_categories: int = 12) -> Path:
    """The 2-D cohort map, coloured by cluster (noise grey), a category, or a number (colour bar).

    kind: "cluster" (ints, −1 = noise), "category" (text; the most frequent `max_categories`
    get colours, the rest and unknowns are grey), or "numeric" (unknowns grey).
    """
    xy = np.asarray(xy, dtype=float)
    n = len(xy)
    size = float(np.clip(25000 / max(n, 1), 0.5, 30))
    fig, ax = plt.subplots(figsize=(9, 7.2))
    if kind == "numeric":
        vals = np.array([np.nan if v is None else float(v) for v in values])
        unknown = np.isnan(vals)
        if unknown.any():
            ax.scatter(*xy[unknown].T, s=size, c=NOISE_GREY, alpha=0.5, lw=0, label=f"unknown (n={int(unknown.sum())})",
                       rasterized=True)
            ax.legend(loc="best", fontsize=8, markerscale=max(1, 6 / size ** 0.5))
        sc = ax.scatter(*xy[~unknown].T, s=size, c=vals[~unknown], cmap="viridis", lw=0, rasterized=True)
        fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02).set_label(colour_label or "value")
    else:
        if kind == "cluster":
            labels = np.array([int(v) for v in values])
            groups = [(f"noise (n={int((labels < 0).sum())})", labels < 0, NOISE_GREY)]
            ids = sorted(set(labels[labels >= 0].tolist()))
            palette = _palette(len(ids))
            for c, colour in zip(ids, palette):
                groups.append((f"cluster {c} (n={int((labels == c).sum())})", labels == c, colour))
        elif kind == "category":
            text = np.array([UNKNOWN if v is None or v == "" else str(v) for v in values], dtype=object)
            names, counts = np.unique(text[text != UNKNOWN].astype(str), return_counts=True)
            top = [str(x) for x in names[np.lexsort((names, -counts))][:max_categories]]
            rest = ~np.isin(text, top)
            groups = [(f"other / {UNKNOWN} (n={int(rest.sum())})", rest, NOISE_GREY)]
            for name, colour in zip(top, _palette(len(top))):
                groups.append((f"{name} (n={int((text == name).sum())})", text == name, colour))
        else:
            raise ValueError(f"kind must be cluster, category or numeric, got {kind!r}")
        for label, mask, colour in groups:
            if mask.any():
                grey = colour == NOISE_GREY
                ax.scatter(*xy[mask].T, s=size * (0.6 if grey else 1), c=[colour], alpha=0.45 if grey else 0.85,
                           lw=0, label=label, rasterized=True, zorder=1 if grey else 2)
        if kind == "cluster":
            for c in ids:
                cx, cy = np.median(xy[labels == c], axis=0)
                ax.text(cx, cy, str(c), fontsize=10, weight="bold", ha="center", va="center", zorder=5,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title=colour_label or None,
                  markerscale=max(1.0, 6 / size ** 0.5), frameon=False)
    ax.set_xlabel("UMAP 1 (no units: only neighbourhoods are meaningful)")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title or f"Cohort map of {n} ECGs", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, out)


def plot_ecg_grid(rows: Sequence[tuple[str, Sequence[ECGTrace]]], out: str | os.PathLike, *, lead: str = "II",
                  seconds: float = 5.0, title: str = "") -> Path:
    """A grid of one lead of several ECGs: one row per group (a cluster's exemplars, the outliers)."""
    index = STANDARD_LEADS.index(lead)
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
            v = np.clip(_centred(trace.signal[index, :n]), -1.5, 1.5)
            _paper(ax, 0, n / TARGET_FS, -1.5, 1.5)
            ax.plot(np.arange(n) / TARGET_FS, v, color=_TRACE, lw=0.7, zorder=3)
            ax.set_xlabel("")
            ax.tick_params(labelsize=6)
            ax.set_title(trace.title, fontsize=7)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"Lead {lead}, first {seconds:g} s (25 mm/s, 10 mm/mV; small squares 0.04 s × 0.1 mV)",
                 fontsize=10)
    return _save(fig, out)


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The format is named: the temporary file's name does not end in ".png".
        write_atomic(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=110,
                                                  bbox_inches="tight", facecolor="white"))
    finally:
        plt.close(fig)
    return out


def trace_from_recording(recording, title: str = "", saliency: np.ndarray | None = None) -> ECGTrace:
    """A Recording's standard leads in ECG-FM order, resampled to 500 Hz as preprocessing does, in
    the recording's own units (mV for WFDB physical signals); absent leads are NaN (not drawn)."""
    from ecg_atlas.embedder.leads import canonical_lead_name
    from ecg_atlas.embedder.preprocessing import resample_to_target

    resampled = resample_to_target(np.nan_to_num(recording.signal, nan=0.0), recording.fs)
    signal = np.full((len(STANDARD_LEADS), resampled.shape[1]), np.nan)
    for row, name in enumerate(recording.lead_names):
        lead = canonical_lead_name(name)
        if lead is not None:
            signal[STANDARD_LEADS.index(lead)] = resampled[row]
    return ECGTrace(signal, title, saliency)
