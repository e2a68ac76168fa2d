"""Bootstrap confidence intervals over queries for the numbers an evaluation writes.

Method: the percentile bootstrap (Efron and Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 13). The model, the gallery and the relevance stay fixed; what varies is which queries were
drawn. Each *query set* of an evaluation is resampled with replacement to its own size, B times
(:data:`RESAMPLES`, default 1000); a metric row's statistic is recomputed on every resample, and
its interval is ``[ci_low, ci_high]``, the 2.5 and 97.5 percentiles of the B values (a 95 %
interval, :data:`LEVEL`; linear interpolation between order statistics, ``numpy.percentile``'s
default). Where those percentiles miss the row's own value (possible for a statistic that is
not a mean, such as a Spearman correlation of few pairs), the interval is widened to include it,
so ``ci_low <= value <= ci_high`` always holds.

Query sets are resampled independently of each other: the resamples of one set come from a
generator seeded with ``(seed, crc32(set name))`` (:data:`SEED`, default 0), so a set's
resamples do not depend on which other sets an evaluation has. A set is resampled once, with all
its per-query values, so every row on it (R@1, R@5 and R@10 of the captions; a plain and a
refined person ranking) sees the same resamples. Resample b of every set makes replicate b of a
row built from several sets (RSUM adds resample b of the image queries' three recalls to
resample b of the caption queries' three). Resampling the sets apart treats them as independent
samples; the captions of an image are not independent of it (nor the five captions of one image
of each other), so an interval over both directions, such as RSUM's, is an approximation that
can be somewhat narrow.

What a query set is, per protocol:

- image-text: the images (image-to-text queries) and the captions (text-to-image queries); a
  query's statistic is the rank of its first relevant item (R@K: the share below K); RSUM is
  recomputed as the sum of the six recalls on each resample;
- eccv: the same two sets (with ECCV Caption's relevance: its image and caption queries only),
  per-query AP@R, R-Precision and R@1; the ``avg`` row (mean of the six) is recomputed;
- image-retrieval: the query images (every image in leave-one-out; the query split otherwise),
  per-query hit at 1;
- sts: the sentence pairs of each reported task (a SentEval year pools its tasks), resampled
  within the task; each resample's Spearman correlation is computed from the resampled pairs'
  average ranks (ties included, as ``scipy.stats.spearmanr``), and ``sts12-16`` and ``avg``
  are recomputed from the per-task values of the same resample; a resample whose correlation
  is undefined (all drawn pairs tied on one side, possible only with very few pairs) is left out
  of the percentiles;
- person: the caption queries, per-query first-hit rank (R@K), AP and INP, for the plain and the
  refined ranking from the same resamples;
- zero-shot: the classes for the text-to-image AP@k (per-class precision at k) and the images
  for the image-to-text top-1.

The evaluation JSON records ``bootstrap``: ``{"resamples", "seed", "level", "method":
"percentile", "query_sets": {name: size}}``. The means of a resample come from counts: the
resample's index matrix becomes per-query counts (``numpy.bincount``) and one matrix product
with the per-query values gives every column's mean, in blocks of resamples that keep the
temporaries to a few tens of MB; where the queries take few distinct values (hits at K), the
counts of each distinct value are drawn directly (:meth:`Bootstrap.means`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "RESAMPLES",
    "SEED",
    "LEVEL",
    "METHOD",
    "Bootstrap",
    "percentile_interval",
    "row_key",
    "attach_intervals",
    "check_intervals",
]

#: Resamples per query set.
RESAMPLES = 1000
#: Seed of the resamples (with each query set's name).
SEED = 0
#: Coverage of the interval.
LEVEL = 0.95
METHOD = "percentile"
# Counts of one block of resamples: resamples x queries elements (float64: 32 MB).
_BLOCK_ELEMENTS = 1 << 22
# Queries with at most this many distinct value rows are resampled through their row counts.
_GROUPED_ROWS = 64

RowKey = tuple[str, str, str, str]


class Bootstrap:
    """The resamples of the query sets of one evaluation (see the module docstring).

    Every query set used is recorded with its size (:meth:`record`); a name always stands for one
    size.

    Example:
        >>> import numpy as np
        >>> boot = Bootstrap(resamples=200, seed=0)
        >>> means = boot.means("captions", {"R@1": 100.0 * np.ones(50)})
        >>> means["R@1"].shape, float(means["R@1"].min()), float(means["R@1"].max())
        ((200,), 100.0, 100.0)
        >>> boot.record()["query_sets"]
        {'captions': 50}
    """

    def __init__(self, resamples: int = RESAMPLES, seed: int = SEED) -> None:
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
            raise ValueError(f"bootstrap resamples: expected a positive integer, found {resamples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"bootstrap seed: expected an integer >= 0, found {seed!r}")
        self.resamples = resamples
        self.seed = seed
        self.query_sets: dict[str, int] = {}

    def _register(self, name: str, size: int) -> np.random.Generator:
        """Record set ``name`` and return the generator of its resamples."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"bootstrap: a query set needs a non-empty name, found {name!r}")
        if size < 1:
            raise ValueError(f"bootstrap: query set {name!r} is empty; every resample needs a query")
        if name in self.query_sets:
            # Rows combined into one statistic must see the same resamples: one call per set.
            raise ValueError(f"bootstrap: query set {name!r} was resampled already; give all of its per-query "
                             "values in one call")
        self.query_sets[name] = size
        return np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))])

    def _counts(self, rng: np.random.Generator, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first resample, counts)`` blocks: counts[b, q] = how often resample b drew query q."""
        step = max(1, _BLOCK_ELEMENTS // size)
        for start in range(0, self.resamples, step):
            height = min(step, self.resamples - start)
            drawn = rng.integers(0, size, size=(height, size))
            drawn += (np.arange(height) * size)[:, None]
            counts = np.bincount(drawn.ravel(), minlength=height * size).reshape(height, size)
            yield start, counts

    def means(self, name: str, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per column of per-query values (each (Q,), one value per query of set ``name``): its
        mean over each resample's queries, (B,) float64.

        Where the queries take few distinct value rows (hit or miss at K: R@K), the resample's
        counts of each distinct row are drawn at once from their multinomial distribution,
        ``Multinomial(Q, share of each row)``: the same distribution as counting the rows among Q
        queries drawn with replacement, without drawing Q indices per resample.
        """
        columns = list(values)
        if not columns:
            raise ValueError(f"bootstrap: query set {name!r}: no per-query values given")
        sizes = {c: int(np.asarray(values[c]).size) for c in columns}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"bootstrap: query set {name!r}: per-query arrays differ in length: {sizes}")
        matrix = np.stack([np.asarray(values[c], dtype=np.float64).reshape(-1) for c in columns], axis=1)
        if not np.isfinite(matrix).all():
            raise ValueError(f"bootstrap: query set {name!r}: per-query values must be finite")
        size = matrix.shape[0]
        rng = self._register(name, size)
        rows, inverse = np.unique(matrix, axis=0, return_inverse=True)
        if rows.shape[0] <= _GROUPED_ROWS:
            shares = np.bincount(inverse.reshape(-1), minlength=rows.shape[0]) / size
            out = (rng.multinomial(size, shares, size=self.resamples) @ rows) / size
        else:
            out = np.empty((self.resamples, len(columns)))
            for start, counts in self._counts(rng, size):
                out[start : start + counts.shape[0]] = (counts @ matrix) / size
        return {c: out[:, i].copy() for i, c in enumerate(columns)}

    def spearman(self, name: str, x: Any, y: Any) -> np.ndarray:
        """Spearman correlation x 100 of the pairs ``(x[i], y[i])`` of set ``name`` on each resample:
        (B,); NaN where a resample's x or y are all tied (the correlation is undefined)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"bootstrap: query set {name!r}: {x.size} x values but {y.size} y values")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"bootstrap: query set {name!r}: values must be finite")
        rng = self._register(name, x.size)
        out = np.empty(self.resamples)
        for start, counts in self._counts(rng, x.size):
            out[start : start + counts.shape[0]] = 100.0 * _weighted_spearman(x, y, counts)
        return out

    def record(self) -> dict[str, Any]:
        """The JSON's ``bootstrap`` record."""
        return {"resamples": self.resamples, "seed": self.seed, "level": LEVEL, "method": METHOD,
                "query_sets": dict(self.query_sets)}


