"""Reference-based refinement of a retrieval ranking (MMRef's retrieval-time step, as softref fills it in).

The paper states that a reference-based similarity computed through the object references
refines the initial text-to-image ranking; how, it does not say in what could be read. softref
decides (docs/method/mmref.md):

1. Profile. An embedding ``e`` is described by its similarity to M references ``R`` (rows of
   a (M, D) matrix in the same space as ``e``): keep the k most cosine-similar references and
   weight them by a softmax with temperature tau::

       p(e)_j = exp(cos(e, R_j) / tau) / sum_{l in top_k(e)} exp(cos(e, R_l) / tau)   for j in top_k(e)
       p(e)_j = 0                                                                      otherwise

   Each profile has exactly k non-zero entries summing to 1.
2. Reference similarity. ``S_ref(q, g) = cos(p(q), p(g))``, in [0, 1].
3. Re-ranking. For each query, only its top-K gallery items under the initial scores ``S`` are
   re-scored, by ``S + lambda * S_ref``; every other item keeps its initial order and is
   placed below all of them. ``lambda = 0`` reproduces the initial ranking exactly.

Nothing here is tied to a modality or a model: the caller passes query and gallery
embeddings and the reference matrix of one space (the student's, for evaluation). Work is
chunked over rows so that memory stays near ``CHUNK_ELEMENTS`` floats per temporary,
whatever the numbers of queries, gallery items and references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CHUNK_ELEMENTS",
    "Profiles",
    "top_reference_profiles",
    "reference_profiles",
    "profile_similarity",
    "refine_scores",
]

# Elements of one (rows x columns) temporary: ~16 MB in float32, ~32 MB in float64.
CHUNK_ELEMENTS = 1 << 22


def _tensor(x: Any, what: str, device: torch.device | None = None) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"{what}: expected a numpy array or torch tensor, found {type(x).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d matrix, found shape {tuple(t.shape)}")
    return t if device is None else t.to(device)


def _unit_rows(x: Tensor) -> Tensor:
    x = x.float() if x.dtype != torch.float64 else x
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Profiles:
    """Reference profiles stored sparsely: the k non-zero entries of each row.

    ``indices`` (N, k) int64: the references, most similar first; ``weights`` (N, k): their
    softmax weights (each row sums to 1); ``num_references``: M, the width of a dense profile.
    """

    indices: Tensor
    weights: Tensor
    num_references: int

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def dense(self) -> Tensor:
        """The (N, M) profile matrix, zero outside each row's k references."""
        out = torch.zeros(len(self), self.num_references, dtype=self.weights.dtype, device=self.weights.device)
        return out.scatter_(1, self.indices, self.weights)

    def unit_weights(self) -> Tensor:
        """``weights`` divided by the L2 norm of each row (so profile cosines are dot products)."""
        return self.weights / self.weights.norm(dim=1, keepdim=True)


def _check_profile_args(num_references: int, k: int, tau: float) -> None:
    if not 1 <= int(k) <= num_references:
        raise ValueError(f"k must be in [1, {num_references}] (the number of references), got {k}")
    if not (math.isfinite(float(tau)) and float(tau) > 0):
        raise ValueError(f"tau must be a positive finite number, got {tau}")


