"""Retrieval metrics against naive per-query python loops and against the former sort-based
implementation (kept here as ``_reference_*``: a full stable sort of every row)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softref.evaluate import metrics
from softref.evaluate.metrics import (
    cmc_map_minp,
    cmc_map_minp_per_query,
    first_relevant_ranks,
    first_relevant_ranks_both_ways,
    map_at_r,
    map_r_precision_r1,
    map_r_precision_r1_both_ways,
    map_r_precision_r1_per_query,
    map_r_precision_r1_per_query_both_ways,
    r_precision,
    recall_at_k,
    recall_at_k_both_ways,
    recall_from_ranks,
)


def _ranking(row: np.ndarray) -> list[int]:
    # Descending score, ties by lower index: the documented stable-sort convention.
    return sorted(range(len(row)), key=lambda g: (-row[g], g))


def naive_recall(scores, relevant, ks):
    out = {}
    for k in ks:
        hits = 0
        for q in range(scores.shape[0]):
            top = _ranking(scores[q])[:k]
            hits += any(relevant[q, g] for g in top)
        out[k] = 100.0 * hits / scores.shape[0]
    return out


def naive_map_at_r(scores, relevant):
    total = 0.0
    for q in range(scores.shape[0]):
        r = int(relevant[q].sum())
        found, ap = 0, 0.0
        for position, g in enumerate(_ranking(scores[q])[:r], start=1):
            if relevant[q, g]:
                found += 1
                ap += found / position
        total += ap / r
    return 100.0 * total / scores.shape[0]


def naive_r_precision(scores, relevant):
    total = 0.0
    for q in range(scores.shape[0]):
        r = int(relevant[q].sum())
        total += sum(bool(relevant[q, g]) for g in _ranking(scores[q])[:r]) / r
    return 100.0 * total / scores.shape[0]


def naive_rank(scores, q_labels, g_labels, max_rank):
    """IRRA's rank written as a loop over queries."""
    num_q = scores.shape[0]
    cmc = np.zeros(max_rank)
    ap_sum, inp_sum = 0.0, 0.0
    for q in range(num_q):
        matches = [g_labels[g] == q_labels[q] for g in _ranking(scores[q])]
        first = matches.index(True)
        for k in range(max_rank):
            cmc[k] += first <= k
        found, ap, last = 0, 0.0, 0
        for position, hit in enumerate(matches, start=1):
            if hit:
                found += 1
                ap += found / position
                last = position
        ap_sum += ap / found
        inp_sum += found / last
    cmc = 100.0 * cmc / num_q
    return {
        "R@1": cmc[0],
        "R@5": cmc[4],
        "R@10": cmc[9],
        "mAP": 100 * ap_sum / num_q,
        "mINP": 100 * inp_sum / num_q,
    }


@pytest.fixture
def multi_positive_case():
    rng = np.random.default_rng(3)
    num_q, num_g = 37, 23
    scores = rng.standard_normal((num_q, num_g)).astype(np.float32)
    relevant = rng.random((num_q, num_g)) < 0.12
    # Every query gets at least one relevant item; some get many.
    relevant[np.arange(num_q), rng.integers(0, num_g, num_q)] = True
    relevant[0, :12] = True
    return scores, relevant


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 36, 37, 100])
def test_recall_matches_naive(multi_positive_case, chunk_size):
    scores, relevant = multi_positive_case
    got = recall_at_k(scores, relevant, ks=(1, 3, 5, 10, 50), chunk_size=chunk_size)
    want = naive_recall(scores, relevant, (1, 3, 5, 10, 50))
    assert got == pytest.approx(want)
    assert got[50] == 100.0


@pytest.mark.parametrize("chunk_size", [None, 4, 37])
def test_map_at_r_and_r_precision_match_naive(multi_positive_case, chunk_size):
    scores, relevant = multi_positive_case
    got_map = map_at_r(scores, relevant, chunk_size=chunk_size)
    got_rprec = r_precision(scores, relevant, chunk_size=chunk_size)
    assert got_map == pytest.approx(naive_map_at_r(scores, relevant))
    assert got_rprec == pytest.approx(naive_r_precision(scores, relevant))


def test_torch_inputs_match_numpy(multi_positive_case):
    scores, relevant = multi_positive_case
    ts, tr = torch.from_numpy(scores), torch.from_numpy(relevant)
    assert recall_at_k(ts, tr) == recall_at_k(scores, relevant)
    assert map_at_r(ts, tr, chunk_size=8) == pytest.approx(map_at_r(scores, relevant))
    assert r_precision(ts.half(), tr) == pytest.approx(naive_r_precision(scores.astype(np.float16), relevant))


def test_single_positive_text_to_image_layout():
    # Five captions per image, as in COCO text-to-image retrieval.
    rng = np.random.default_rng(0)
    num_images = 13
    image_of_text = np.repeat(np.arange(num_images), 5)
    scores = rng.standard_normal((len(image_of_text), num_images))
    relevant = image_of_text[:, None] == np.arange(num_images)[None, :]
    got = recall_at_k(scores, relevant, chunk_size=7)
    assert got == pytest.approx(naive_recall(scores, relevant, (1, 5, 10)))
    # With one relevant item, mAP@R and R-Precision both reduce to R@1.
    assert map_at_r(scores, relevant) == pytest.approx(got[1])
    assert r_precision(scores, relevant) == pytest.approx(got[1])


