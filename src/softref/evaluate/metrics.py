"""Retrieval metrics from a score matrix: Recall@K, mAP@R, R-Precision, and CMC / mAP / mINP.

All functions take ``scores`` (Q, G), higher is better, as a numpy array or a torch tensor
(any device: the work runs where the tensor lives), and return percentages as Python floats.
``relevant`` is a (Q, G) bool matrix or, when each query has few relevant items, the pair list
``(query_index, gallery_index)`` of two 1-D integer arrays. Memory stays bounded by one block of
scores (``chunk_size x G``; the default block holds about 4M scores) and its temporaries, plus
a few numbers per relevant pair; 25k captions x 5k images is fine.

Ties: items with equal scores are ranked as a stable descending sort ranks them, i.e. the item
with the lower gallery index comes first (NaN, as in ``torch.sort``, above every number). The
result is therefore deterministic; with tied scores it may differ from implementations that use
an unstable sort (IRRA's ``torch.argsort``).

No row is sorted in full. The 0-based position of gallery item j in query q's ranking is

    rank(q, j) = #{i : s[q, i] > s[q, j]} + #{i < j : s[q, i] == s[q, j]},

exactly its position in the stable sort, and every metric needs only the ranks of the relevant
items (the metrics that stop at K or R only those below K or R). Two exact ways are used:

- counting: a pass over blocks of whole rows, which ranks the rows and the columns (the
  transposed direction) in the same pass. Per score and target it counts the items above the
  target and those equal to it (two comparisons written as 0/1 floats and summed: on the CPU
  several times faster than a bool mask and an integer count). A target tied with no other
  item has the rank "items above"; one tied with another item, or in a line holding a NaN or
  an infinity (a line whose sum is not finite), is ranked again from its line by the equation
  above. The targets are the best-ranked relevant item of each query for Recall@K, every
  relevant item for mAP@R and R-Precision when no query has more than ``_COUNT_SLOTS``, and
  for :func:`cmc_map_minp`;
- exact top-k lists otherwise (mAP@R, R-Precision with many relevant items; Recall@K when a
  dense relevance has too many to list): ``torch.topk`` of k + 1 items, re-ordered by (score
  descending, index ascending); a row whose (k+1)-th score ties its k-th is completed with its
  lowest-index tied items, found by one scan of that row.

:func:`cmc_map_minp` ranks all hits, so it sorts the rows of queries with more than
``_SORT_SLOTS`` hits, where counting would cost more than the sort.

Per-query values: :func:`first_relevant_ranks` (and ``_both_ways``), whose share below K is
Recall@K (:func:`recall_from_ranks`), :func:`map_r_precision_r1_per_query` (and ``_both_ways``)
and :func:`cmc_map_minp_per_query` return, per query, what the means above are made of, from the
same passes; their mean is the metric (to rounding). :mod:`softref.evaluate.intervals` resamples
them for confidence intervals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "recall_at_k",
    "recall_at_k_both_ways",
    "map_at_r",
    "r_precision",
    "map_r_precision_r1",
    "map_r_precision_r1_both_ways",
    "cmc_map_minp",
    "QueryValues",
    "first_relevant_ranks",
    "first_relevant_ranks_both_ways",
    "recall_from_ranks",
    "map_r_precision_r1_per_query",
    "map_r_precision_r1_per_query_both_ways",
    "cmc_map_minp_per_query",
]

# Elements of one (queries x gallery) block: bounds the temporaries to ~32 MB each.
CHUNK_ELEMENTS = 1 << 22
# Scores per block of the counting pass (whole rows): few operations (each on all threads) and
# temporaries of a few MB.
_BLOCK_ELEMENTS = 1 << 20
# The same on an accelerator, where each block costs a dozen kernel launches and a host sync
# whatever its size: blocks of a chunk (temporaries ~24 MB), a quarter of the launches. The
# ranks are counts, so the block size never changes a result.
_DEVICE_BLOCK_ELEMENTS = CHUNK_ELEMENTS
# Recall@K, mAP@R, R-P: count ranks up to this many relevant items per query, else top-k lists.
_COUNT_SLOTS = 2
# Full-ranking metrics: a query with more relevant items than this is ranked by a stable sort.
# Counting costs a pass per hit slot, the sort the same whatever the hits: bench/cmc_switch.py
# (2 threads, AVX-512) puts the break-even at ~134 hits per query for 6000 x 3000 scores and ~212
# for 3000 x 20000 (the sort's cost grows with the gallery). Below it counting is up to 10x faster.
_SORT_SLOTS = 120
# A dense relevance matrix with more relevant pairs than this is not listed as pairs.
_PAIR_LIMIT = 1 << 22

_ROW, _COL = "row", "col"


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


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


def _numpy_view(array: np.ndarray) -> Tensor:
    """A torch view of a numpy array (a contiguous copy only where torch cannot view it)."""
    try:
        return torch.from_numpy(array)
    except (TypeError, ValueError):  # negative strides, non-native byte order
        return torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))


def _layout(scores: Any) -> tuple[Tensor, bool]:
    """``(matrix, transposed)``: a torch view of ``scores`` whose rows are contiguous where possible.

    A transposed view (``scores.T`` of a row-major matrix) comes back as the row-major matrix
    with ``transposed=True``: its queries are then the matrix's columns, read in row blocks.
    """
    _check_scores(scores)
    if isinstance(scores, np.ndarray):
        if not scores.flags.c_contiguous and scores.flags.f_contiguous:
            return _numpy_view(scores.T), True
        matrix = _numpy_view(scores)
    else:
        matrix = scores.detach()
    if matrix.stride(1) != 1 and matrix.stride(0) == 1 and matrix.shape[1] > 1:
        return matrix.T, True
    return matrix, False


def _as_float(t: Tensor) -> Tensor:
    """Scores as ranked: integers as float64, float16 / bfloat16 as float32 (both exact)."""
    if not t.is_floating_point():
        return t.to(torch.float64)
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _resolve_chunk_size(chunk_size: int | None, num_gallery: int) -> int:
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // num_gallery)
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, found {chunk_size}")
    return int(chunk_size)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive cut-offs, found {ks}")
    return ks


# ---------------------------------------------------------------------------------------------
# Relevance
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Relevance:
    """The relevant (row, column) pairs of the physical matrix, and how to test one.

    ``rows`` / ``cols`` (on the scores' device, sorted by ``rows * num_cols + cols`` = ``keys``)
    are None when a dense matrix has too many relevant pairs to list; ``dense`` (rows x columns
    of the physical matrix) then answers membership.
    """

    num_rows: int
    num_cols: int
    row_counts: np.ndarray
    col_counts: np.ndarray
    rows: Tensor | None = None
    cols: Tensor | None = None
    keys: Tensor | None = None
    dense: Tensor | None = None


def _from_pairs(rows: Tensor, cols: Tensor, num_rows: int, num_cols: int, device: torch.device,
                dense: Tensor | None = None) -> _Relevance:
    keys = torch.unique((rows.to(torch.int64) * num_cols + cols.to(torch.int64)).to(device))  # sorted
    rows, cols = keys // num_cols, keys % num_cols
    keys_cpu = keys.cpu()
    return _Relevance(
        num_rows=num_rows,
        num_cols=num_cols,
        row_counts=np.bincount((keys_cpu // num_cols).numpy(), minlength=num_rows).astype(np.int64),
        col_counts=np.bincount((keys_cpu % num_cols).numpy(), minlength=num_cols).astype(np.int64),
        rows=rows,
        cols=cols,
        keys=keys,
        dense=dense,
    )


def _index_array(x: Any, what: str, size: int) -> Tensor:
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D integer array, found shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what}: expected integer indices, found dtype {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= size):
        raise ValueError(
            f"{what}: expected indices in [0, {size}), found values from {int(t.min())} to {int(t.max())}"
        )
    return t.to(torch.int64)


def _nonzero(block: Tensor) -> Tensor:
    """(n, 2) int64 CPU indices of the nonzero entries of a 2-D block, row-major order."""
    if block.device.type == "cpu" and block.dtype == torch.bool and block.is_contiguous():
        # numpy's flat nonzero of a bool array is ~7x faster than torch.nonzero on the CPU.
        flat = torch.from_numpy(np.flatnonzero(block.numpy()))
        return torch.stack([flat // block.shape[1], flat % block.shape[1]], dim=1)
    return block.nonzero().cpu()


def _relevance(relevant: Any, shape: tuple[int, int], matrix: Tensor, transposed: bool) -> _Relevance:
    """Relevance of the logical (Q, G) ``scores`` in the coordinates of the physical ``matrix``."""
    num_queries, num_gallery = shape
    device = matrix.device
    num_rows, num_cols = matrix.shape
    if isinstance(relevant, tuple) and len(relevant) == 2:
        queries = _index_array(relevant[0], "relevant[0] (query indices)", num_queries)
        gallery = _index_array(relevant[1], "relevant[1] (gallery indices)", num_gallery)
        if queries.numel() != gallery.numel():
            raise ValueError(
                f"relevant: expected two index arrays of equal length (query, gallery), found lengths "
                f"{queries.numel()} and {gallery.numel()}"
            )
        rows, cols = (gallery, queries) if transposed else (queries, gallery)
        return _from_pairs(rows, cols, num_rows, num_cols, device)
    if not isinstance(relevant, (np.ndarray, Tensor)):
        raise TypeError(
            "relevant: expected a (Q, G) numpy array or torch tensor, or a (query_index, gallery_index) "
            f"pair of index arrays, found {type(relevant).__name__}"
        )
    if tuple(relevant.shape) != (num_queries, num_gallery):
        raise ValueError(
            f"relevant: expected shape ({num_queries}, {num_gallery}) like scores, found {tuple(relevant.shape)}"
        )
    dense = _numpy_view(relevant) if isinstance(relevant, np.ndarray) else relevant.detach()
    # One pass lists the relevant pairs (and counts them) block by block.
    step = _resolve_chunk_size(None, num_gallery)
    query_counts = torch.zeros(num_queries, dtype=torch.int64)
    gallery_counts = torch.zeros(num_gallery, dtype=torch.int64)
    parts: list[Tensor] | None = []
    total = 0
    for start in range(0, num_queries, step):
        found = _nonzero(dense[start : start + step])
        found[:, 0] += start
        query_counts += torch.bincount(found[:, 0], minlength=num_queries)
        gallery_counts += torch.bincount(found[:, 1], minlength=num_gallery)
        total += found.shape[0]
        if parts is not None:
            parts.append(found)
            if total > _PAIR_LIMIT:
                parts = None
    physical_dense = dense.T if transposed else dense
    if parts is not None:
        pairs = torch.cat(parts) if parts else torch.zeros((0, 2), dtype=torch.int64)
        queries, gallery = pairs[:, 0], pairs[:, 1]
        rows, cols = (gallery, queries) if transposed else (queries, gallery)
        return _from_pairs(rows, cols, num_rows, num_cols, device, dense=physical_dense)
    row_counts, col_counts = (gallery_counts, query_counts) if transposed else (query_counts, gallery_counts)
    return _Relevance(num_rows, num_cols, row_counts.numpy(), col_counts.numpy(), dense=physical_dense)


def _require_relevant(counts: np.ndarray, transposed_direction: bool = False) -> None:
    missing = np.flatnonzero(counts == 0)
    if not missing.size:
        return
    if transposed_direction:
        raise ValueError(
            f"{missing.size} of {counts.size} columns (the queries of the transposed direction) have no "
            f"relevant row (first column indices: {missing[:10].tolist()}); every column needs at least one"
        )
    raise ValueError(
        f"{missing.size} of {counts.size} queries have no relevant gallery item "
        f"(first query indices: {missing[:10].tolist()}); every query needs at least one"
    )


def _require_axis(rel: _Relevance, axis: str, transposed: bool) -> None:
    """Every query of ``axis`` needs a relevant item; the message speaks of the logical scores."""
    counts = rel.row_counts if axis == _ROW else rel.col_counts
    logical_rows = (axis == _ROW) != transposed
    _require_relevant(counts, transposed_direction=not logical_rows)


def _is_relevant(rel: _Relevance, rows: Tensor, cols: Tensor) -> Tensor:
    """Bool tensor: is the physical pair (rows[...], cols[...]) relevant."""
    if rel.keys is not None:
        keys = rel.keys
        wanted = rows * rel.num_cols + cols
        at = torch.searchsorted(keys, wanted).clamp_(max=keys.numel() - 1)
        return keys[at] == wanted
    assert rel.dense is not None
    found = rel.dense[rows.to(rel.dense.device), cols.to(rel.dense.device)]
    return found.to(device=rows.device, dtype=torch.bool)


def _axis_counts(rel: _Relevance, axis: str) -> np.ndarray:
    return rel.row_counts if axis == _ROW else rel.col_counts


# ---------------------------------------------------------------------------------------------
# Ranks by counting
# ---------------------------------------------------------------------------------------------


def _lines(matrix: Tensor, axis: str, index: Tensor) -> Tensor:
    """The score lines (as floats) of the queries ``index`` of ``axis``: (n, items)."""
    return _as_float(matrix[index] if axis == _ROW else matrix[:, index].T)


def _slots(rel: _Relevance, matrix: Tensor, axis: str, width: int) -> tuple[Tensor, Tensor]:
    """Per query of ``axis``: the scores and indices of its first ``width`` relevant items.

    ``(scores (n, width), items (n, width))``, the relevant items in ranking order (score
    descending, NaN first, then index ascending), so their ranks increase along a row; unused
    slots hold item -1. Requires the pair list.
    """
    assert rel.rows is not None and rel.cols is not None
    values = _as_float(matrix[rel.rows, rel.cols])
    owner, other = (rel.rows, rel.cols) if axis == _ROW else (rel.cols, rel.rows)
    num_owners = rel.num_rows if axis == _ROW else rel.num_cols
    order = torch.argsort(other, stable=True)
    order = order[torch.sort(values[order], descending=True, stable=True).indices]
    order = order[torch.sort(owner[order], stable=True).indices]
    owner, other, values = owner[order], other[order], values[order]
    counts = torch.bincount(owner, minlength=num_owners)
    slot = torch.arange(owner.numel(), device=owner.device) - (counts.cumsum(0) - counts)[owner]
    keep = slot < width
    scores = torch.full((num_owners, width), torch.inf, dtype=values.dtype, device=values.device)
    items = torch.full((num_owners, width), -1, dtype=torch.int64, device=values.device)
    scores[owner[keep], slot[keep]] = values[keep]
    items[owner[keep], slot[keep]] = other[keep]
    return scores, items


def _flag_dtype(dtype: torch.dtype, height: int, width: int) -> torch.dtype:
    """The float type of the 0/1 flags summed over a (height, width) block of ``dtype`` scores:
    the scores' own where every partial sum (at most max(height, width) ones) is exact, else
    float64."""
    exact = round(2 / torch.finfo(dtype).eps)  # 2**24 for float32: every integer below is exact
    return dtype if max(height, width) < exact else torch.float64


def _count_targets(block: Tensor, scores: Tensor, flags: Tensor, above: Tensor, ties: Tensor, dim: int) -> None:
    """Add to ``above`` / ``ties`` the scores of ``block`` (h, G) above / equal to each target
    (``scores``), counted along ``dim``: 1 for row targets (``scores`` (h, P), each against its
    row), 0 for column targets (``scores`` (G, P), each against the block's part of its column).
    ``flags`` is a scratch buffer shaped like the block; a target counts itself among its ties."""
    for slot in range(scores.shape[1]):
        target = scores[:, slot : slot + 1] if dim == 1 else scores[:, slot]
        above[:, slot] += torch.gt(block, target, out=flags).sum(dim=dim)
        ties[:, slot] += torch.eq(block, target, out=flags).sum(dim=dim)


def _exact_ranks(lines: Tensor, scores: Tensor, items: Tensor) -> Tensor:
    """Rank of item ``items[n]`` in line ``lines[n]`` whose score is ``scores[n]``, any values."""
    nan_target = torch.isnan(scores).unsqueeze(1)
    nan_line = torch.isnan(lines)
    above = (lines > scores.unsqueeze(1)) | (nan_line & ~nan_target)
    tied = (lines == scores.unsqueeze(1)) | (nan_line & nan_target)
    before = torch.arange(lines.shape[1], device=lines.device) < items.unsqueeze(1)
    return torch.count_nonzero(above, dim=1) + torch.count_nonzero(tied & before, dim=1)


def _block_widths(valid: np.ndarray, step: int) -> list[int]:
    """Per block of ``step`` queries, the most valid slots of any of its queries."""
    return [int(valid[start : start + step].max(initial=0)) for start in range(0, valid.size, step)]


def _count_ranks(
    matrix: Tensor,
    row_slots: tuple[Tensor, Tensor, np.ndarray] | None,
    col_slots: tuple[Tensor, Tensor, np.ndarray] | None,
    chunk_size: int | None,
) -> tuple[Tensor | None, Tensor | None]:
    """Ranks of the slot targets of the rows and of the columns of ``matrix`` in one pass over
    blocks of whole rows.

    ``*_slots`` = ``(scores, items, valid)`` from :func:`_slots` plus each query's number of
    used slots; returns int64 ranks shaped like the slots (meaningless where unused). A target's
    rank is the number of items above it when it ties no other item and its line is finite;
    the other targets are ranked from their lines (:func:`_exact_ranks`).
    """
    num_rows, num_cols = matrix.shape
    # Blocks of ~_BLOCK_ELEMENTS scores (_DEVICE_BLOCK_ELEMENTS off the CPU; see there); never
    # more rows than chunk_size.
    elements = _BLOCK_ELEMENTS if matrix.device.type == "cpu" else _DEVICE_BLOCK_ELEMENTS
    height = max(1, elements // num_cols)
    if chunk_size is not None:
        height = min(height, chunk_size)
    height = min(height, num_rows)
    dtype = _flag_dtype(_as_float(matrix[:1, :1]).dtype, height, num_cols)
    flags = torch.empty((height, num_cols), dtype=dtype, device=matrix.device)
    prepared = []
    for slots, length in ((row_slots, num_rows), (col_slots, num_cols)):
        if slots is None:
            prepared.append(None)
            continue
        scores, items, _ = slots
        # Columns add up over blocks: float64 holds every count exactly.
        above = torch.zeros(items.shape, dtype=torch.float64, device=items.device)
        ties = torch.zeros(items.shape, dtype=torch.float64, device=items.device)
        odd_line = torch.zeros(length, dtype=torch.bool, device=items.device)
        prepared.append((scores, items, above, ties, odd_line))
    row_part, col_part = prepared
    # Slots in use: per block of rows for the row queries, for all columns at once.
    row_widths = _block_widths(row_slots[2], height) if row_slots is not None else []
    col_used = int(col_slots[2].max(initial=0)) if col_slots is not None else 0
    for index, r0 in enumerate(range(0, num_rows, height)):
        r1 = min(num_rows, r0 + height)
        block = _as_float(matrix[r0:r1])
        scratch = flags[: r1 - r0]
        if row_part is not None and row_widths[index]:
            scores, _, above, ties, odd_line = row_part
            used = slice(0, row_widths[index])
            _count_targets(block, scores[r0:r1, used], scratch, above[r0:r1, used], ties[r0:r1, used], dim=1)
            odd_line[r0:r1] = ~torch.isfinite(block.sum(dim=1))
        if col_used:
            scores, _, above, ties, odd_line = col_part
            used = slice(0, col_used)
            _count_targets(block, scores[:, used], scratch, above[:, used], ties[:, used], dim=0)
            odd_line |= ~torch.isfinite(block.sum(dim=0))
    out = []
    for axis, part in ((_ROW, row_part), (_COL, col_part)):
        if part is None:
            out.append(None)
            continue
        scores, items, above, ties, odd_line = part
        ranks = above.to(torch.int64)
        again = (items >= 0) & ((ties != 1) | odd_line.unsqueeze(1))
        query, slot = again.nonzero(as_tuple=True)
        length = num_cols if axis == _ROW else num_rows
        step = max(1, CHUNK_ELEMENTS // length)
        for start in range(0, query.numel(), step):
            q, s = query[start : start + step], slot[start : start + step]
            ranks[q, s] = _exact_ranks(_lines(matrix, axis, q), scores[q, s], items[q, s])
        out.append(ranks)
    return out[0], out[1]


def _counted_ranks(rel: _Relevance, matrix: Tensor, axes: Sequence[str], width: dict[str, int],
                   chunk_size: int | None) -> dict[str, Tensor]:
    """Sorted ranks of the first ``width[axis]`` relevant items of every query of each axis,
    padded with rows + columns (a rank no item has) where a query has fewer."""
    slots: dict[str, tuple[Tensor, Tensor, np.ndarray]] = {}
    for axis in axes:
        scores, items = _slots(rel, matrix, axis, width[axis])
        slots[axis] = (scores, items, np.minimum(_axis_counts(rel, axis), width[axis]))
    row_ranks, col_ranks = _count_ranks(matrix, slots.get(_ROW), slots.get(_COL), chunk_size)
    missing = sum(matrix.shape)
    out = {}
    for axis, ranks in ((_ROW, row_ranks), (_COL, col_ranks)):
        if ranks is not None:
            out[axis] = torch.where(slots[axis][1] >= 0, ranks, missing)
    return out


# ---------------------------------------------------------------------------------------------
# Ranks from exact top-k lists
# ---------------------------------------------------------------------------------------------


def _strictly_above(values: Tensor, bound: Tensor) -> Tensor:
    return (values > bound) | (torch.isnan(values) & ~torch.isnan(bound))


def _equal_or_both_nan(values: Tensor, bound: Tensor) -> Tensor:
    return (values == bound) | (torch.isnan(values) & torch.isnan(bound))


def _top_lists(lines: Tensor, caps: Tensor) -> Tensor:
    """The first ``caps[n]`` items of each line in stable descending order: (n, max cap) int64.

    Positions at or past a line's cap hold arbitrary items. ``torch.topk`` of max cap + 1
    candidates, ordered by (score descending, index ascending); the candidates are the exact
    top list up to the last position whose score is above the (k+1)-th. A line with a tie
    across its cap is completed by its lowest-index items of the tied score.
    """
    length = lines.shape[1]
    most = int(caps.max())
    if most + 1 > length:
        return torch.sort(lines, dim=1, descending=True, stable=True).indices[:, :most]
    values, items = torch.topk(lines, most + 1, dim=1)
    items, order = torch.sort(items, dim=1)
    values = values.gather(1, order)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    items = items.gather(1, order)
    last = values[:, most : most + 1]
    exact = torch.count_nonzero(_strictly_above(values, last), dim=1)
    short = (exact < caps).nonzero(as_tuple=True)[0]
    if short.numel():
        tied = _equal_or_both_nan(lines[short], last[short])
        position = tied.cumsum(dim=1) - 1 + exact[short].unsqueeze(1)
        take = tied & (position < caps[short].unsqueeze(1))
        row, item = take.nonzero(as_tuple=True)
        completed = items[short]
        completed[row, position[row, item]] = item
        items[short] = completed
    return items[:, :most]


def _ranks_from_flags(flags: Tensor, missing: int) -> Tensor:
    """Positions of the True flags of each row, ascending, padded with ``missing``."""
    positions = torch.arange(flags.shape[1], device=flags.device).expand_as(flags)
    found = int(torch.count_nonzero(flags, dim=1).max()) if flags.numel() else 0
    ranked = torch.where(flags, positions, missing).sort(dim=1).values
    return ranked[:, : max(1, found)]


def _topk_blocks(rel: _Relevance, matrix: Tensor, axis: str, caps: Tensor, chunk_size: int | None):
    """Yield ``(queries, ranks)`` per block of queries of ``axis``: the sorted ranks below each
    query's cap of its relevant items (padded with a rank no item has)."""
    num_queries = rel.num_rows if axis == _ROW else rel.num_cols
    length = rel.num_cols if axis == _ROW else rel.num_rows
    step = _resolve_chunk_size(chunk_size, length)
    missing = sum(matrix.shape)
    for start in range(0, num_queries, step):
        stop = min(num_queries, start + step)
        lines = _as_float(matrix[start:stop] if axis == _ROW else matrix[:, start:stop].T)
        cap = caps[start:stop]
        top = _top_lists(lines, cap)
        queries = torch.arange(start, stop, device=matrix.device).unsqueeze(1).expand_as(top)
        flags = _is_relevant(rel, queries, top) if axis == _ROW else _is_relevant(rel, top, queries)
        flags &= torch.arange(top.shape[1], device=top.device) < cap.unsqueeze(1)
        yield torch.arange(start, stop, device=matrix.device), _ranks_from_flags(flags, missing)


# ---------------------------------------------------------------------------------------------
# Metrics from the sorted ranks of the relevant items
# ---------------------------------------------------------------------------------------------


def _recall_hits(ranks: Tensor, ks: Sequence[int]) -> np.ndarray:
    first = ranks[:, 0]
    return np.array([int(torch.count_nonzero(first < k)) for k in ks], dtype=np.int64)


def _eccv_values(ranks: Tensor, num_relevant: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per query: AP@R and R-Precision (float64 fractions) and whether the top item is relevant.

    With r_1 < r_2 < ... the 0-based ranks of a query's R relevant items:
    AP@R = (1/R) sum_{m: r_m < R} m / (r_m + 1); R-P = #{m: r_m < R} / R; R@1 = [r_1 = 0].
    """
    r = num_relevant.to(torch.float64).unsqueeze(1)
    within = ranks < num_relevant.unsqueeze(1)
    found = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    precision = torch.where(within, found / (ranks.to(torch.float64) + 1), 0.0)
    average_precision = precision.sum(dim=1) / r.squeeze(1)
    r_precision_ = within.to(torch.float64).sum(dim=1) / r.squeeze(1)
    return average_precision, r_precision_, ranks[:, 0] == 0


def _eccv_sums(ranks: Tensor, num_relevant: Tensor) -> np.ndarray:
    """Sums over queries of AP@R, R-Precision and R@1 (fractions; see :func:`_eccv_values`)."""
    return _eccv_sums_of(*_eccv_values(ranks, num_relevant))


def _eccv_sums_of(average_precision: Tensor, r_precision_: Tensor, top_relevant: Tensor) -> np.ndarray:
    return np.array([
        float(average_precision.sum()),
        float(r_precision_.sum()),
        float(torch.count_nonzero(top_relevant)),
    ])


def _per_axis_caps(rel: _Relevance, axis: str, device: torch.device) -> Tensor:
    return torch.from_numpy(_axis_counts(rel, axis)).to(device)


def _rank_blocks(rel: _Relevance, matrix: Tensor, axes: Sequence[str], kind: str, ks: tuple[int, ...],
                 chunk_size: int | None) -> dict[str, Iterable[tuple[Tensor | None, Tensor]]]:
    """Per axis, blocks ``(queries, ranks)``: the sorted ranks of the relevant items of each query
    that Recall@K (``kind="recall"``: the best-ranked one, below ``max(ks)`` in top lists) or the
    ECCV metrics (``"eccv"``: every one below R) need, padded with a rank no item has.

    ``queries`` None stands for every query of the axis in order (the counting pass, which ranks
    all counted axes at once); top-k lists come in blocks of queries, computed when iterated.
    """
    counted: list[str] = []
    width: dict[str, int] = {}
    for axis in axes:
        most = int(_axis_counts(rel, axis).max())
        if rel.rows is not None and (kind == "recall" or most <= _COUNT_SLOTS):
            counted.append(axis)
            width[axis] = 1 if kind == "recall" else most
    ranks = _counted_ranks(rel, matrix, counted, width, chunk_size) if counted else {}
    out: dict[str, Iterable[tuple[Tensor | None, Tensor]]] = {}
    for axis in axes:
        if axis in ranks:
            out[axis] = [(None, ranks[axis])]
            continue
        counts = _per_axis_caps(rel, axis, matrix.device)
        length = rel.num_cols if axis == _ROW else rel.num_rows
        caps = torch.full_like(counts, min(max(ks), length)) if kind == "recall" else counts
        out[axis] = _topk_blocks(rel, matrix, axis, caps, chunk_size)
    return out


def _top_metrics(rel: _Relevance, matrix: Tensor, axes: Sequence[str], kind: str, ks: tuple[int, ...],
                 chunk_size: int | None) -> dict[str, np.ndarray]:
    """Recall@K hits (``kind="recall"``) or the ECCV sums (``"eccv"``) of each axis, in one pass
    where the ranks are counted."""
    blocks = _rank_blocks(rel, matrix, axes, kind, ks, chunk_size)
    out = {}
    for axis in axes:
        counts = _per_axis_caps(rel, axis, matrix.device)
        total = np.zeros(len(ks) if kind == "recall" else 3)
        for queries, block in blocks[axis]:
            if kind == "recall":
                total = total + _recall_hits(block, ks)
            else:
                total = total + _eccv_sums(block, counts if queries is None else counts[queries])
        out[axis] = total
    return out


def _recall_result(hits: np.ndarray, ks: tuple[int, ...], num_queries: int) -> dict[int, float]:
    return {k: 100.0 * float(hits[index]) / num_queries for index, k in enumerate(ks)}


def _eccv_result(sums: np.ndarray, num_queries: int) -> dict[str, float]:
    return {
        "mAP@R": 100.0 * float(sums[0]) / num_queries,
        "R-P": 100.0 * float(sums[1]) / num_queries,
        "R@1": 100.0 * float(sums[2]) / num_queries,
    }


def _one_way(scores: Any, relevant: Any) -> tuple[Tensor, _Relevance, str]:
    shape = _check_scores(scores)
    matrix, transposed = _layout(scores)
    rel = _relevance(relevant, shape, matrix, transposed)
    axis = _COL if transposed else _ROW
    _require_axis(rel, axis, transposed)
    return matrix, rel, axis


def _both_ways(scores: Any, relevant: Any) -> tuple[Tensor, _Relevance, tuple[str, str]]:
    shape = _check_scores(scores)
    matrix, transposed = _layout(scores)
    rel = _relevance(relevant, shape, matrix, transposed)
    axes = (_COL, _ROW) if transposed else (_ROW, _COL)
    for axis in axes:
        _require_axis(rel, axis, transposed)
    return matrix, rel, axes


def _axis_size(rel: _Relevance, axis: str) -> int:
    return rel.num_rows if axis == _ROW else rel.num_cols


# ---------------------------------------------------------------------------------------------
# Public metrics
# ---------------------------------------------------------------------------------------------


def recall_at_k(
    scores: Any,
    relevant: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Recall@K in percent: the share of queries with at least one relevant item in the top K.

    With r(q) the 0-based rank of query q's best-ranked relevant item (see the module
    docstring), ``R@K = 100 * #{q : r(q) < K} / Q``.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool, relevant[q, g] is True when gallery item g answers query q; or
            the pairs ``(query_index, gallery_index)`` as two 1-D integer arrays.
        ks: the cut-offs K (a K larger than G counts every query as a hit).
        chunk_size: score rows processed at once (memory ~ chunk_size x G); None picks one from G.

    Returns:
        {K: recall in percent} for each K in ``ks``.

    Raises:
        ValueError: if a query has no relevant item (the message says how many).

    Example:
        >>> import numpy as np
        >>> recall_at_k(np.array([[0.9, 0.1], [0.8, 0.2]]), np.eye(2, dtype=bool), ks=(1, 2))
        {1: 50.0, 2: 100.0}
    """
    ks = _check_ks(ks)
    matrix, rel, axis = _one_way(scores, relevant)
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    hits = _top_metrics(rel, matrix, (axis,), "recall", ks, chunk_size)[axis]
    return _recall_result(hits, ks, _axis_size(rel, axis))


def recall_at_k_both_ways(
    scores: Any,
    relevant: Any,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int | None = None,
) -> tuple[dict[int, float], dict[int, float]]:
    """Recall@K in percent of the rows ranking the columns and of the columns ranking the rows.

    Equal to ``(recall_at_k(scores, relevant, ks), recall_at_k(scores.T, relevant.T, ks))``
    (see :func:`recall_at_k` for the equation), from one pass over the matrix: image-to-text and
    text-to-image retrieval from ``scores = images @ texts.T``.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool, or the relevant pairs ``(row_index, column_index)``.
        ks: the cut-offs K.
        chunk_size: score rows processed at once; None picks one from G.

    Raises:
        ValueError: if a row or a column has no relevant item (the message says which).

    Example:
        >>> import numpy as np
        >>> scores = np.array([[0.9, 0.1, 0.4], [0.8, 0.2, 0.3]])
        >>> recall_at_k_both_ways(scores, (np.array([0, 1, 1]), np.array([0, 1, 2])), ks=(1,))
        ({1: 50.0}, {1: 66.66666666666667})
    """
    ks = _check_ks(ks)
    matrix, rel, axes = _both_ways(scores, relevant)
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    hits = _top_metrics(rel, matrix, axes, "recall", ks, chunk_size)
    return tuple(_recall_result(hits[axis], ks, _axis_size(rel, axis)) for axis in axes)  # type: ignore[return-value]


def map_r_precision_r1(scores: Any, relevant: Any, *, chunk_size: int | None = None) -> dict[str, float]:
    """mAP@R, R-Precision and R@1 in percent from one ranking pass (ECCV Caption's metrics).

    For a query with R relevant items at 0-based ranks r_1 < r_2 < ... (see the module
    docstring): AP@R = (1/R) * sum_{m: r_m < R} m / (r_m + 1), i.e. the mean over the top R of
    P@i at the relevant positions i (Musgrave et al., 2020); R-P = #{m: r_m < R} / R;
    R@1 = [r_1 = 0]. Each is averaged over the queries.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool, or the relevant pairs ``(query_index, gallery_index)``.
        chunk_size: score rows processed at once; None picks one from G.

    Returns:
        ``{"mAP@R", "R-P", "R@1"}``.

    Raises:
        ValueError: if a query has no relevant item (the message says how many).

    Example:
        >>> import numpy as np
        >>> map_r_precision_r1(np.array([[0.9, 0.8, 0.1]]), np.array([[True, False, True]]))
        {'mAP@R': 50.0, 'R-P': 50.0, 'R@1': 100.0}
    """
    matrix, rel, axis = _one_way(scores, relevant)
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    sums = _top_metrics(rel, matrix, (axis,), "eccv", (), chunk_size)[axis]
    return _eccv_result(sums, _axis_size(rel, axis))


def map_r_precision_r1_both_ways(
    scores: Any, relevant: Any, *, chunk_size: int | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`map_r_precision_r1` of the rows ranking the columns and of the columns ranking the
    rows: ``(map_r_precision_r1(scores, relevant), map_r_precision_r1(scores.T, relevant.T))``.

    Example:
        >>> import numpy as np
        >>> out = map_r_precision_r1_both_ways(np.array([[0.9, 0.1], [0.8, 0.2]]), np.eye(2, dtype=bool))
        >>> out[0]["R@1"], out[1]["R@1"]
        (50.0, 100.0)
    """
    matrix, rel, axes = _both_ways(scores, relevant)
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    sums = _top_metrics(rel, matrix, axes, "eccv", (), chunk_size)
    return tuple(_eccv_result(sums[axis], _axis_size(rel, axis)) for axis in axes)  # type: ignore[return-value]


def map_at_r(scores: Any, relevant: Any, *, chunk_size: int | None = None) -> float:
    """mAP@R in percent (Musgrave et al., 2020; ECCV Caption's main metric).

    For a query with R relevant items: AP@R = (1/R) * sum_{i<=R, item i relevant} P@i, where
    P@i is the precision in the top i; the result is the mean over queries. For mAP@R,
    R-Precision and R@1 together use :func:`map_r_precision_r1` (one pass).

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool relevance, or the pairs ``(query_index, gallery_index)``.
        chunk_size: score rows processed at once; None picks one from G.

    Example:
        >>> import numpy as np
        >>> rel = np.array([[True, False, True]])
        >>> map_at_r(np.array([[0.9, 0.8, 0.1]]), rel)  # P@1 = 1, position 2 is not relevant
        50.0
    """
    return map_r_precision_r1(scores, relevant, chunk_size=chunk_size)["mAP@R"]


def r_precision(scores: Any, relevant: Any, *, chunk_size: int | None = None) -> float:
    """R-Precision in percent: the fraction of relevant items among the top R, R = #relevant.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool relevance, or the pairs ``(query_index, gallery_index)``.
        chunk_size: score rows processed at once; None picks one from G.

    Example:
        >>> import numpy as np
        >>> r_precision(np.array([[0.9, 0.8, 0.1]]), np.array([[True, False, True]]))
        50.0
    """
    return map_r_precision_r1(scores, relevant, chunk_size=chunk_size)["R-P"]


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


def _label_pairs(query_codes: Tensor, gallery_codes: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
    """All (query, gallery) pairs of equal code for the queries ``queries`` (CPU, int64)."""
    order = torch.argsort(gallery_codes, stable=True)
    sorted_codes = gallery_codes[order]
    codes = query_codes[queries]
    first = torch.searchsorted(sorted_codes, codes, side="left")
    counts = torch.searchsorted(sorted_codes, codes, side="right") - first
    owner = torch.repeat_interleave(queries, counts)
    offset = torch.arange(owner.numel()) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return owner, order[torch.repeat_interleave(first, counts) + offset]


def _cmc_values(ranks: Tensor, num_relevant: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per query, from all its hits' sorted ranks: the first hit's rank, AP and INP (fractions).

    AP = (1/P) sum_m m / (r_m + 1); INP = P / (r_P + 1), r_1 < ... < r_P the 0-based ranks.
    """
    found = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    valid = found <= num_relevant.unsqueeze(1)
    precision = torch.where(valid, found / (ranks.to(torch.float64) + 1), 0.0)
    average_precision = precision.sum(dim=1) / num_relevant
    last = ranks.gather(1, (num_relevant - 1).unsqueeze(1)).squeeze(1)
    inverse_precision = num_relevant.to(torch.float64) / (last.to(torch.float64) + 1)
    return ranks[:, 0], average_precision, inverse_precision


def _cmc_sums(first: Tensor, average_precision: Tensor, inverse_precision: Tensor, cutoffs: Sequence[int]
              ) -> tuple[np.ndarray, float, float]:
    """CMC hits at each cut-off, and the sums of AP and INP, from :func:`_cmc_values`."""
    hits = np.array([int(torch.count_nonzero(first < k)) for k in cutoffs], dtype=np.int64)
    return hits, float(average_precision.sum()), float(inverse_precision.sum())


def _cmc_totals(blocks: Iterable[tuple[Any, Tensor, Tensor, Tensor]], num_queries: int, num_gallery: int,
                max_rank: int) -> dict[str, float]:
    """:func:`cmc_map_minp`'s result from blocks ``(queries, first rank, AP, INP)`` of its queries."""
    curve_length = min(max_rank, num_gallery)
    cutoffs = [min(k, curve_length) for k in (1, 5, 10) if k <= max_rank]
    hits = np.zeros(len(cutoffs), dtype=np.int64)
    ap_total, inp_total = 0.0, 0.0
    for _, first, ap, inp in blocks:
        block_hits, ap_sum, inp_sum = _cmc_sums(first, ap, inp, cutoffs)
        hits += block_hits
        ap_total += ap_sum
        inp_total += inp_sum

    cmc = 100.0 * hits / num_queries
    result: dict[str, float] = {}
    index = 0
    for k in (1, 5, 10):
        if k <= max_rank:
            # Beyond the gallery size every query has found all of its hits.
            result[f"R@{k}"] = float(cmc[index])
            index += 1
    result["mAP"] = 100.0 * ap_total / num_queries
    result["mINP"] = 100.0 * inp_total / num_queries
    return result


def _cmc_blocks(matrix: Tensor, transposed: bool, query_codes: Tensor, gallery_codes: Tensor, counts: np.ndarray,
                chunk_size: int | None) -> Iterator[tuple[np.ndarray, Tensor, Tensor]]:
    """``(queries, ranks, hits)`` of groups of queries: the sorted ranks of all hits of each query
    (padded) and their number; queries with few hits by counting their hits' ranks, the others by
    a stable sort of their rows."""
    device = matrix.device
    axis = _COL if transposed else _ROW
    num_gallery = int(gallery_codes.shape[0])
    counted = np.flatnonzero(counts <= _SORT_SLOTS)
    if counted.size:
        owner, item = _label_pairs(query_codes, gallery_codes, torch.from_numpy(counted))
        rows, cols = (item, owner) if transposed else (owner, item)
        rel = _from_pairs(rows, cols, matrix.shape[0], matrix.shape[1], device)
        width = int(counts[counted].max())
        ranks = _counted_ranks(rel, matrix, (axis,), {axis: width}, chunk_size)[axis]
        chosen = torch.from_numpy(counted).to(device)
        yield counted, ranks[chosen], torch.from_numpy(counts[counted]).to(device)
    sorted_queries = np.flatnonzero(counts > _SORT_SLOTS)
    if sorted_queries.size:
        gallery_on_device = gallery_codes.to(device)
        step = _resolve_chunk_size(chunk_size, num_gallery)
        for start in range(0, sorted_queries.size, step):
            chosen = torch.from_numpy(sorted_queries[start : start + step]).to(device)
            lines = _lines(matrix, axis, chosen)
            order = torch.sort(lines, dim=1, descending=True, stable=True).indices
            flags = query_codes.to(device)[chosen].unsqueeze(1) == gallery_on_device[order]
            ranks = _ranks_from_flags(flags, num_gallery)
            queries = chosen.cpu().numpy()
            yield queries, ranks, torch.from_numpy(counts[queries]).to(device)


def _cmc_inputs(scores: Any, query_labels: Any, gallery_labels: Any, chunk_size: int | None
                ) -> tuple[Tensor, bool, Tensor, Tensor, np.ndarray, int | None]:
    """The checked inputs of the person metrics: ``(matrix, transposed, query codes, gallery codes,
    hits per query, chunk_size)``."""
    num_queries, num_gallery = _check_scores(scores)
    if chunk_size is not None:
        chunk_size = _resolve_chunk_size(chunk_size, 1)
    query_codes, gallery_codes = _label_codes(query_labels, gallery_labels, num_queries, num_gallery)
    counts = np.bincount(gallery_codes.numpy(), minlength=int(query_codes.max()) + 1)[query_codes.numpy()]
    _require_relevant(counts)
    matrix, transposed = _layout(scores)
    return matrix, transposed, query_codes, gallery_codes, counts, chunk_size


def cmc_map_minp(
    scores: Any,
    query_labels: Any,
    gallery_labels: Any,
    max_rank: int = 10,
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Person-retrieval metrics as IRRA's ``rank``: CMC Rank-K, mAP and mINP, in percent.

    A gallery item is a hit when its label equals the query's label. Over the full ranking,
    with r_1 < ... < r_P the 0-based ranks of a query's P hits (see the module docstring):
    CMC@K = share of queries with r_1 < K; AP = (1/P) sum_m m / (r_m + 1), the mean over the
    hit positions of (#hits in the top p) / p; INP = P / (r_P + 1), (#hits) / (1-based rank of
    the last hit). Only the hits' ranks are computed; queries with more than ``_SORT_SLOTS``
    hits are ranked by a stable sort of their rows.

    Args:
        scores: (Q, G) similarity scores, higher is better.
        query_labels: (Q,) identity labels of the queries (ints or strings).
        gallery_labels: (G,) identity labels of the gallery items.
        max_rank: length of the CMC curve; reported cut-offs are 1, 5, 10 up to max_rank.
        chunk_size: score rows processed at once; None picks one from G.

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
    matrix, transposed, query_codes, gallery_codes, counts, chunk_size = _cmc_inputs(
        scores, query_labels, gallery_labels, chunk_size)
    blocks = _cmc_blocks(matrix, transposed, query_codes, gallery_codes, counts, chunk_size)
    return _cmc_totals(((q, *_cmc_values(ranks, hits)) for q, ranks, hits in blocks), num_queries, num_gallery,
                       max_rank)


# ---------------------------------------------------------------------------------------------
# Per-query values (what the means above are made of; softref.evaluate.intervals resamples them)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryValues:
    """A metric function's numbers and the per-query values they average.

    ``means``: the metric function's result, bit for bit (the same sums in the same order);
    ``per_query``: (Q,) arrays whose mean is ``means`` under the same key, to rounding (plus the
    first hit's ``"rank"`` for the person metrics, whose CMC is the share of ranks below K).
    """

    means: dict[str, float]
    per_query: dict[str, np.ndarray]


def _gather(parts: Iterable[tuple[Tensor | np.ndarray | None, Sequence[Tensor]]], num_queries: int
            ) -> list[np.ndarray]:
    """Per-query arrays from ``(queries, values)`` parts: ``values`` are tensors over the part's
    queries (``queries`` None: every query, in order), written at the queries' positions."""
    out: list[np.ndarray] | None = None
    for queries, values in parts:
        found = [t.cpu().numpy() for t in values]
        if out is None:
            out = [np.zeros(num_queries, dtype=f.dtype) for f in found]
        where = slice(None) if queries is None else np.asarray(
            queries.cpu() if isinstance(queries, Tensor) else queries)
        for array, part in zip(out, found):
            array[where] = part
    assert out is not None
    return out


def _first_ranks(rel: _Relevance, matrix: Tensor, axes: Sequence[str], max_rank: int | None,
                 chunk_size: int | None) -> list[np.ndarray]:
    if rel.rows is None and max_rank is None:
        raise ValueError(
            "relevant: a dense relevance with more relevant pairs than can be listed "
            f"({_PAIR_LIMIT}) is ranked from top lists: give max_rank (the largest K needed)"
        )
    cap = (max_rank,) if max_rank is not None else (1,)
    blocks = _rank_blocks(rel, matrix, axes, "recall", cap, chunk_size)
    out = []
    for axis in axes:
        (first,) = _gather(((q, (ranks[:, 0],)) for q, ranks in blocks[axis]), _axis_size(rel, axis))
        out.append(first.astype(np.int64) if max_rank is None else np.minimum(first, max_rank).astype(np.int64))
    return out


def first_relevant_ranks(scores: Any, relevant: Any, *, max_rank: int | None = None,
                         chunk_size: int | None = None) -> np.ndarray:
    """Per query, r(q): the 0-based rank of its best-ranked relevant item (module docstring).

    ``R@K = 100 * mean(r < K)``: :func:`recall_from_ranks` gives :func:`recall_at_k`'s numbers
    from these, bit for bit. The ranks come from the pass :func:`recall_at_k` makes (no sort).

    Args:
        scores: (Q, G) similarity scores, higher is better.
        relevant: (Q, G) bool, or the relevant pairs ``(query_index, gallery_index)``.
        max_rank: None: exact ranks. A number: ranks at or above it are given as ``max_rank``
            (enough for every K <= max_rank); required for a dense relevance with more relevant
            pairs than can be listed, which is then ranked from top lists of ``max_rank`` items.
        chunk_size: score rows processed at once; None picks one from G.

    Returns:
        (Q,) int64.

    Example:
        >>> import numpy as np
        >>> first_relevant_ranks(np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.3]]), np.eye(2, 3, dtype=bool)).tolist()
        [0, 2]
    """
    matrix, rel, axis = _one_way(scores, relevant)
    max_rank = None if max_rank is None else _check_ks((max_rank,))[0]
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    return _first_ranks(rel, matrix, (axis,), max_rank, chunk_size)[0]


def first_relevant_ranks_both_ways(scores: Any, relevant: Any, *, max_rank: int | None = None,
                                   chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`first_relevant_ranks` of the rows ranking the columns and of the columns ranking the
    rows, from one pass: ``(first_relevant_ranks(scores, relevant), first_relevant_ranks(scores.T,
    relevant.T))`` (image-to-text and text-to-image from ``scores = images @ texts.T``).

    Example:
        >>> import numpy as np
        >>> scores = np.array([[0.9, 0.1, 0.4], [0.8, 0.2, 0.3]])
        >>> [r.tolist() for r in first_relevant_ranks_both_ways(scores, (np.array([0, 1, 1]), np.array([0, 1, 2])))]
        [[0, 1], [0, 0, 1]]
    """
    matrix, rel, axes = _both_ways(scores, relevant)
    max_rank = None if max_rank is None else _check_ks((max_rank,))[0]
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    first, second = _first_ranks(rel, matrix, axes, max_rank, chunk_size)
    return first, second


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@K in percent from :func:`first_relevant_ranks`: ``100 * #{q : r(q) < K} / Q``, the
    same floats as :func:`recall_at_k` (for K up to the ``max_rank`` the ranks were clipped at).

    Example:
        >>> import numpy as np
        >>> recall_from_ranks(np.array([0, 2, 5, 1]), ks=(1, 3))
        {1: 25.0, 3: 75.0}
    """
    ks = _check_ks(ks)
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks: expected a non-empty 1-D array, found shape {ranks.shape}")
    hits = np.array([int(np.count_nonzero(ranks < k)) for k in ks], dtype=np.int64)
    return _recall_result(hits, ks, int(ranks.size))


def _eccv_per_query(rel: _Relevance, matrix: Tensor, axes: Sequence[str], chunk_size: int | None
                    ) -> list[QueryValues]:
    blocks = _rank_blocks(rel, matrix, axes, "eccv", (), chunk_size)
    out = []
    for axis in axes:
        counts = _per_axis_caps(rel, axis, matrix.device)
        total = np.zeros(3)
        parts = []
        # The sums block by block, as _top_metrics adds them: the means are its numbers.
        for queries, block in blocks[axis]:
            values = _eccv_values(block, counts if queries is None else counts[queries])
            total = total + _eccv_sums_of(*values)
            parts.append((queries, values))
        ap, rp, top = _gather(parts, _axis_size(rel, axis))
        per_query = {"mAP@R": 100.0 * ap, "R-P": 100.0 * rp, "R@1": 100.0 * top.astype(np.float64)}
        out.append(QueryValues(_eccv_result(total, _axis_size(rel, axis)), per_query))
    return out


def map_r_precision_r1_per_query(scores: Any, relevant: Any, *, chunk_size: int | None = None) -> QueryValues:
    """:func:`map_r_precision_r1`'s numbers (``means``) and, per query, in percent, what they
    average (``per_query``): AP@R, R-P and R@1 (100 when the top item is relevant, else 0), under
    the keys of the means (``"mAP@R"``, ``"R-P"``, ``"R@1"``), from one pass.

    Example:
        >>> import numpy as np
        >>> out = map_r_precision_r1_per_query(np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]]),
        ...                                    np.array([[True, False, True], [False, False, True]]))
        >>> out.per_query["mAP@R"].tolist(), out.per_query["R@1"].tolist(), out.means["mAP@R"]
        ([50.0, 100.0], [100.0, 100.0], 75.0)
    """
    matrix, rel, axis = _one_way(scores, relevant)
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    return _eccv_per_query(rel, matrix, (axis,), chunk_size)[0]


def map_r_precision_r1_per_query_both_ways(scores: Any, relevant: Any, *, chunk_size: int | None = None
                                           ) -> tuple[QueryValues, QueryValues]:
    """:func:`map_r_precision_r1_per_query` of the rows ranking the columns and of the columns
    ranking the rows, from one pass (means: :func:`map_r_precision_r1_both_ways`'s numbers)."""
    matrix, rel, axes = _both_ways(scores, relevant)
    chunk_size = None if chunk_size is None else _resolve_chunk_size(chunk_size, 1)
    first, second = _eccv_per_query(rel, matrix, axes, chunk_size)
    return first, second


def cmc_map_minp_per_query(scores: Any, query_labels: Any, gallery_labels: Any, max_rank: int = 10, *,
                           chunk_size: int | None = None) -> QueryValues:
    """:func:`cmc_map_minp`'s numbers (``means``) and what they average, per query (``per_query``):
    ``"rank"``, the 0-based rank r_1 of the first hit (int64; CMC@K = 100 * mean(rank < K)), and AP
    and INP in percent under the keys of their means, ``"mAP"`` and ``"mINP"``; same passes.

    Example:
        >>> import numpy as np
        >>> out = cmc_map_minp_per_query(np.array([[0.2, 0.9, 0.5]]), ["a"], ["a", "b", "a"], max_rank=3)
        >>> out.per_query["rank"].tolist(), out.per_query["mAP"].round(2).tolist(), round(out.means["mINP"], 2)
        ([1], [58.33], 66.67)
    """
    num_queries, num_gallery = _check_scores(scores)
    if max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, found {max_rank}")
    matrix, transposed, query_codes, gallery_codes, counts, chunk_size = _cmc_inputs(
        scores, query_labels, gallery_labels, chunk_size)
    blocks = [(q, *_cmc_values(ranks, hits))
              for q, ranks, hits in _cmc_blocks(matrix, transposed, query_codes, gallery_codes, counts, chunk_size)]
    means = _cmc_totals(blocks, num_queries, num_gallery, max_rank)
    rank, ap, inp = _gather(((q, values) for q, *values in blocks), num_queries)
    return QueryValues(means, {"rank": rank.astype(np.int64), "mAP": 100.0 * ap, "mINP": 100.0 * inp})