def _chunk_rows(width: int, chunk_size: int | None) -> int:
    """Rows per block: ``chunk_size``, or as many rows of ``width`` as CHUNK_ELEMENTS holds."""
    step = max(1, CHUNK_ELEMENTS // max(1, width)) if chunk_size is None else int(chunk_size)
    if step < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return step


def top_reference_profiles(
    emb: Any,
    references: Any,
    k: int,
    tau: float,
    *,
    chunk_size: int | None = None,
) -> Profiles:
    """Sparse reference profiles of the rows of ``emb`` (see the module docstring, step 1).

    Args:
        emb: (N, D) embeddings of any norm (numpy or torch, any device).
        references: (M, D) references in the same space, any norm.
        k: references kept per row (1 <= k <= M).
        tau: softmax temperature over the k cosines.
        chunk_size: rows per block (memory ~ chunk_size x M); None picks one from M.

    Returns:
        :class:`Profiles` on the device of ``emb``, weights in float32 (float64 if ``emb`` is).
    """
    e = _tensor(emb, "emb")
    r = _tensor(references, "references", e.device)
    if e.shape[1] != r.shape[1]:
        raise ValueError(f"emb has dim {e.shape[1]} but references have dim {r.shape[1]}; expected equal")
    num_refs = int(r.shape[0])
    _check_profile_args(num_refs, k, tau)
    dtype = torch.float64 if e.dtype == torch.float64 else torch.float32
    r = _unit_rows(r).to(dtype)
    step = _chunk_rows(num_refs, chunk_size)
    indices = torch.empty(e.shape[0], int(k), dtype=torch.int64, device=e.device)
    weights = torch.empty(e.shape[0], int(k), dtype=dtype, device=e.device)
    for start in range(0, e.shape[0], step):
        stop = min(e.shape[0], start + step)
        cos = _unit_rows(e[start:stop]).to(dtype) @ r.T
        top = torch.topk(cos, int(k), dim=1, largest=True, sorted=True)
        indices[start:stop] = top.indices
        weights[start:stop] = torch.softmax(top.values / float(tau), dim=1)
    return Profiles(indices=indices, weights=weights, num_references=num_refs)


def reference_profiles(emb: Any, references: Any, k: int, tau: float) -> Tensor:
    """Dense (N, M) reference profiles: top-k references by cosine, softmax(cos / tau), 0 elsewhere.

    For large N x M use :func:`top_reference_profiles` (the same rows, stored sparsely).

    Example:
        >>> import torch
        >>> refs = torch.eye(3)
        >>> p = reference_profiles(torch.tensor([[1.0, 0.5, 0.0]]), refs, k=2, tau=1.0)
        >>> (p > 0).sum().item(), round(p.sum().item(), 6)
        (2, 1.0)
    """
    return top_reference_profiles(emb, references, k, tau).dense()


def profile_similarity(query: Profiles, gallery: Profiles) -> Tensor:
    """Full (Q, G) matrix of profile cosines ``cos(p(q), p(g))`` (for inspection and small sets)."""
    if query.num_references != gallery.num_references:
        raise ValueError(
            f"profiles over different reference sets: {query.num_references} vs {gallery.num_references} references"
        )
    q = Profiles(query.indices, query.unit_weights(), query.num_references).dense()
    g = Profiles(gallery.indices, gallery.unit_weights(), gallery.num_references).dense()
    return q @ g.T.to(q.dtype)


def _stable_top_k(s: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """Per row, the first ``top`` items of a stable descending sort, and the best score of the rest.

    Returns ``(positions, rest_max)``: (c, top) gallery positions and (c,) the highest score
    outside them (``-inf`` when ``top`` covers the row). Ties at the K-th value go to the lower
    gallery index, as in softref's metrics; only rows with such a tie pay for a full pass.
    """
    c, num = s.shape
    if top >= num:
        positions = torch.arange(num, device=s.device).expand(c, num)
        return positions, torch.full((c,), -math.inf, dtype=torch.float64, device=s.device)
    values, indices = torch.topk(s, top + 1, dim=1, largest=True, sorted=True)
    kth, rest_max = values[:, top - 1], values[:, top]
    positions = indices[:, :top]
    tied = kth == rest_max  # the cut falls inside a run of equal scores: choose by index
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        sub, bound = s[rows], kth[rows, None]
        greater, equal = sub > bound, sub == bound
        need = top - greater.sum(dim=1, keepdim=True)
        mask = greater | (equal & (equal.cumsum(dim=1) <= need))
        positions = positions.clone()
        positions[rows] = mask.nonzero()[:, 1].view(len(rows), top)
    return positions, rest_max.to(torch.float64)


def refine_scores(
    scores: Any,
    query_emb: Any,
    gallery_emb: Any,
    references: Any,
    *,
    k: int,
    tau: float,
    top_k: int,
    lam: float,
    chunk_size: int | None = None,
) -> Any:
    """Re-rank each query's top-K gallery items by ``S + lam * S_ref`` (module docstring, step 3).

    Args:
        scores: (Q, G) initial scores S, higher is better (numpy or torch, any device).
        query_emb: (Q, D) query embeddings; gallery_emb: (G, D) gallery embeddings.
        references: (M, D) references in the same space as the embeddings.
        k: references per profile; tau: profile softmax temperature.
        top_k: K, the gallery items re-ranked per query (K >= G re-ranks all).
        lam: weight of the reference similarity; 0 leaves the ranking as it is.
        chunk_size: queries per block; None picks one from G, M and K x k.

    Returns:
        (Q, G) refined scores in float64, a numpy array if ``scores`` is one, else a tensor on
        its device. Each query's top-K items hold ``S + lam * S_ref``; the others hold ``S``
        shifted down by a per-query constant so they rank, in their initial order, below all
        re-ranked items. Sorting the result with a stable descending sort gives the refined
        ranking; for ``lam = 0`` it is the initial ranking (exactly, for float32 scores).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> q, g, r = rng.normal(size=(4, 8)), rng.normal(size=(6, 8)), rng.normal(size=(5, 8))
        >>> s = (q @ g.T).astype(np.float32)
        >>> out = refine_scores(s, q, g, r, k=3, tau=0.1, top_k=3, lam=0.0)
        >>> bool((np.argsort(-out, axis=1, kind="stable") == np.argsort(-s, axis=1, kind="stable")).all())
        True
    """
    s_all, q, g, r = _refine_inputs(scores, query_emb, gallery_emb, references, k, tau, top_k, lam)
    num_queries, num_gallery = (int(n) for n in s_all.shape)
    top = min(int(top_k), num_gallery)

    gallery = top_reference_profiles(g, r, k, tau)
    queries = top_reference_profiles(q, r, k, tau)
    g_idx, g_w = gallery.indices, gallery.unit_weights().to(torch.float64)
    q_idx, q_w = queries.indices, queries.unit_weights().to(torch.float64)
    num_refs = gallery.num_references

    step = _chunk_rows(max(num_gallery, num_refs, top * int(k)), chunk_size)
    out = torch.empty(num_queries, num_gallery, dtype=torch.float64, device=s_all.device)
    for start in range(0, num_queries, step):
        stop = min(num_queries, start + step)
        out[start:stop] = _refine_block(
            s_all[start:stop], start, q_idx[start:stop], q_w[start:stop], g_idx, g_w, num_refs, top, lam
        )
    if isinstance(scores, np.ndarray):
        return out.cpu().numpy()
    return out


def _refine_inputs(
    scores: Any, query_emb: Any, gallery_emb: Any, references: Any, k: int, tau: float, top_k: int, lam: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The arguments of :func:`refine_scores` checked, as matrices on the device of ``scores``."""
    s_all = _tensor(scores, "scores")
    device = s_all.device
    num_queries, num_gallery = (int(n) for n in s_all.shape)
    q = _tensor(query_emb, "query_emb", device)
    g = _tensor(gallery_emb, "gallery_emb", device)
    r = _tensor(references, "references", device)
    if q.shape[0] != num_queries or g.shape[0] != num_gallery:
        raise ValueError(
            f"scores have shape {(num_queries, num_gallery)} but query_emb has {q.shape[0]} rows "
            f"and gallery_emb {g.shape[0]}; expected one row per query and per gallery item"
        )
    if not 1 <= int(top_k):
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not math.isfinite(float(lam)):
        raise ValueError(f"lam must be finite, got {lam}")
    _check_profile_args(int(r.shape[0]), k, tau)
    return s_all, q, g, r


def _refine_block(
    s: Tensor,
    start: int,
    q_idx: Tensor,
    q_w: Tensor,
    g_idx: Tensor,
    g_w: Tensor,
    num_refs: int,
    top: int,
    lam: float,
) -> Tensor:
    """Refined float64 scores of the queries ``start : start + len(s)``, whose initial scores
    are ``s`` and profiles ``(q_idx, q_w)``; ``(g_idx, g_w)`` are the whole gallery's."""
    c, num_gallery = s.shape
    device = s.device
    if s.dtype != torch.float64:
        s = s.float()  # exact for half precision and for float32 itself
    low, high = torch.aminmax(s, dim=1)  # NaN propagates, inf shows at an end
    finite = torch.isfinite(low) & torch.isfinite(high)
    if not bool(finite.all()):
        row = start + int(torch.nonzero(~finite)[0])
        raise ValueError(f"scores: row {row} holds NaN/inf; expected finite scores")
    positions, rest_max = _stable_top_k(s, top)
    # S_ref of the selected pairs: the query's dense profile read at the gallery profiles' entries.
    q_dense = torch.zeros(c, num_refs, dtype=torch.float64, device=device)
    q_dense.scatter_(1, q_idx, q_w)
    sel_idx = g_idx[positions]  # (c, K, k)
    s_ref = (torch.gather(q_dense, 1, sel_idx.reshape(c, -1)).view(c, top, -1) * g_w[positions]).sum(dim=2)
    refined = torch.gather(s, 1, positions).to(torch.float64) + float(lam) * s_ref
    block = s.to(torch.float64, copy=True)  # never write into the caller's scores
    if top < num_gallery:
        # A monotone shift: the rest keep their order and end at least 1 below the re-ranked.
        block += (refined.amin(dim=1) - rest_max - 1.0)[:, None]
    block.scatter_(1, positions, refined)
    return block