def test_ties_break_by_gallery_index():
    scores = np.zeros((2, 4))
    relevant = np.array([[False, True, False, False], [True, False, False, False]])
    assert recall_at_k(scores, relevant, ks=(1, 2)) == {1: 50.0, 2: 100.0}


def test_queries_without_relevant_items_raise(multi_positive_case):
    scores, relevant = multi_positive_case
    relevant = relevant.copy()
    relevant[[2, 9]] = False
    for metric in (recall_at_k, map_at_r, r_precision):
        with pytest.raises(ValueError, match="2 of 37 queries have no relevant"):
            metric(scores, relevant)


def test_shape_mismatch_raises(multi_positive_case):
    scores, relevant = multi_positive_case
    with pytest.raises(ValueError, match=r"relevant: expected shape \(37, 23\)"):
        recall_at_k(scores, relevant[:, :5])


@pytest.mark.parametrize("chunk_size", [None, 1, 6, 40])
def test_cmc_map_minp_matches_naive(chunk_size):
    rng = np.random.default_rng(11)
    num_ids = 9
    g_labels = rng.integers(0, num_ids, 60)
    g_labels[:num_ids] = np.arange(num_ids)  # every identity appears in the gallery
    q_labels = rng.integers(0, num_ids, 41)
    scores = rng.standard_normal((41, 60))
    # Make some queries easy so every metric moves away from chance.
    scores += 0.8 * (q_labels[:, None] == g_labels[None, :])
    got = cmc_map_minp(scores, q_labels, g_labels, chunk_size=chunk_size)
    want = naive_rank(scores, q_labels, g_labels, 10)
    assert set(got) == {"R@1", "R@5", "R@10", "mAP", "mINP"}
    for key in want:
        assert got[key] == pytest.approx(want[key]), key


def test_cmc_string_and_torch_labels():
    rng = np.random.default_rng(5)
    names = np.array(["p01", "p02", "p03", "p04"])
    g_idx = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 2, 1, 3])
    q_idx = rng.integers(0, 4, 15)
    scores = torch.randn(15, 12, generator=torch.Generator().manual_seed(2))
    by_int = cmc_map_minp(scores, torch.from_numpy(q_idx), torch.from_numpy(g_idx))
    by_str = cmc_map_minp(scores.numpy(), list(names[q_idx]), names[g_idx])
    assert by_int == pytest.approx(by_str)
    assert by_int == pytest.approx(naive_rank(scores.numpy(), q_idx, g_idx, 10))


def test_cmc_query_label_missing_from_gallery_raises():
    with pytest.raises(ValueError, match="1 of 2 queries have no relevant"):
        cmc_map_minp(np.zeros((2, 3)), ["a", "z"], ["a", "b", "c"])


def test_cmc_small_max_rank_and_small_gallery():
    scores = np.array([[0.1, 0.9, 0.5]])
    got = cmc_map_minp(scores, [1], [1, 2, 1], max_rank=3)
    assert set(got) == {"R@1", "mAP", "mINP"}
    assert got["R@1"] == 0.0
    got = cmc_map_minp(scores, [1], [1, 2, 1], max_rank=10)
    # The gallery has 3 items: by rank 5 and 10 every hit has been seen.
    assert got["R@5"] == got["R@10"] == 100.0


# ---------------------------------------------------------------------------------------------
# The former implementation (a full stable sort of every row), the reference for the new one
# ---------------------------------------------------------------------------------------------


def _reference_chunk(scores, start, stop):
    chunk = scores[start:stop]
    chunk = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(chunk))
    if not chunk.is_floating_point():
        chunk = chunk.to(torch.float64)
    elif chunk.dtype in (torch.float16, torch.bfloat16):
        chunk = chunk.float()
    return chunk


def _reference_sorted_relevance(scores, relevant_rows, chunk_size=7):
    """Per chunk of queries, the relevance flags in ranked order: (chunk, G) bool."""
    for start in range(0, scores.shape[0], chunk_size):
        stop = min(start + chunk_size, scores.shape[0])
        chunk = _reference_chunk(scores, start, stop)
        order = torch.sort(chunk, dim=1, descending=True, stable=True).indices
        yield torch.gather(relevant_rows(start, stop, chunk.device), 1, order)


def _reference_rows(relevant):
    def rows(start, stop, device):
        block = relevant[start:stop]
        block = block if isinstance(block, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(block))
        return block.to(device).to(torch.bool)

    return rows


def _reference_recall_at_k(scores, relevant, ks=(1, 5, 10)):
    hits = np.zeros(len(ks), dtype=np.int64)
    num_queries = 0
    for ranked in _reference_sorted_relevance(scores, _reference_rows(relevant)):
        first_hit = ranked.to(torch.uint8).argmax(dim=1)
        for index, k in enumerate(ks):
            hits[index] += int((first_hit < k).sum())
        num_queries += ranked.shape[0]
    return {k: 100.0 * float(hits[index]) / num_queries for index, k in enumerate(ks)}


def _reference_map_and_rprec_chunk(ranked):
    ranked_f = ranked.to(torch.float64)
    num_relevant = ranked_f.sum(dim=1, keepdim=True)
    positions = torch.arange(1, ranked.shape[1] + 1, device=ranked.device, dtype=torch.float64)
    within_r = positions.unsqueeze(0) <= num_relevant
    hits_in_r = ranked_f * within_r
    precision = hits_in_r.cumsum(dim=1) / positions
    average_precision = (precision * hits_in_r).sum(dim=1) / num_relevant.squeeze(1)
    r_prec = hits_in_r.sum(dim=1) / num_relevant.squeeze(1)
    return average_precision, r_prec


