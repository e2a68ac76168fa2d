"""Bootstrap intervals over queries: known answers, determinism, Spearman on resamples, and the
table reader's checks of the interval keys."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from softref.evaluate import intervals
from softref.evaluate.intervals import Bootstrap, attach_intervals, check_intervals, percentile_interval
from softref.evaluate.protocols import metric_row
from softref.tables.entries import MetricRow, load_entry


def half_width(replicates: np.ndarray, value: float) -> float:
    low, high = percentile_interval(replicates, value)
    return (high - low) / 2


# Per-query values with many distinct rows go through index matrices, hit-or-miss values through
# their row counts: each known answer is checked on both paths.
PATHS = ["grouped", "indices"]


def _values(hits: np.ndarray, path: str) -> dict[str, np.ndarray]:
    columns = {"hit": 100.0 * hits}
    if path == "indices":  # a column of distinct values forces the index-matrix path
        columns["distinct"] = np.arange(hits.size, dtype=np.float64)
    return columns


@pytest.mark.parametrize("path", PATHS)
def test_every_query_a_hit_gives_a_point_interval(path: str) -> None:
    replicates = Bootstrap(resamples=500).means("captions", _values(np.ones(2000, dtype=bool), path))["hit"]
    assert percentile_interval(replicates, 100.0) == (100.0, 100.0)
    row = attach_intervals([metric_row("d", "t2i", "R@1", 100.0)], {("d", "t2i", "R@1", ""): replicates})[0]
    assert (row["ci_low"], row["ci_high"]) == (100.0, 100.0)


@pytest.mark.parametrize("path", PATHS)
def test_half_hit_rate_matches_the_normal_approximation(path: str) -> None:
    n = 10_000
    hits = np.zeros(n, dtype=bool)
    hits[np.random.default_rng(0).permutation(n)[: n // 2]] = True
    replicates = Bootstrap().means("captions", _values(hits, path))["hit"]
    expected = 1.96 * np.sqrt(0.25 / n) * 100  # 0.98 points
    assert half_width(replicates, 50.0) == pytest.approx(expected, rel=0.10)
    assert replicates.mean() == pytest.approx(50.0, abs=0.1)


def test_the_two_paths_draw_the_same_distribution() -> None:
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, 30, size=3000)
    grouped = Bootstrap(resamples=4000).means("q", {"R@5": 100.0 * (ranks < 5)})["R@5"]
    indexed = Bootstrap(resamples=4000).means("q", {"R@5": 100.0 * (ranks < 5), "r": ranks})["R@5"]
    assert grouped.mean() == pytest.approx(indexed.mean(), abs=0.05)
    assert grouped.std() == pytest.approx(indexed.std(), rel=0.06)
    assert grouped.std() == pytest.approx(np.sqrt(ranks.__lt__(5).mean() * (ranks >= 5).mean() / 3000) * 100, rel=0.06)


def test_same_seed_same_resamples_and_sets_are_independent() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(400), rng.random(900)
    first = Bootstrap(resamples=100, seed=0)
    one = first.means("images", {"x": a})["x"]
    two = first.means("captions", {"y": b})["y"]
    # Another order of the sets, another evaluation: a set's resamples depend on (seed, its name) only.
    second = Bootstrap(resamples=100, seed=0)
    assert np.array_equal(second.means("captions", {"y": b})["y"], two)
    assert np.array_equal(second.means("images", {"x": a})["x"], one)
    assert not np.array_equal(Bootstrap(resamples=100, seed=1).means("images", {"x": a})["x"], one)
    assert first.record() == {"resamples": 100, "seed": 0, "level": 0.95, "method": "percentile",
                              "query_sets": {"images": 400, "captions": 900}}


def test_columns_of_one_set_share_each_resample() -> None:
    values = np.random.default_rng(3).random(500)
    out = Bootstrap(resamples=50).means("q", {"v": values, "twice": 2 * values, "minus": -values})
    np.testing.assert_allclose(out["twice"], 2 * out["v"], rtol=1e-12)
    np.testing.assert_allclose(out["minus"], -out["v"], rtol=1e-12)


def test_resamples_are_means_of_drawn_queries() -> None:
    """The index-matrix path: each replicate is the mean over the queries its index row drew."""
    values = np.random.default_rng(4).random(300)
    boot = Bootstrap(resamples=40, seed=7)
    got = boot.means("q", {"v": values})["v"]
    rng = np.random.default_rng([7, zlib.crc32(b"q")])
    drawn = rng.integers(0, 300, size=(40, 300))
    np.testing.assert_allclose(got, values[drawn].mean(axis=1), rtol=1e-12)


def test_spearman_replicates_are_scipy_on_the_resampled_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intervals, "_BLOCK_ELEMENTS", 200)  # several blocks of resamples
    rng = np.random.default_rng(5)
    n = 60
    x = np.round(rng.normal(size=n), 1)  # ties, which resampling multiplies
    y = x + np.round(rng.normal(size=n), 0)
    got = Bootstrap(resamples=30, seed=3).spearman("pairs", x, y)
    seeded = np.random.default_rng([3, zlib.crc32(b"pairs")])
    step = 200 // n
    drawn = np.concatenate([seeded.integers(0, n, size=(min(step, 30 - s), n)) for s in range(0, 30, step)])
    want = [100 * spearmanr(x[i], y[i]).statistic for i in drawn]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    whole = intervals._weighted_spearman(x, y, np.ones((1, n), dtype=np.int64))
    assert 100 * whole[0] == pytest.approx(100 * spearmanr(x, y).statistic, abs=1e-10)


def test_spearman_of_all_tied_resamples_is_left_out() -> None:
    # Two pairs: a resample that draws one pair twice has no spread, its correlation is undefined.
    replicates = Bootstrap(resamples=200).spearman("pairs", [0.1, 0.2], [1.0, 2.0])
    assert np.isnan(replicates).any() and (replicates[~np.isnan(replicates)] == 100.0).all()
    assert percentile_interval(replicates, 100.0) == (100.0, 100.0)
    with pytest.raises(ValueError, match="no resample gave a finite value"):
        percentile_interval([np.nan, np.nan], 1.0)


def test_interval_is_widened_to_hold_the_value() -> None:
    assert percentile_interval([1.0, 2.0, 3.0, 4.0, 5.0], 3.0, level=0.5) == (2.0, 4.0)
    assert percentile_interval([1.0, 2.0, 3.0], 10.0) == (pytest.approx(1.05), 10.0)
    assert percentile_interval([1.0, 2.0, 3.0], -1.0) == (-1.0, pytest.approx(2.95))


def test_rows_and_replicates_must_match() -> None:
    rows = [metric_row("d", "i2t", "R@1", 50.0), metric_row("d", "both", "RSUM", 300.0)]
    reps = {("d", "i2t", "R@1", ""): np.array([40.0, 60.0])}
    with pytest.raises(ValueError, match=r"rows without: \[\('d', 'both', 'RSUM', ''\)\]"):
        attach_intervals(rows, reps)
    with pytest.raises(ValueError, match=r"replicates without a row: \[\('d', 't2i', 'R@1', ''\)\]"):
        attach_intervals(rows[:1], {**reps, ("d", "t2i", "R@1", ""): np.ones(2)})
    out = attach_intervals(rows[:1], reps)
    check_intervals(out, "bench")
    with pytest.raises(ValueError, match=r"bench: metrics\[0\] \('d', 'i2t', 'R@1', ''\): expected finite ci_low"):
        check_intervals(rows[:1], "bench")
    with pytest.raises(ValueError, match=r"found ci_low 51.0, value 50.0"):
        check_intervals([{**out[0], "ci_low": 51.0}], "bench")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resamples: expected a positive integer, found 0"):
        Bootstrap(resamples=0)
    with pytest.raises(ValueError, match="seed: expected an integer >= 0"):
        Bootstrap(seed=-1)
    boot = Bootstrap(resamples=10)
    boot.means("q", {"a": np.ones(3)})
    with pytest.raises(ValueError, match="query set 'q' was resampled already"):
        boot.means("q", {"b": np.ones(3)})
    with pytest.raises(ValueError, match="differ in length"):
        boot.means("r", {"a": np.ones(3), "b": np.ones(4)})
    with pytest.raises(ValueError, match="query set 'e' is empty"):
        boot.means("e", {"a": np.ones(0)})
    with pytest.raises(ValueError, match="must be finite"):
        boot.means("n", {"a": np.array([1.0, np.nan])})


# ---------------------------------------------------------------------------------------------
# The table reader
# ---------------------------------------------------------------------------------------------


def _entry(rows: list[dict]) -> dict:
    result = {"protocol": "person", "experiment": "e", "benchmark": "b", "metrics": rows}
    return {"student": "s", "experiment": "e", "method": "mmref", "label": "MMRef", "benchmark": "b",
            "result": result}


def test_table_reader_accepts_rows_with_and_without_intervals() -> None:
    rows = [{**metric_row("b", "t2i", "R@1", 50.0), "ci_low": 45.0, "ci_high": 55.0},
            metric_row("b", "t2i", "R@5", 70.0)]
    entry = load_entry("person", 0, _entry(rows))
    assert entry.metrics == (MetricRow("b", "t2i", "R@1", 50.0, "", 45.0, 55.0), MetricRow("b", "t2i", "R@5", 70.0, ""))
    assert entry.one("t2i", "R@5").ci_low is None


BAD_INTERVAL = r"metrics\[0\]: 'ci_low' <= 'value' <= 'ci_high' expected \(finite, both or neither\), found "


@pytest.mark.parametrize(("change", "found"), [
    ({"ci_low": 51.0}, "51.0, 50.0, 55.0"),
    ({"ci_high": 49.0}, "45.0, 50.0, 49.0"),
    ({"ci_low": float("nan")}, "nan, 50.0, 55.0"),
    ({"ci_high": "55"}, "45.0, 50.0, '55'"),
    ({"ci_high": None}, "45.0, 50.0, None"),
])
def test_table_reader_refuses_bad_intervals(change: dict, found: str) -> None:
    row = {**metric_row("b", "t2i", "R@1", 50.0), "ci_low": 45.0, "ci_high": 55.0, **change}
    with pytest.raises(ValueError, match=BAD_INTERVAL + re.escape(found)):
        load_entry("person", 0, _entry([row]))


def test_table_reader_wants_both_interval_ends() -> None:
    row = {**metric_row("b", "t2i", "R@1", 50.0), "ci_low": 45.0}
    with pytest.raises(ValueError, match=BAD_INTERVAL + re.escape("45.0, 50.0, None")):
        load_entry("person", 0, _entry([row]))