def _average_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(b, n): the average rank (1-based, ties sharing their mean rank) that value i takes in each
    resample, where resample b holds ``counts[b, i]`` copies of value i."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(new) - 1
    totals = np.add.reduceat(counts[:, order], np.flatnonzero(new), axis=1).astype(np.float64)
    group_rank = np.cumsum(totals, axis=1) - totals + (totals + 1.0) / 2.0
    ranks = np.empty(counts.shape, dtype=np.float64)
    ranks[:, order] = group_rank[:, group]
    return ranks


def _weighted_spearman(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson correlation of the average ranks of each resample's pairs (its Spearman rho)."""
    weights = counts.astype(np.float64)
    # The average ranks of n values always average (n + 1) / 2.
    centre = (x.size + 1.0) / 2.0
    dx = _average_ranks(x, counts) - centre
    dy = _average_ranks(y, counts) - centre
    covariance = (weights * dx * dy).sum(axis=1)
    spread = np.sqrt((weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = covariance / spread
    return np.where(spread > 0, rho, np.nan)


def percentile_interval(replicates: Any, value: float, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the finite
    replicates, widened to include ``value`` (module docstring).

    Example:
        >>> percentile_interval([1.0, 2.0, 3.0, 4.0, 5.0], 3.0, level=0.5)
        (2.0, 4.0)
    """
    reps = np.asarray(replicates, dtype=np.float64).reshape(-1)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        raise ValueError("bootstrap: no resample gave a finite value; the interval is undefined")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(reps, [tail, 100.0 - tail])
    return min(float(low), float(value)), max(float(high), float(value))


def row_key(row: Mapping[str, Any]) -> RowKey:
    """A metric row's identity: ``(dataset, direction, metric, variant)``."""
    return (row["dataset"], row["direction"], row["metric"], row["variant"])


def attach_intervals(rows: Sequence[Mapping[str, Any]], replicates: Mapping[RowKey, Any]) -> list[dict[str, Any]]:
    """The rows with ``ci_low`` / ``ci_high`` from each row's replicates (keyed by :func:`row_key`).

    Raises:
        ValueError: a row without replicates, or replicates for no row (both named).
    """
    keys = [row_key(r) for r in rows]
    missing = [k for k in keys if k not in replicates]
    unused = sorted(set(replicates) - set(keys))
    if missing or unused:
        raise ValueError(f"bootstrap: expected replicates for every metric row (dataset, direction, metric, "
                         f"variant) and no other; rows without: {missing}, replicates without a row: {unused}")
    out = []
    for row, key in zip(rows, keys):
        low, high = percentile_interval(replicates[key], row["value"])
        out.append({**row, "ci_low": low, "ci_high": high})
    return out


def check_intervals(rows: Sequence[Mapping[str, Any]], where: str) -> None:
    """Every row carries finite ``ci_low <= value <= ci_high`` (the message names the row)."""
    for index, row in enumerate(rows):
        low, high = row.get("ci_low"), row.get("ci_high")
        ok = all(isinstance(v, float) and math.isfinite(v) for v in (low, high))
        if not ok or not low <= row["value"] <= high:
            raise ValueError(f"{where}: metrics[{index}] {row_key(row)}: expected finite ci_low <= value <= ci_high, "
                             f"found ci_low {low!r}, value {row['value']!r}, ci_high {high!r}")
