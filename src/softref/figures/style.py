"""One look for every figure, and one way to write it: Agg, fixed width, PNG bytes without dates.

Every figure is :data:`WIDTH` inches wide (a two-column page's full width) with a height fixed by its
content, laid out with matplotlib's constrained layout and saved without ``bbox_inches="tight"``,
so its pixel size is exactly ``(WIDTH * dpi, height * dpi)`` and a test can check it. The PNG
carries no ``Software`` text (matplotlib's version) and no creation time, and the font and hash
salt are fixed, so the same data give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # never a display: the DAG runs on servers and cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softref.files import atomic_path  # noqa: E402

__all__ = ["COLOURS", "HIT", "MISS", "RELEVANT", "WIDTH", "colour", "figure", "image_panel", "pixel_size", "save"]

#: Width of every figure, inches.
WIDTH = 7.0
#: Qualitative colours, one per method or identity (tab10, then tab20's light shades).
COLOURS: tuple[str, ...] = tuple(matplotlib.colormaps["tab10"].colors) + tuple(matplotlib.colormaps["tab20"].colors[1::2])
#: Marks of retrieved items: the labelled match, relevant but not labelled, not relevant.
HIT, RELEVANT, MISS = "#1a9850", "#fdae61", "#d73027"

_RC = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs everywhere
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "legend.fontsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "softref",
    "path.simplify": True,
}


def colour(i: int) -> str:
    """The ``i``-th qualitative colour (cycling past :data:`COLOURS`)."""
    return COLOURS[i % len(COLOURS)]


def pixel_size(height: float, dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure ``height`` inches tall saved at ``dpi`` (truncated, as
    matplotlib's Agg canvas sizes its buffer)."""
    return int(WIDTH * dpi), int(height * dpi)


@contextmanager
def figure(height: float, nrows: int = 1, ncols: int = 1, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """A (figure, axes) pair :data:`WIDTH` x ``height`` inches in the house style, closed on exit;
    ``nrows=0`` gives no axes (None), for figures built from subfigures or grids."""
    with plt.rc_context(_RC):
        if nrows == 0:
            fig, axes = plt.figure(figsize=(WIDTH, height), layout="constrained"), None
        else:
            fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, height), layout="constrained", squeeze=False,
                                     **kwargs)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def save(fig: Any, out: Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG at ``dpi`` atomically (no Software text, no date); returns ``out``."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")  # PDF / SVG backends would read it; PNG has no date
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    return Path(out)


def image_panel(ax: Any, pixels: np.ndarray, *, border: str | None = None, title: str = "",
                lines: Sequence[str] = ()) -> None:
    """Show an image on ``ax`` without ticks, framed in ``border`` (a colour) when given."""
    ax.imshow(pixels, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(2.5)
    if title:
        ax.set_title(title, fontsize=6.5, pad=2)
    if lines:
        ax.set_xlabel("\n".join(lines), fontsize=6, labelpad=2)