def _reference_map_at_r(scores, relevant):
    total, count = 0.0, 0
    for ranked in _reference_sorted_relevance(scores, _reference_rows(relevant)):
        average_precision, _ = _reference_map_and_rprec_chunk(ranked)
        total += float(average_precision.sum())
        count += ranked.shape[0]
    return 100.0 * total / count


def _reference_r_precision(scores, relevant):
    total, count = 0.0, 0
    for ranked in _reference_sorted_relevance(scores, _reference_rows(relevant)):
        _, r_prec = _reference_map_and_rprec_chunk(ranked)
        total += float(r_prec.sum())
        count += ranked.shape[0]
    return 100.0 * total / count


def _reference_eccv(scores, relevant):
    return {
        "mAP@R": _reference_map_at_r(scores, relevant),
        "R-P": _reference_r_precision(scores, relevant),
        "R@1": _reference_recall_at_k(scores, relevant, (1,))[1],
    }


def _reference_cmc_map_minp(scores, query_labels, gallery_labels, max_rank=10):
    num_queries, num_gallery = scores.shape
    _, codes = np.unique(np.concatenate([np.asarray(query_labels), np.asarray(gallery_labels)]),
                         return_inverse=True)
    query_codes = torch.from_numpy(codes[:num_queries].astype(np.int64))
    gallery_codes = torch.from_numpy(codes[num_queries:].astype(np.int64))

    def rows(start, stop, device):
        return query_codes[start:stop, None].to(device) == gallery_codes[None, :].to(device)

    curve_length = min(max_rank, num_gallery)
    cmc_hits = np.zeros(curve_length, dtype=np.int64)
    ap_total, inp_total = 0.0, 0.0
    for ranked in _reference_sorted_relevance(scores, rows):
        positions = torch.arange(1, num_gallery + 1, device=ranked.device, dtype=torch.float64)
        cutoffs = torch.arange(1, curve_length + 1, device=ranked.device)
        first_hit = ranked.to(torch.uint8).argmax(dim=1)
        cmc_hits += (first_hit.unsqueeze(1) < cutoffs).sum(dim=0).cpu().numpy()
        ranked_f = ranked.to(torch.float64)
        cumulative = ranked_f.cumsum(dim=1)
        num_relevant = cumulative[:, -1]
        ap_total += float(((cumulative / positions) * ranked_f).sum(dim=1).div(num_relevant).sum())
        last_hit = num_gallery - 1 - ranked.flip(1).to(torch.uint8).argmax(dim=1)
        inp_total += float((num_relevant / (last_hit.to(torch.float64) + 1)).sum())
    cmc = 100.0 * cmc_hits / num_queries
    result = {}
    for k in (1, 5, 10):
        if k <= max_rank:
            result[f"R@{k}"] = float(cmc[min(k, curve_length) - 1])
    result["mAP"] = 100.0 * ap_total / num_queries
    result["mINP"] = 100.0 * inp_total / num_queries
    return result


# ---------------------------------------------------------------------------------------------
# The new implementation against the reference
# ---------------------------------------------------------------------------------------------

# Float metrics are sums in another order than the reference's: equal to rounding.
CLOSE = {"rel": 1e-12, "abs": 1e-12}


def _scores(kind: str, num_q: int, num_g: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((num_q, num_g))
    if kind == "random":
        return scores.astype(np.float32)
    if kind == "rounded":  # heavy ties: a handful of distinct values per row
        return np.round(scores, 1).astype(np.float32)
    if kind == "coarse":  # a tie at almost every cut-off
        return np.round(scores / 2).astype(np.float32)
    if kind == "constant-rows":  # every row is one repeated value (some rows all zero)
        return np.repeat(np.round(rng.standard_normal((num_q, 1)), 0), num_g, axis=1).astype(np.float32)
    if kind == "zeros":
        return np.zeros((num_q, num_g), dtype=np.float32)
    if kind == "specials":  # NaN, +-inf, -0.0 / 0.0, subnormals and the smallest normal, tied
        values = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, np.finfo(np.float32).tiny,
                           -np.finfo(np.float32).tiny, 0.5, -0.5, 1.0], dtype=np.float32)
        return values[rng.integers(0, values.size, (num_q, num_g))]
    if kind == "integers":
        return rng.integers(-3, 4, (num_q, num_g)).astype(np.int64)
    if kind == "finite-specials":  # -0.0 / 0.0, subnormals and the smallest normal among plain values
        values = np.array([-0.0, 0.0, 1e-45, -1e-45, np.finfo(np.float32).tiny, -np.finfo(np.float32).tiny],
                          dtype=np.float32)
        out = scores.astype(np.float32)
        where = rng.random((num_q, num_g)) < 0.3
        out[where] = values[rng.integers(0, values.size, int(where.sum()))]
        return out
    if kind == "sprinkled":  # plain values, a few lines with one NaN or infinity, some with +inf and -inf
        out = scores.astype(np.float32)
        for value, share in ((np.nan, 0.01), (np.inf, 0.01), (-np.inf, 0.01)):
            where = rng.random((num_q, num_g)) < share
            out[where] = value
        return out
    raise ValueError(kind)


