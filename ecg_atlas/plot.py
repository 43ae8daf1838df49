"""A query ECG and its nearest neighbours on ECG paper, side by side.

Each ECG is drawn at the clinical scale (25 mm/s, 10 mm/mV: one major box is 0.2 s by 0.5 mV)
as two columns of five seconds: the limb leads (I, II, III, aVR, aVL, aVF) and the chest leads
(V1-V6). The title of each panel gives the id, the similarity score and the key metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.leads import canonical_lead_name

LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")
CHEST = ("V1", "V2", "V3", "V4", "V5", "V6")
WINDOW_S = 5.0
GAP_S = 0.4
ROW_MV = 3.0
PAPER = "#fff4f2"
MAJOR = "#f2a7a0"
MINOR = "#fbd9d5"
LABEL_KEYS = ("labels_abbr", "labels", "dx")


@dataclass
class Panel:
    title: str
    subtitle: str = ""
    signal: np.ndarray | None = None  # (leads, samples) in mV
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


def _paper(ax, width_s: float, height_mv: float) -> None:
    ax.set_facecolor(PAPER)
    for x in np.arange(0, width_s + 1e-9, 0.04):
        major = abs(x / 0.2 - round(x / 0.2)) < 1e-6
        ax.axvline(x, color=MAJOR if major else MINOR, lw=0.6 if major else 0.3, zorder=0)
    for y in np.arange(-height_mv, 1e-9, 0.1):
        major = abs(y / 0.5 - round(y / 0.5)) < 1e-6
        ax.axhline(y, color=MAJOR if major else MINOR, lw=0.6 if major else 0.3, zorder=0)


def _draw(ax, panel: Panel) -> None:
    width = 2 * WINDOW_S + GAP_S
    height = len(LIMB) * ROW_MV
    _paper(ax, width, height)
    ax.set_xlim(0, width)
    ax.set_ylim(-height, 0)
    ax.set_aspect(0.4)  # 1 mV = 10 mm, 1 s = 25 mm
    ax.set_xticks([])
    ax.set_yticks([])
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
            baseline = -(row + 0.5) * ROW_MV
            ax.text(x0 + 0.05, baseline + 0.9, lead, fontsize=9, fontweight="bold", va="bottom")
            if lead not in rows:
                ax.text(x0 + 0.6, baseline + 0.9, "(not recorded)", fontsize=8, color="#777777", va="bottom")
                continue
            trace = np.asarray(panel.signal[rows[lead], :len(t)], dtype=np.float64)
            finite = np.isfinite(trace)
            if finite.any():
                trace = trace - np.median(trace[finite])  # display baseline only
            # clipped to its own row, as carts print a saturated lead: never across its neighbours
            trace = np.clip(trace, -ROW_MV * 0.48, ROW_MV * 0.48)
            ax.plot(x0 + t, baseline + trace, color="black", lw=0.7, zorder=2)


def plot_neighbours(panels: list[Panel], out: str | Path, *, columns: int = 3, dpi: int = 110) -> Path:
    """Write the panels (query first) as one PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7.6 * columns, 6.0 * rows), squeeze=False)
    for ax, panel in zip(axes.ravel(), panels):
        _draw(ax, panel)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.text(0.01, 0.005, "25 mm/s · 10 mm/mV · major box 0.2 s × 0.5 mV · first 5 s of each lead",
             fontsize=9, color="#555555")
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="white")
    plt.close(fig)
    return out
