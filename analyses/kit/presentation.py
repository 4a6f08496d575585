"""Small presentation helpers the stages share: a placeholder figure and number formatting for the
sentences the report generates."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt


def empty_figure(title: str, message: str) -> plt.Figure:
    """A titled figure that says why there is nothing to draw (e.g. too few snapshots for a CCA)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def fmt_number(x: float | None) -> str:
    """Three significant digits, or ``n/a`` for a missing or non-finite value."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"
