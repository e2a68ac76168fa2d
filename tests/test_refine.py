"""Reference-based refinement: profiles, lam = 0 identity, agreement with a naive per-query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softref.evaluate.metrics import cmc_map_minp
from softref.evaluate.refine import (
    profile_similarity,
    reference_profiles,
    refine_scores,
    top_reference_profiles,
)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def data(q: int = 23, g: int = 31, m: int = 17, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((q, d))
    gallery = rng.standard_normal((g, d))
    refs = rng.standard_normal((m, d)) * rng.uniform(0.5, 2.0, (m, 1))  # any norm
    scores = (unit(query) @ unit(gallery).T).astype(np.float32)
    return scores, query, gallery, refs


def naive_profile(e: np.ndarray, refs: np.ndarray, k: int, tau: float) -> np.ndarray:
    cos = unit(refs) @ (e / np.linalg.norm(e))
    top = np.argsort(-cos, kind="stable")[:k]
    w = np.exp((cos[top] - cos[top].max()) / tau)
    p = np.zeros(len(refs))
    p[top] = w / w.sum()
    return p


def naive_refined_ranking(scores, query, gallery, refs, k, tau, top_k, lam):
    """Per query: stable initial order, re-sort the first K by S + lam * cos(profiles)."""
    gp = np.stack([naive_profile(e, refs, k, tau) for e in gallery])
    rankings, values = [], []
    for i in range(len(scores)):
        order = np.argsort(-scores[i].astype(np.float64), kind="stable")
        head, tail = order[:top_k], order[top_k:]
        qp = naive_profile(query[i], refs, k, tau)
        s_ref = gp[head] @ qp / (np.linalg.norm(gp[head], axis=1) * np.linalg.norm(qp))
        new = scores[i, head].astype(np.float64) + lam * s_ref
        resort = np.argsort(-new, kind="stable")
        rankings.append(np.concatenate([head[resort], tail]))
        values.append(dict(zip(head.tolist(), new.tolist())))
    return np.stack(rankings), values


def ranking(scores) -> np.ndarray:
    s = scores.cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    return np.argsort(-s, axis=1, kind="stable")


def test_profiles_have_k_entries_summing_to_one() -> None:
    _, query, _, refs = data()
    for k, tau in ((1, 0.1), (5, 0.05), (17, 1.0)):
        p = reference_profiles(query, refs, k, tau)
        assert p.shape == (len(query), len(refs))
        assert ((p > 0).sum(dim=1) == k).all()
        torch.testing.assert_close(p.sum(dim=1), torch.ones(len(query), dtype=p.dtype), rtol=0, atol=1e-6)
        naive = np.stack([naive_profile(e, refs, k, tau) for e in query])
        np.testing.assert_allclose(p.numpy(), naive, rtol=1e-5, atol=1e-6)


def test_profiles_chunked_equal_and_sparse_matches_dense() -> None:
    _, query, gallery, refs = data()
    a = top_reference_profiles(query, refs, 4, 0.1)
    b = top_reference_profiles(query, refs, 4, 0.1, chunk_size=3)
    assert torch.equal(a.indices, b.indices) and torch.allclose(a.weights, b.weights)
    # Most similar reference first.
    assert (a.weights[:, :-1] >= a.weights[:, 1:]).all()
    gp = top_reference_profiles(gallery, refs, 4, 0.1)
    sim = profile_similarity(a, gp)
    dq, dg = a.dense().double(), gp.dense().double()
    expected = (dq / dq.norm(dim=1, keepdim=True)) @ (dg / dg.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(sim.double(), expected, rtol=1e-5, atol=1e-6)
    assert float(sim.min()) >= 0.0 and float(sim.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("top_k", [1, 5, 31, 100])
def test_lam_zero_reproduces_initial_ranking(top_k: int) -> None:
    scores, query, gallery, refs = data()
    # Ties, also at the K-th position, must keep the initial (stable, lower index first) order.
    scores[:, 10] = scores[:, 3]
    scores[2, :] = np.round(scores[2, :], 1)
    out = refine_scores(scores, query, gallery, refs, k=4, tau=0.1, top_k=top_k, lam=0.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == scores.shape
    np.testing.assert_array_equal(ranking(out), ranking(scores))
    labels_q = np.arange(len(scores)) % 7
    labels_g = np.arange(scores.shape[1]) % 7
    assert cmc_map_minp(out, labels_q, labels_g) == cmc_map_minp(scores, labels_q, labels_g)


@pytest.mark.parametrize(
    ("top_k", "lam", "chunk", "decimals"),
    [(5, 0.5, None, None), (12, 2.0, 4, None), (31, 1.0, 1, None), (40, 0.3, 7, None), (6, 0.8, 5, 1)],
)
def test_refine_matches_naive_loop(top_k: int, lam: float, chunk: int | None, decimals: int | None) -> None:
    scores, query, gallery, refs = data(seed=top_k)
    if decimals is not None:  # many ties, also across the K-th position
        scores = np.round(scores, decimals)
    out = refine_scores(scores, query, gallery, refs, k=5, tau=0.07, top_k=top_k, lam=lam, chunk_size=chunk)
    expected, values = naive_refined_ranking(scores, query, gallery, refs, 5, 0.07, top_k, lam)
    np.testing.assert_array_equal(ranking(out), expected)
    for i, row in enumerate(values):
        got = out[i, list(row)]
        np.testing.assert_allclose(got, list(row.values()), rtol=1e-6, atol=1e-6)
    # Items outside the top K keep their initial order and stay below every re-ranked item.
    k_eff = min(top_k, scores.shape[1])
    if k_eff < scores.shape[1]:
        head = expected[:, :k_eff]
        tail = expected[:, k_eff:]
        assert (np.take_along_axis(out, tail, 1).max(1) < np.take_along_axis(out, head, 1).min(1)).all()


def test_refinement_changes_the_ranking_and_torch_in_torch_out() -> None:
    scores, query, gallery, refs = data()
    out = refine_scores(torch.from_numpy(scores), torch.from_numpy(query).float(),
                        torch.from_numpy(gallery).float(), torch.from_numpy(refs).float(),
                        k=3, tau=0.05, top_k=10, lam=5.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert not np.array_equal(ranking(out), ranking(scores))
    # Only the first 10 positions may move.
    np.testing.assert_array_equal(ranking(out)[:, 10:], ranking(scores)[:, 10:])
    assert (np.sort(ranking(out)[:, :10], 1) == np.sort(ranking(scores)[:, :10], 1)).all()


def test_refine_leaves_its_inputs_alone() -> None:
    scores, query, gallery, refs = data()
    scores64 = scores.astype(np.float64)
    before = scores64.copy()
    out = refine_scores(scores64, query, gallery, refs, k=3, tau=0.1, top_k=5, lam=1.0)
    np.testing.assert_array_equal(scores64, before)
    assert not np.shares_memory(out, scores64)


def test_refine_rejects_bad_arguments() -> None:
    scores, query, gallery, refs = data()
    with pytest.raises(ValueError, match="k must be in"):
        refine_scores(scores, query, gallery, refs, k=18, tau=0.1, top_k=5, lam=1.0)
    with pytest.raises(ValueError, match="tau must be"):
        refine_scores(scores, query, gallery, refs, k=3, tau=0.0, top_k=5, lam=1.0)
    with pytest.raises(ValueError, match="top_k must be"):
        refine_scores(scores, query, gallery, refs, k=3, tau=0.1, top_k=0, lam=1.0)
    with pytest.raises(ValueError, match="one row per query"):
        refine_scores(scores, query[:-1], gallery, refs, k=3, tau=0.1, top_k=5, lam=1.0)
    bad = scores.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4 holds NaN"):
        refine_scores(bad, query, gallery, refs, k=3, tau=0.1, top_k=5, lam=1.0)
    with pytest.raises(ValueError, match="dim"):
        top_reference_profiles(query, refs[:, :4], 3, 0.1)
