"""Shared matplotlib set-up: headless backend, readable defaults, atomic PNG writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from upstream.checkpoint import disk_full_error

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 10, "axes.grid": False})


def save_figure(figure: "plt.Figure", path: str | Path) -> Path:
    """Write ``figure`` as PNG (via a temporary name, then rename) and close it. A failed write
    leaves no temporary file; a full disk raises ``OSError(ENOSPC)`` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp.png")
    try:
        figure.savefig(temp, format="png")  # figsize * dpi pixels: figures use layout="constrained"
        temp.replace(path)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        full = disk_full_error(error, path)
        if full is not None:
            raise full from error
        raise
    finally:
        plt.close(figure)
    return path