def _relevance(kind: str, num_q: int, num_g: int, seed: int) -> np.ndarray:
    """(Q, G) bool in which every row and every column has a relevant item."""
    rng = np.random.default_rng(seed + 100)
    if kind == "one-per-query":  # text-to-image: each query one relevant item
        owner = np.concatenate([np.arange(num_g), rng.integers(0, num_g, max(0, num_q - num_g))])[:num_q]
        rng.shuffle(owner)
        relevant = owner[:, None] == np.arange(num_g)[None, :]
    elif kind == "identity":  # identity-level: every item of the query's identity
        ids = max(2, min(num_q, num_g) // 3)
        q_ids = np.concatenate([np.arange(ids), rng.integers(0, ids, num_q)])[:num_q]
        g_ids = np.concatenate([np.arange(ids), rng.integers(0, ids, num_g)])[:num_g]
        relevant = q_ids[:, None] == g_ids[None, :]
    elif kind == "sparse":
        relevant = rng.random((num_q, num_g)) < 0.12
    elif kind == "dense":  # many positives, some rows all relevant
        relevant = rng.random((num_q, num_g)) < 0.6
        relevant[0] = True
    else:
        raise ValueError(kind)
    relevant[np.arange(num_q), rng.integers(0, num_g, num_q)] = True
    relevant[rng.integers(0, num_q, num_g), np.arange(num_g)] = True
    return relevant


SCORE_KINDS = ["random", "rounded", "coarse", "constant-rows", "zeros", "specials", "integers", "finite-specials",
               "sprinkled"]
RELEVANCE_KINDS = ["one-per-query", "identity", "sparse", "dense"]


@pytest.fixture(params=["default", "counting", "top-lists", "dense-only"])
def strategy(request, monkeypatch):
    """Run each comparison through every code path: the default choice, counting for every
    query (in blocks of one row), top-k lists for every query, and dense relevance kept unlisted."""
    if request.param == "counting":
        monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1)
        monkeypatch.setattr(metrics, "_COUNT_SLOTS", 1 << 20)
    elif request.param == "top-lists":
        monkeypatch.setattr(metrics, "_COUNT_SLOTS", 0)
        monkeypatch.setattr(metrics, "_PAIR_LIMIT", -1)  # no pair list: recall uses top-k lists too
    elif request.param == "dense-only":
        monkeypatch.setattr(metrics, "_PAIR_LIMIT", 5)
    return request.param


@pytest.mark.parametrize("relevance_kind", RELEVANCE_KINDS)
@pytest.mark.parametrize("score_kind", SCORE_KINDS)
def test_recall_and_eccv_match_reference(score_kind, relevance_kind, strategy):
    num_q, num_g = 23, 17
    scores = _scores(score_kind, num_q, num_g, seed=1)
    relevant = _relevance(relevance_kind, num_q, num_g, seed=1)
    ks = (1, 2, 5, 10, 16, 17, 18, 40)  # up to and beyond G
    want = _reference_recall_at_k(scores, relevant, ks)
    want_t = _reference_recall_at_k(scores.T, relevant.T, ks)
    for chunk_size in (None, 1, 4, 22, 100):
        assert recall_at_k(scores, relevant, ks, chunk_size=chunk_size) == want
        assert recall_at_k(scores.T, relevant.T, ks, chunk_size=chunk_size) == want_t
        assert recall_at_k_both_ways(scores, relevant, ks, chunk_size=chunk_size) == (want, want_t)
    eccv = _reference_eccv(scores, relevant)
    eccv_t = _reference_eccv(scores.T, relevant.T)
    for chunk_size in (None, 3, 22):
        got = map_r_precision_r1(scores, relevant, chunk_size=chunk_size)
        got_t = map_r_precision_r1(scores.T, relevant.T, chunk_size=chunk_size)
        assert set(got) == {"mAP@R", "R-P", "R@1"}
        assert got == pytest.approx(eccv, **CLOSE)
        assert got_t == pytest.approx(eccv_t, **CLOSE)
        assert got["R@1"] == eccv["R@1"] and got_t["R@1"] == eccv_t["R@1"]
        both = map_r_precision_r1_both_ways(scores, relevant, chunk_size=chunk_size)
        assert both[0] == pytest.approx(eccv, **CLOSE) and both[1] == pytest.approx(eccv_t, **CLOSE)
    assert map_at_r(scores, relevant) == pytest.approx(eccv["mAP@R"], **CLOSE)
    assert r_precision(scores, relevant) == pytest.approx(eccv["R-P"], **CLOSE)


