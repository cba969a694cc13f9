"""Shared matplotlib set-up: headless backend, readable defaults, atomic PNG writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from utility.atomic_write import atomic_write  # noqa: E402

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10, "axes.grid": False})


def save_figure(figure: "plt.Figure", path: str | Path) -> Path:
    """Write ``figure`` as PNG (atomically) and close it."""
    path = Path(path)
    try:
        with atomic_write(path) as stream:
            figure.savefig(stream, format="png")  # figsize * dpi pixels: figures use layout="constrained"
    finally:
        plt.close(figure)
    return path
