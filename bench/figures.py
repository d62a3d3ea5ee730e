"""Figures: matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), written
as PNGs without version metadata through the atomic writer, so the same numbers give the same bytes."""

from __future__ import annotations

import io
from pathlib import Path

from .atomic import ensure_folder, write_atomic


def new_figure(columns: int, size: tuple[float, float], **grid):
    """(figure, [axes...]): one row of `columns` axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, columns, gridspec_kw=grid or None, squeeze=False)[0]
    return fig, list(axes)


def write_png(fig, path: Path) -> Path:
    """Write `fig` to `path` atomically."""
    ensure_folder(path.parent, "figures folder", "pass a writable --results-dir")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    write_atomic(path, lambda handle: handle.write(buffer.getvalue()),
                 hint="pass a writable --results-dir")
    return path
