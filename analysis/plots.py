"""Analysis figures that are not ECG paper: the cohort map. (ECGs on ECG paper — pages,
saliency, exemplar grids, neighbours — are drawn by ``ecg_paper``.)

Every function writes a PNG (atomically, ``figures.save_png``) and returns its path; matplotlib
runs headless (Agg).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .figures import pyplot, save_png

NOISE_GREY = "#B0B0B0"
UNKNOWN = "unknown"


def plot_map(xy: np.ndarray, values: Sequence, out: str | os.PathLike, *, kind: str = "cluster", title: str = "",
             colour_label: str = "", max_categories: int = 12) -> Path:
    """The 2-D cohort map, coloured by cluster (noise grey), a category, or a number (colour bar).

    kind: "cluster" (ints, −1 = noise), "category" (text; the most frequent `max_categories`
    get colours, the rest and unknowns are grey), or "numeric" (unknowns grey).
    """
    xy = np.asarray(xy, dtype=float)
    n = len(xy)
    size = float(np.clip(25000 / max(n, 1), 0.5, 30))
    plt = pyplot()
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
    return save_png(fig, out)


def _palette(n: int) -> list:
    cmap = pyplot().get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]
