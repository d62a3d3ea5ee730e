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


def png_bytes(fig) -> bytes:
    """The PNG of `fig`, without the version metadata that would make equal figures differ."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def write_png(fig, path: Path) -> Path:
    """Write `fig` to `path` atomically."""
    ensure_folder(path.parent, "figures folder", "pass a writable --results-dir")
    data = png_bytes(fig)
    write_atomic(path, lambda handle: handle.write(data), hint="pass a writable --results-dir")
    return path


def percent_axis(ax, ylabel: str) -> None:
    """A fixed 0-100 % y axis, so figures of different runs compare by eye."""
    from matplotlib.ticker import PercentFormatter

    ax.set_ylim(0, 100)
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_ylabel(ylabel)