def test_counting_ranks_again_only_tied_targets_and_lines_that_are_not_finite(monkeypatch):
    """The counting pass takes a target's rank from its counts unless it ties another item or
    its line holds a NaN or an infinity: only those lines go through the exact ranking."""
    rng = np.random.default_rng(0)
    num_q, num_g = 30, 40
    scores = (rng.permutation(num_q * num_g).reshape(num_q, num_g) / 7.0).astype(np.float32)  # no ties
    relevant = np.zeros((num_q, num_g), dtype=bool)
    relevant[np.arange(num_q), np.arange(num_q) % num_g] = True
    relevant[rng.integers(0, num_q, num_g), np.arange(num_g)] = True  # every column has a relevant row
    lines: list[int] = []
    exact = metrics._exact_ranks

    def spy(found: torch.Tensor, *args):
        lines.append(found.shape[0])
        return exact(found, *args)

    monkeypatch.setattr(metrics, "_exact_ranks", spy)
    i2t, t2i = _reference_recall_at_k(scores, relevant), _reference_recall_at_k(scores.T, relevant.T)
    assert recall_at_k_both_ways(scores, relevant) == (i2t, t2i)
    assert recall_at_k_both_ways(scores.T, relevant.T) == (t2i, i2t)
    assert lines == []  # no tie, every line finite: every rank from the counts
    tied = scores.copy()
    first = np.argmax(np.where(relevant[3], tied[3], -np.inf))  # row 3's best-ranked relevant item
    tied[3, (first + 1) % num_g] = tied[3, first]
    tied[5, 20] = np.nan
    tied[7, 0] = np.inf
    tied[9, 1], tied[9, 2] = np.inf, -np.inf  # the line's sum is NaN
    got = metrics.first_relevant_ranks(tied, relevant)
    assert got.tolist() == _reference_first_ranks(tied, relevant).tolist()
    assert sum(lines) == 4  # rows 3, 5, 7 and 9


@pytest.mark.parametrize("score_kind", ["random", "rounded", "constant-rows", "specials"])
def test_pair_lists_equal_dense_relevance(score_kind, strategy):
    num_q, num_g = 19, 29
    scores = _scores(score_kind, num_q, num_g, seed=4)
    relevant = _relevance("identity", num_q, num_g, seed=4)
    rows, cols = np.nonzero(relevant)
    shuffled = np.random.default_rng(0).permutation(rows.size)
    # Pairs in any order, repeated ones counted once.
    pairs = (np.concatenate([rows[shuffled], rows[:3]]), np.concatenate([cols[shuffled], cols[:3]]))
    ks = (1, 3, 10)
    assert recall_at_k(scores, pairs, ks) == _reference_recall_at_k(scores, relevant, ks)
    assert recall_at_k_both_ways(scores, pairs, ks) == recall_at_k_both_ways(scores, relevant, ks)
    assert recall_at_k_both_ways(torch.from_numpy(scores), (torch.from_numpy(pairs[0]), pairs[1].tolist()), ks) \
        == recall_at_k_both_ways(scores, relevant, ks)
    assert map_r_precision_r1(scores, pairs) == pytest.approx(_reference_eccv(scores, relevant), **CLOSE)
    both = map_r_precision_r1_both_ways(scores, pairs)
    assert both[1] == pytest.approx(_reference_eccv(scores.T, relevant.T), **CLOSE)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32])
def test_dtypes_and_layouts_match_reference(dtype, strategy):
    num_q, num_g = 31, 13
    base = torch.from_numpy(_scores("random", num_q, num_g, seed=2).astype(np.float64))
    # float16 rounds the scores: ties appear; integer scores tie heavily.
    scores = (base * 3).round().to(dtype) if dtype == torch.int32 else base.to(dtype)
    relevant = torch.from_numpy(_relevance("sparse", num_q, num_g, seed=2))
    ks = (1, 5, 10)
    want = _reference_recall_at_k(scores, relevant, ks)
    want_t = _reference_recall_at_k(scores.T, relevant.T, ks)
    eccv, eccv_t = _reference_eccv(scores, relevant), _reference_eccv(scores.T, relevant.T)
    # Row-major, a transposed view, a column slice (non-contiguous rows), numpy when it has the dtype.
    layouts = {"tensor": (scores, relevant), "transposed-view": (scores.T.contiguous().T, relevant)}
    if dtype != torch.bfloat16:
        layouts["numpy"] = (scores.numpy(), relevant.numpy())
        layouts["numpy-fortran"] = (np.asfortranarray(scores.numpy()), np.asfortranarray(relevant.numpy()))
    for name, (s, r) in layouts.items():
        assert recall_at_k(s, r, ks, chunk_size=5) == want, name
        assert recall_at_k(s.T, r.T, ks, chunk_size=5) == want_t, name
        assert recall_at_k_both_ways(s, r, ks) == (want, want_t), name
        assert map_r_precision_r1(s, r, chunk_size=6) == pytest.approx(eccv, **CLOSE), name
        assert map_r_precision_r1_both_ways(s, r) == (pytest.approx(eccv, **CLOSE), pytest.approx(eccv_t, **CLOSE))
    wide = torch.stack([scores, scores], dim=2)[:, :, 0]  # rows with stride 2
    assert recall_at_k(wide, relevant, ks) == want


@pytest.mark.parametrize("score_kind", SCORE_KINDS)
@pytest.mark.parametrize("labels", ["few-ids", "many-per-id", "one-each"])
def test_cmc_map_minp_matches_reference(score_kind, labels, strategy, monkeypatch):
    rng = np.random.default_rng(7)
    num_q, num_g = 21, 33
    num_ids = {"few-ids": 7, "many-per-id": 2, "one-each": num_g}[labels]
    g_labels = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_g - num_ids)])
    q_labels = rng.integers(0, num_ids, num_q)
    scores = _scores(score_kind, num_q, num_g, seed=7)
    if strategy == "top-lists":  # the stable-sort path for queries with many hits
        monkeypatch.setattr(metrics, "_SORT_SLOTS", 3)
    for max_rank in (1, 5, 10, 40):
        want = _reference_cmc_map_minp(scores, q_labels, g_labels, max_rank)
        for chunk_size in (None, 1, 5):
            got = cmc_map_minp(scores, q_labels, g_labels, max_rank, chunk_size=chunk_size)
            assert set(got) == set(want)
            assert got == pytest.approx(want, **CLOSE)
            assert all(got[key] == want[key] for key in want if key.startswith("R@"))
        got_t = cmc_map_minp(torch.from_numpy(np.ascontiguousarray(scores.T)).T, q_labels, g_labels, max_rank)
        assert got_t == pytest.approx(want, **CLOSE)


