"""Figures as files: matplotlib run headless (Agg), each figure written atomically as a PNG.

Shared by the ECG-paper renderer (``ecg_paper``) and the other analysis plots (``plots``)."""

from __future__ import annotations

import os
from pathlib import Path

from ecg_atlas.atomic import write_atomic


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: str | os.PathLike, *, dpi: int = 110, tight: bool = True) -> Path:
    """Write `fig` to `out` (atomically: `ecg_atlas.atomic.write_atomic`) and close it; returns the
    path. tight: crop to the drawn area (``bbox_inches="tight"``); False keeps the figure's size."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The format is named: the temporary file's name does not end in ".png".
        write_atomic(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=dpi,
                                                  bbox_inches="tight" if tight else None, facecolor="white"))
    finally:
        pyplot().close(fig)
    return out
