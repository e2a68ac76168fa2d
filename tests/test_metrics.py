"""Chunked retrieval metrics against naive per-query python loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softref.evaluate.metrics import cmc_map_minp, map_at_r, r_precision, recall_at_k


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
