"""Retrieval metrics from a score matrix: Recall@K, mAP@R, R-Precision, and CMC / mAP / mINP.

All functions take ``scores`` (Q, G), higher is better, as a numpy array or a torch tensor
(any device), and return percentages as Python floats. They work through the queries in
chunks, so memory stays bounded by ``chunk_size x G`` (25k captions x 5k images is fine); the
default chunk holds about 4M scores.

Ties: items with equal scores are ranked by a stable sort, i.e. the item with the lower
gallery index comes first. The result is therefore deterministic; with tied scores it may
differ from implementations that use an unstable sort (IRRA's ``torch.argsort``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["recall_at_k", "map_at_r", "r_precision", "cmc_map_minp"]

# Elements of one (queries x gallery) block: bounds the float64 temporaries to ~32 MB each.
CHUNK_ELEMENTS = 1 << 22


def _check_scores(scores: Any) -> tuple[int, int]:
    if not isinstance(scores, (np.ndarray, Tensor)):
        raise TypeError(f"scores: expected a numpy array or torch tensor, found {type(scores).__name__}")
    if scores.ndim != 2:
        raise ValueError(f"scores: expected shape (Q, G), found {tuple(scores.shape)}")
    num_queries, num_gallery = scores.shape
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(
            f"scores: need at least one query and one gallery item, found shape {tuple(scores.shape)}"
        )
    return int(num_queries), int(num_gallery)


def _to_torch(x: Any, device: torch.device | None = None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t if device is None else t.to(device)


def _scores_chunk(scores: Any, start: int, stop: int) -> Tensor:
    chunk = _to_torch(scores[start:stop])
    if not chunk.is_floating_point():
        chunk = chunk.to(torch.float64)
    elif chunk.dtype in (torch.float16, torch.bfloat16):
        chunk = chunk.float()
    return chunk


def _resolve_chunk_size(chunk_size: int | None, num_gallery: int) -> int:
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // num_gallery)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, found {chunk_size}")
    return int(chunk_size)


def _sorted_relevance(
    scores: Any,
    relevant_rows: Callable[[int, int, torch.device], Tensor],
    chunk_size: int | None,
) -> Iterator[Tensor]:
    """Yield, per chunk of queries, the relevance flags in ranked order: (chunk, G) bool."""
    num_queries, num_gallery = _check_scores(scores)
    chunk_size = _resolve_chunk_size(chunk_size, num_gallery)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        chunk = _scores_chunk(scores, start, stop)
        order = torch.sort(chunk, dim=1, descending=True, stable=True).indices
        relevant = relevant_rows(start, stop, chunk.device)
        yield torch.gather(relevant, 1, order)


def _relevance_from_matrix(scores: Any, relevant: Any) -> Callable[[int, int, torch.device], Tensor]:
    num_queries, num_gallery = _check_scores(scores)
    if not isinstance(relevant, (np.ndarray, Tensor)):
        raise TypeError(f"relevant: expected a numpy array or torch tensor, found {type(relevant).__name__}")
    if tuple(relevant.shape) != (num_queries, num_gallery):
        raise ValueError(
            f"relevant: expected shape ({num_queries}, {num_gallery}) like scores, found {tuple(relevant.shape)}"
        )
    counts = np.zeros(num_queries, dtype=np.int64)
    step = _resolve_chunk_size(None, num_gallery)
    for start in range(0, num_queries, step):
        block = _to_torch(relevant[start : start + step]).to(torch.bool)
        counts[start : start + block.shape[0]] = block.sum(dim=1).cpu().numpy()
    _require_relevant(counts)

    def rows(start: int, stop: int, device: torch.device) -> Tensor:
        return _to_torch(relevant[start:stop], device).to(torch.bool)

    return rows


def _require_relevant(counts: np.ndarray) -> None:
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(
            f"{missing.size} of {counts.size} queries have no relevant gallery item "
            f"(first query indices: {missing[:10].tolist()}); every query needs at least one"
        )


def recall_at_k(
    scores: Any,
    relevant: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Recall@K in percent: the share of queries with at least one relevant item in the top K.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool, relevant[q, g] is True when gallery item g answers query q.
        ks: the cut-offs K (a K larger than G counts every query as a hit).
        chunk_size: queries processed at once (memory ~ chunk_size x G); None picks one from G.

    Returns:
        {K: recall in percent} for each K in ``ks``.

    Raises:
        ValueError: if a query has no relevant item (the message says how many).

    Example:
        >>> import numpy as np
        >>> recall_at_k(np.array([[0.9, 0.1], [0.8, 0.2]]), np.eye(2, dtype=bool), ks=(1, 2))
        {1: 50.0, 2: 100.0}
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive cut-offs, found {ks}")
    rows = _relevance_from_matrix(scores, relevant)
    hits = np.zeros(len(ks), dtype=np.int64)
    num_queries = 0
    for ranked in _sorted_relevance(scores, rows, chunk_size):
        first_hit = ranked.to(torch.uint8).argmax(dim=1)  # every row has a relevant item
        for index, k in enumerate(ks):
            hits[index] += int((first_hit < k).sum())
        num_queries += ranked.shape[0]
    return {k: 100.0 * float(hits[index]) / num_queries for index, k in enumerate(ks)}


def _map_and_rprec_chunk(ranked: Tensor) -> tuple[Tensor, Tensor]:
    """Per query mAP@R and R-Precision (fractions, float64) for one chunk of ranked relevance."""
    ranked_f = ranked.to(torch.float64)
    num_relevant = ranked_f.sum(dim=1, keepdim=True)
    positions = torch.arange(1, ranked.shape[1] + 1, device=ranked.device, dtype=torch.float64)
    within_r = positions.unsqueeze(0) <= num_relevant
    hits_in_r = ranked_f * within_r
    precision = hits_in_r.cumsum(dim=1) / positions
    average_precision = (precision * hits_in_r).sum(dim=1) / num_relevant.squeeze(1)
    r_prec = hits_in_r.sum(dim=1) / num_relevant.squeeze(1)
    return average_precision, r_prec


def map_at_r(scores: Any, relevant: Any, *, chunk_size: int | None = None) -> float:
    """mAP@R in percent (Musgrave et al., 2020; ECCV Caption's main metric).

    For a query with R relevant items: AP@R = (1/R) * sum_{i<=R, item i relevant} P@i, where
    P@i is the precision in the top i; the result is the mean over queries.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool relevance.
        chunk_size: queries processed at once; None picks one from G.

    Example:
        >>> import numpy as np
        >>> rel = np.array([[True, False, True]])
        >>> map_at_r(np.array([[0.9, 0.8, 0.1]]), rel)  # P@1 = 1, position 2 is not relevant
        50.0
    """
    rows = _relevance_from_matrix(scores, relevant)
    total, count = 0.0, 0
    for ranked in _sorted_relevance(scores, rows, chunk_size):
        average_precision, _ = _map_and_rprec_chunk(ranked)
        total += float(average_precision.sum())
        count += ranked.shape[0]
    return 100.0 * total / count


def r_precision(scores: Any, relevant: Any, *, chunk_size: int | None = None) -> float:
    """R-Precision in percent: the fraction of relevant items among the top R, R = #relevant.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool relevance.
        chunk_size: queries processed at once; None picks one from G.

    Example:
        >>> import numpy as np
        >>> r_precision(np.array([[0.9, 0.8, 0.1]]), np.array([[True, False, True]]))
        50.0
    """
    rows = _relevance_from_matrix(scores, relevant)
    total, count = 0.0, 0
    for ranked in _sorted_relevance(scores, rows, chunk_size):
        _, r_prec = _map_and_rprec_chunk(ranked)
        total += float(r_prec.sum())
        count += ranked.shape[0]
    return 100.0 * total / count


def _label_codes(
    query_labels: Any, gallery_labels: Any, num_queries: int, num_gallery: int
) -> tuple[Tensor, Tensor]:
    """Map labels of any type (ints, strings) to shared integer codes."""
    query = np.asarray(query_labels.cpu() if isinstance(query_labels, Tensor) else query_labels)
    gallery = np.asarray(gallery_labels.cpu() if isinstance(gallery_labels, Tensor) else gallery_labels)
    if query.shape != (num_queries,):
        raise ValueError(
            f"query_labels: expected shape ({num_queries},) like scores' rows, found {query.shape}"
        )
    if gallery.shape != (num_gallery,):
        raise ValueError(
            f"gallery_labels: expected shape ({num_gallery},) like scores' columns, found {gallery.shape}"
        )
    _, codes = np.unique(np.concatenate([query, gallery]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return torch.from_numpy(codes[:num_queries]), torch.from_numpy(codes[num_queries:])


def cmc_map_minp(
    scores: Any,
    query_labels: Any,
    gallery_labels: Any,
    max_rank: int = 10,
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Person-retrieval metrics as IRRA's ``rank``: CMC Rank-K, mAP and mINP, in percent.

    A gallery item is a hit when its label equals the query's label. Over the full ranking:
    CMC@K = share of queries with a hit in the top K; AP = mean over the hit positions p of
    (#hits in the top p) / p; INP = (#hits) / (1-based rank of the last hit).

    Args:
        scores: (Q, G) similarity scores, higher is better.
        query_labels: (Q,) identity labels of the queries (ints or strings).
        gallery_labels: (G,) identity labels of the gallery items.
        max_rank: length of the CMC curve; reported cut-offs are 1, 5, 10 up to max_rank.
        chunk_size: queries processed at once; None picks one from G.

    Returns:
        {"R@1", "R@5", "R@10" (those <= max_rank), "mAP", "mINP"}.

    Raises:
        ValueError: if a query has no gallery item with its label (the message says how many).

    Example:
        >>> import numpy as np
        >>> out = cmc_map_minp(np.array([[0.2, 0.9, 0.5]]), ["a"], ["a", "b", "a"], max_rank=3)
        >>> out["R@1"], round(out["mAP"], 2), round(out["mINP"], 2)
        (0.0, 58.33, 66.67)
    """
    num_queries, num_gallery = _check_scores(scores)
    if max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, found {max_rank}")
    query_codes, gallery_codes = _label_codes(query_labels, gallery_labels, num_queries, num_gallery)
    counts = np.bincount(gallery_codes.numpy(), minlength=int(query_codes.max()) + 1)[query_codes.numpy()]
    _require_relevant(counts)

    def rows(start: int, stop: int, device: torch.device) -> Tensor:
        return query_codes[start:stop, None].to(device) == gallery_codes[None, :].to(device)

    curve_length = min(max_rank, num_gallery)
    cmc_hits = np.zeros(curve_length, dtype=np.int64)
    ap_total, inp_total = 0.0, 0.0
    for ranked in _sorted_relevance(scores, rows, chunk_size):
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
    result: dict[str, float] = {}
    for k in (1, 5, 10):
        if k <= max_rank:
            # Beyond the gallery size every query has found all of its hits.
            result[f"R@{k}"] = float(cmc[min(k, curve_length) - 1])
    result["mAP"] = 100.0 * ap_total / num_queries
    result["mINP"] = 100.0 * inp_total / num_queries
    return result
