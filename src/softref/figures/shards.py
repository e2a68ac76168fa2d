"""A feature shard at a glance (``softref inspect SHARD --plot OUT.png``): its row norms and the cosine
similarities of a sample of its rows.

A user checking an extraction looks for norms that are all alike (a normalised teacher: all 1) or
spread without outliers, and for a heat map that is neither uniform (every row the same: a broken
preprocessing) nor pure noise. Rows are read evenly spaced over the shard, so the picture does not
depend on which rows come first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from softref.figures.style import figure, save

__all__ = ["HEATMAP_ROWS", "HEIGHT", "NORM_ROWS", "plot_shard"]

#: Height (inches) of the figure.
HEIGHT = 3.2

#: Rows read for the norm histogram and for the heat map, evenly spaced over the shard.
NORM_ROWS = 2048
HEATMAP_ROWS = 96


def _sample(features, count: int) -> tuple[np.ndarray, np.ndarray]:
    from softref.features.shards import read_rows

    n = features.shape[0]
    rows = np.unique(np.linspace(0, n - 1, min(n, count)).astype(np.int64))
    return rows, read_rows(features, rows).astype(np.float64)


def plot_shard(path: Path, out: Path, *, dpi: int = 150) -> Path:
    """Histogram of row L2 norms and cosine heat map of :data:`HEATMAP_ROWS` rows of the shard ``path``."""
    import h5py

    from softref.features.shards import read_shard_attrs

    attrs = read_shard_attrs(path)
    with h5py.File(path, "r") as f:
        if "features" not in f or f["features"].ndim != 2 or f["features"].shape[0] == 0:
            raise ValueError(f"{path}: expected a non-empty 2-d 'features' dataset")
        n, dim = f["features"].shape
        _, sample = _sample(f["features"], NORM_ROWS)
        heat_rows, heat = _sample(f["features"], HEATMAP_ROWS)
    finite = np.isfinite(sample).all(axis=1)
    norms = np.linalg.norm(sample[finite], axis=1)
    unit = heat / np.linalg.norm(heat, axis=1, keepdims=True).clip(min=1e-12)
    with figure(HEIGHT, 1, 2, gridspec_kw={"width_ratios": [1, 1.15]}) as (fig, axes):
        hist, cos = axes[0]
        hist.hist(norms, bins=40, color="0.35")
        hist.set(title=f"row L2 norms ({len(norms)} of {n} rows; {int((~finite).sum())} non-finite)",
                 xlabel="norm", ylabel="rows")
        image = cos.imshow(np.nan_to_num(unit @ unit.T), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
        cos.set(title=f"cosine of {len(heat_rows)} evenly spaced rows", xlabel="row", ylabel="row")
        fig.colorbar(image, ax=cos, shrink=0.85)
        fig.suptitle(f"{Path(path).name}: teacher {attrs.get('teacher')}, {n} x {dim} {attrs.get('dtype')}, "
                     f"normalized={attrs.get('normalized')}", fontsize=8)
        return save(fig, out, dpi)