def test_cmc_half_and_double_inputs_match_reference():
    rng = np.random.default_rng(8)
    g_labels = np.concatenate([np.arange(5), rng.integers(0, 5, 20)])
    q_labels = rng.integers(0, 5, 12)
    for dtype in (torch.float16, torch.float64):
        scores = torch.randn(12, 25, generator=torch.Generator().manual_seed(8)).to(dtype)
        want = _reference_cmc_map_minp(scores, q_labels, g_labels)
        assert cmc_map_minp(scores, q_labels, g_labels, chunk_size=4) == pytest.approx(want, **CLOSE)
        assert cmc_map_minp(scores.numpy(), q_labels, g_labels) == pytest.approx(want, **CLOSE)


def test_rows_with_no_relevant_column_raise_for_the_transposed_direction():
    relevant = np.array([[True, False, False], [True, True, False]])
    with pytest.raises(ValueError, match=r"1 of 3 columns \(the queries of the transposed direction\) have no "
                                         r"relevant row \(first column indices: \[2\]\)"):
        recall_at_k_both_ways(np.zeros((2, 3)), relevant)
    with pytest.raises(ValueError, match="1 of 3 queries have no relevant"):
        map_r_precision_r1(np.zeros((3, 2)), relevant.T)


def test_pair_lists_are_checked():
    scores = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"relevant\[1\] \(gallery indices\): expected indices in \[0, 3\)"):
        recall_at_k(scores, (np.array([0, 1]), np.array([0, 3])))
    with pytest.raises(ValueError, match="expected two index arrays of equal length"):
        recall_at_k(scores, (np.array([0, 1]), np.array([0])))
    with pytest.raises(TypeError, match="expected integer indices, found dtype torch.float64"):
        recall_at_k(scores, (np.array([0.0, 1.0]), np.array([0, 1])))
    with pytest.raises(TypeError, match=r"or a \(query_index, gallery_index\) pair of index arrays, found list"):
        recall_at_k(scores, [[True, False, False], [False, True, False]])
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer, found 0"):
        map_r_precision_r1(scores, np.ones((2, 3), dtype=bool), chunk_size=0)


def test_two_way_examples_and_single_row_or_column():
    scores = np.array([[0.9, 0.1, 0.4], [0.8, 0.2, 0.3]])
    pairs = (np.array([0, 1, 1]), np.array([0, 1, 2]))
    assert recall_at_k_both_ways(scores, pairs, ks=(1,)) == ({1: 50.0}, {1: 200.0 / 3})
    one = np.array([[0.3, 0.3, 0.7]])
    assert recall_at_k(one, np.array([[False, True, False]]), ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 100.0}
    assert recall_at_k(one.T, np.ones((3, 1), dtype=bool), ks=(1,)) == {1: 100.0}


def test_image_text_metrics_and_eccv_scores_match_reference_with_tied_embeddings():
    """The callers of the two-way functions, with duplicated images and captions (tied scores)
    and embeddings rounded to a coarse grid (more ties)."""
    from softref.evaluate.protocols import eccv_scores, identity_relevance
    from softref.evaluate.retrieval import image_text_metrics

    rng = np.random.default_rng(9)
    num_images = 12
    images = np.round(rng.standard_normal((num_images, 4)), 0)
    images[6:] = images[:6]  # every image twice: tied columns for each caption
    images /= np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-12)
    owner = np.repeat(np.arange(num_images), 5)
    captions = images[owner] + np.round(0.5 * rng.standard_normal((owner.size, 4)), 0)
    captions[::7] = captions[0]  # repeated captions: tied rows
    relevant = owner[None, :] == np.arange(num_images)[:, None]
    image_t = torch.from_numpy(images).float()
    caption_t = torch.from_numpy(captions / np.linalg.norm(captions, axis=1, keepdims=True)).float()
    got = image_text_metrics(image_t, caption_t, relevant)
    scores = image_t @ caption_t.T
    want_i2t = _reference_recall_at_k(scores, relevant)
    want_t2i = _reference_recall_at_k(scores.T, relevant.T)
    assert got["i2t"] == {f"R@{k}": want_i2t[k] for k in (1, 5, 10)}
    assert got["t2i"] == {f"R@{k}": want_t2i[k] for k in (1, 5, 10)}

    identities = list(np.arange(num_images) % 6)  # the duplicated images share an identity
    identity_rel = identity_relevance(identities, [identities[i] for i in owner])
    out = eccv_scores(images, captions, identity_rel)
    # eccv_scores normalises float64 input in float64, as here.
    unit = torch.nn.functional.normalize(torch.from_numpy(images), dim=1)
    unit_c = torch.nn.functional.normalize(torch.from_numpy(captions), dim=1)
    cosine = unit @ unit_c.T
    assert (cosine.sort(dim=0).values.diff(dim=0) == 0).any(dim=0).all()  # every caption ties images
    assert out["i2t"] == pytest.approx(_reference_eccv(cosine, identity_rel), **CLOSE)
    assert out["t2i"] == pytest.approx(_reference_eccv(cosine.T, identity_rel.T), **CLOSE)


def test_numpy_views_torch_cannot_share_are_copied():
    scores = _scores("rounded", 9, 11, seed=3)[::-1]  # negative strides
    relevant = _relevance("identity", 9, 11, seed=3)[:, ::-1]
    big_endian = scores.astype(">f4")
    want = _reference_recall_at_k(np.ascontiguousarray(scores), np.ascontiguousarray(relevant))
    assert recall_at_k(scores, relevant) == want
    assert recall_at_k(big_endian, relevant) == want
    assert map_r_precision_r1(scores, relevant) == pytest.approx(
        _reference_eccv(np.ascontiguousarray(scores), np.ascontiguousarray(relevant)), **CLOSE)


# ---------------------------------------------------------------------------------------------
# Per-query values against the reference, and their means against the metrics
# ---------------------------------------------------------------------------------------------


def _reference_first_ranks(scores, relevant):
    parts = [ranked.to(torch.uint8).argmax(dim=1) for ranked in _reference_sorted_relevance(scores,
                                                                                            _reference_rows(relevant))]
    return torch.cat(parts).numpy()


def _reference_eccv_per_query(scores, relevant):
    maps, rps, r1s = [], [], []
    for ranked in _reference_sorted_relevance(scores, _reference_rows(relevant)):
        average_precision, r_prec = _reference_map_and_rprec_chunk(ranked)
        maps.append(average_precision)
        rps.append(r_prec)
        r1s.append(ranked[:, 0].to(torch.float64))
    return {"mAP@R": 100.0 * torch.cat(maps).numpy(), "R-P": 100.0 * torch.cat(rps).numpy(),
            "R@1": 100.0 * torch.cat(r1s).numpy()}


def _reference_cmc_per_query(scores, query_labels, gallery_labels):
    num_gallery = scores.shape[1]
    _, codes = np.unique(np.concatenate([np.asarray(query_labels), np.asarray(gallery_labels)]),
                         return_inverse=True)
    query_codes = torch.from_numpy(codes[: scores.shape[0]].astype(np.int64))
    gallery_codes = torch.from_numpy(codes[scores.shape[0]:].astype(np.int64))

    def rows(start, stop, device):
        return query_codes[start:stop, None].to(device) == gallery_codes[None, :].to(device)

    first, ap, inp = [], [], []
    for ranked in _reference_sorted_relevance(scores, rows):
        positions = torch.arange(1, num_gallery + 1, dtype=torch.float64)
        ranked_f = ranked.to(torch.float64)
        cumulative = ranked_f.cumsum(dim=1)
        num_relevant = cumulative[:, -1]
        first.append(ranked.to(torch.uint8).argmax(dim=1))
        ap.append(((cumulative / positions) * ranked_f).sum(dim=1) / num_relevant)
        last_hit = num_gallery - 1 - ranked.flip(1).to(torch.uint8).argmax(dim=1)
        inp.append(num_relevant / (last_hit.to(torch.float64) + 1))
    return {"rank": torch.cat(first).numpy(), "mAP": 100.0 * torch.cat(ap).numpy(),
            "mINP": 100.0 * torch.cat(inp).numpy()}


def _listed(strategy: str) -> bool:
    """Whether the relevance is listed as pairs under ``strategy`` (exact ranks need no max_rank)."""
    return strategy not in ("top-lists", "dense-only")


@pytest.mark.parametrize("relevance_kind", RELEVANCE_KINDS)
@pytest.mark.parametrize("score_kind", SCORE_KINDS)
def test_first_relevant_ranks_give_the_recalls(score_kind, relevance_kind, strategy):
    num_q, num_g = 23, 17
    scores = _scores(score_kind, num_q, num_g, seed=1)
    relevant = _relevance(relevance_kind, num_q, num_g, seed=1)
    ks = (1, 2, 5, 10, 16, 17)
    want, want_t = _reference_first_ranks(scores, relevant), _reference_first_ranks(scores.T, relevant.T)
    for chunk_size in (None, 1, 22):
        clipped, clipped_t = first_relevant_ranks_both_ways(scores, relevant, max_rank=17, chunk_size=chunk_size)
        assert clipped.tolist() == np.minimum(want, 17).tolist()
        assert clipped_t.tolist() == np.minimum(want_t, 17).tolist()
        assert recall_from_ranks(clipped, ks) == recall_at_k(scores, relevant, ks)  # the same floats
        assert recall_from_ranks(clipped_t, ks) == recall_at_k(scores.T, relevant.T, ks)
        one_way = first_relevant_ranks(scores.T, relevant.T, max_rank=5, chunk_size=chunk_size)
        assert one_way.tolist() == np.minimum(want_t, 5).tolist()
        if _listed(strategy):
            exact, exact_t = first_relevant_ranks_both_ways(scores, relevant, chunk_size=chunk_size)
            assert exact.tolist() == want.tolist() and exact_t.tolist() == want_t.tolist()
            assert first_relevant_ranks(scores, relevant).tolist() == want.tolist()
        else:
            with pytest.raises(ValueError, match="give max_rank"):
                first_relevant_ranks(scores, relevant)


@pytest.mark.parametrize("relevance_kind", RELEVANCE_KINDS)
@pytest.mark.parametrize("score_kind", SCORE_KINDS)
def test_eccv_per_query_values_and_their_means(score_kind, relevance_kind, strategy):
    num_q, num_g = 23, 17
    scores = _scores(score_kind, num_q, num_g, seed=1)
    relevant = _relevance(relevance_kind, num_q, num_g, seed=1)
    want, want_t = _reference_eccv_per_query(scores, relevant), _reference_eccv_per_query(scores.T, relevant.T)
    for chunk_size in (None, 3, 22):
        got = map_r_precision_r1_per_query(scores, relevant, chunk_size=chunk_size)
        both = map_r_precision_r1_per_query_both_ways(scores, relevant, chunk_size=chunk_size)
        # The means are the metric functions' numbers, bit for bit.
        assert got.means == map_r_precision_r1(scores, relevant, chunk_size=chunk_size)
        assert (both[0].means, both[1].means) == map_r_precision_r1_both_ways(scores, relevant, chunk_size=chunk_size)
        for name in ("mAP@R", "R-P", "R@1"):
            np.testing.assert_allclose(got.per_query[name], want[name], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(both[0].per_query[name], want[name], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(both[1].per_query[name], want_t[name], rtol=1e-12, atol=1e-12)
            assert got.per_query[name].mean() == pytest.approx(got.means[name], **CLOSE)
            assert both[1].per_query[name].mean() == pytest.approx(both[1].means[name], **CLOSE)
        assert got.per_query["R@1"].tolist() == want["R@1"].tolist()


@pytest.mark.parametrize("score_kind", SCORE_KINDS)
@pytest.mark.parametrize("labels", ["few-ids", "many-per-id", "one-each"])
def test_cmc_per_query_values_and_their_means(score_kind, labels, strategy, monkeypatch):
    rng = np.random.default_rng(7)
    num_q, num_g = 21, 33
    num_ids = {"few-ids": 7, "many-per-id": 2, "one-each": num_g}[labels]
    g_labels = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_g - num_ids)])
    q_labels = rng.integers(0, num_ids, num_q)
    scores = _scores(score_kind, num_q, num_g, seed=7)
    if strategy == "top-lists":  # the stable-sort path for queries with many hits
        monkeypatch.setattr(metrics, "_SORT_SLOTS", 3)
    want = _reference_cmc_per_query(scores, q_labels, g_labels)
    for chunk_size in (None, 1, 5):
        for max_rank in (1, 10, 40):
            got = cmc_map_minp_per_query(scores, q_labels, g_labels, max_rank, chunk_size=chunk_size)
            assert got.means == cmc_map_minp(scores, q_labels, g_labels, max_rank, chunk_size=chunk_size)
        rank = got.per_query["rank"]
        assert rank.dtype == np.int64 and rank.tolist() == want["rank"].tolist()
        for name in ("mAP", "mINP"):
            np.testing.assert_allclose(got.per_query[name], want[name], rtol=1e-12, atol=1e-12)
            assert got.per_query[name].mean() == pytest.approx(got.means[name], **CLOSE)
        for k in (1, 5, 10):
            assert 100.0 * float(np.count_nonzero(rank < k)) / num_q == got.means[f"R@{k}"]
    transposed = torch.from_numpy(np.ascontiguousarray(scores.T)).T
    assert cmc_map_minp_per_query(transposed, q_labels, g_labels).per_query["rank"].tolist() == want["rank"].tolist()


def test_per_query_checks_and_examples():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.3]])
    relevant = np.eye(2, 3, dtype=bool)
    assert first_relevant_ranks(scores, relevant).tolist() == [0, 2]
    assert first_relevant_ranks(scores, relevant, max_rank=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="ks: expected positive cut-offs, found \\(0,\\)"):
        first_relevant_ranks(scores, relevant, max_rank=0)
    with pytest.raises(ValueError, match="1 of 2 queries have no relevant"):
        first_relevant_ranks(scores, np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="ranks: expected a non-empty 1-D array"):
        recall_from_ranks(np.zeros((2, 2)))
    assert recall_from_ranks(np.array([0, 2, 5, 1]), ks=(1, 3)) == {1: 25.0, 3: 75.0}


def test_image_text_metrics_on_a_device():
    """``device=`` computes the scores and their ranking there: on the CPU the same floats as the
    embeddings' own device; on CUDA (when present) the same as the CPU for scores every GEMM gets
    exactly (small integers, many ties), so ties break alike too."""
    from softref.evaluate.retrieval import image_text_metrics

    rng = np.random.default_rng(4)
    num_images = 30
    owner = np.repeat(np.arange(num_images), 5)
    relevant = owner[None, :] == np.arange(num_images)[:, None]
    images = torch.from_numpy(rng.integers(-3, 4, (num_images, 8))).float()
    captions = images[owner] + torch.from_numpy(rng.integers(-2, 3, (owner.size, 8))).float()
    here = image_text_metrics(images, captions, relevant)
    assert image_text_metrics(images, captions, relevant, device="cpu") == here
    assert image_text_metrics(images, captions, relevant, device=torch.device("cpu")) == here
    assert 0 < here["i2t"]["R@1"] < 100 and 0 < here["t2i"]["R@1"] < 100
    if torch.cuda.is_available():
        assert image_text_metrics(images, captions, relevant, device="cuda") == here
        assert image_text_metrics(images.cuda(), captions.cuda(), relevant) == here
