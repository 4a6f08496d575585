"""Figure styling and output: one look for every figure, PNG/PDF files and inline data URIs."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from PIL import Image  # noqa: E402


def apply_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold",
                         "pdf.fonttype": 42})


def figure_png_data_uri(fig: plt.Figure) -> str:
    """The figure as an inline PNG for the report, reduced to an adaptive 256-colour palette without
    dithering (a plot's flat colours and anti-aliased edges survive it). The PNG files of ``pipeline
    figures`` keep full colour."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    small = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        small, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(small.getvalue()).decode("ascii")


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.{ext}.tmp"
        try:
            fig.savefig(tmp, format=ext)
            os.replace(tmp, path)  # never a half-written figure under its real name
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths
