"""Evaluation protocols of the CUSA and MMRef tables, on embeddings (no model involved).

Each function takes embeddings (numpy arrays or torch tensors of any norm, on any device; they
are L2-normalised here, so every score is a cosine) plus the labels or relevance the protocol
needs, and returns numbers in percent (STS: Spearman x 100):

- :func:`eccv_scores`, :func:`eccv_caption_scores`: ECCV Caption (CUSA Table 2): mAP@R,
  R-Precision and R@1 in both directions, from a relevance matrix or through the
  ``eccv_caption`` package's own ground truth;
- :func:`leave_one_out_r1`, :func:`query_gallery_r1`: uni-modal image retrieval R@1 (Table 3);
- :func:`sts_spearman`, :func:`sts_table`: semantic textual similarity (Table 4);
- :func:`person_scores`: text-to-person retrieval (MMRef), with and without reference-based
  refinement;
- :func:`zero_shot_scores`: Reed et al.'s zero-shot retrieval and classification (CUB, Flowers).

For the intervals over queries (:mod:`softref.evaluate.intervals`) each protocol also gives its
per-query values from the same pass: :func:`eccv_scores_per_query`, :func:`eccv_caption_per_query`,
:func:`leave_one_out_hits`, :func:`query_gallery_hits`, :func:`zero_shot_scores_per_query`;
:func:`sts_table` and :func:`person_scores` take a ``bootstrap`` and return rows with intervals.

:mod:`softref.evaluate.benchmarks` encodes a benchmark with a student and calls these. Ties
are broken toward the lower index everywhere, as in :mod:`softref.evaluate.metrics`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from softref.evaluate.intervals import Bootstrap, attach_intervals, row_key
from softref.evaluate.metrics import (
    CHUNK_ELEMENTS,
    QueryValues,
    cmc_map_minp_per_query,
    map_r_precision_r1_both_ways,
    map_r_precision_r1_per_query,
    map_r_precision_r1_per_query_both_ways,
)
from softref.evaluate.refine import refine_scores
from softref.runtime import progress_disabled

__all__ = [
    "ECCV_TOP_K",
    "ECCV_GROUND_TRUTH_FILES",
    "ECCV_PACKAGE_FILES",
    "STS_YEAR_NAMES",
    "metric_row",
    "identity_relevance",
    "eccv_scores",
    "eccv_caption_scores",
    "eccv_caption_scores_and_counts",
    "eccv_caption_per_query",
    "eccv_scores_per_query",
    "leave_one_out_r1",
    "leave_one_out_hits",
    "query_gallery_r1",
    "query_gallery_hits",
    "sts_spearman",
    "sts_table",
    "zero_shot_scores",
    "zero_shot_scores_per_query",
    "person_scores",
    "refine_parameters",
]

logger = logging.getLogger(__name__)

#: Length of the ranked lists handed to ``eccv_caption`` (CUSA: "from top-50 lists").
ECCV_TOP_K = 50
#: The ground-truth files :func:`eccv_caption_scores` reads from its ``data_dir``.
ECCV_GROUND_TRUTH_FILES = ("eccv_image_to_caption.json", "eccv_caption_to_image.json")
#: The files ``eccv_caption.Metrics()`` reads from the installed package's ``data/`` on creation.
ECCV_PACKAGE_FILES = (
    "original_image_to_caption.json",
    "original_caption_to_image.json",
    "cxc_image_to_caption.json",
    "cxc_caption_to_image.json",
    "eccv_image_to_caption.json",
    "eccv_caption_to_image.json",
    "coco_test_ids.npy",
)
#: SentEval's STS years, whose tasks (``STS12/MSRpar`` ...) are pooled per year ("all" setting).
STS_YEAR_NAMES = ("STS12", "STS13", "STS14", "STS15", "STS16")
_STS_SINGLE = {"STSBenchmark": "stsb", "SICK-R": "sickr"}
_PERSON_METRICS = ("R@1", "R@5", "R@10", "mAP", "mINP")


def metric_row(dataset: str, direction: str, metric: str, value: float, variant: str = "") -> dict[str, Any]:
    """One row of an evaluation JSON's ``metrics`` list (value as a plain float)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric {dataset}/{direction}/{metric}{'/' + variant if variant else ''}: expected a "
                         f"finite value, found {value}")
    return {"dataset": dataset, "direction": direction, "metric": metric, "value": value, "variant": variant}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _unit(x: Any, what: str, device: torch.device | None = None) -> Tensor:
    """Rows L2-normalised, float32 (float64 kept), as a tensor on ``device`` (default: its own)."""
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"{what}: expected a numpy array or torch tensor, found {type(x).__name__}")
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty (N, D) matrix, found shape {tuple(t.shape)}")
    if device is not None:
        t = t.to(device)
    t = t if t.dtype == torch.float64 else t.float()
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _same_dim(a: Tensor, b: Tensor, what_a: str, what_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{what_a} has dimension {a.shape[1]} but {what_b} has {b.shape[1]}; expected equal")


def _labels(labels: Any, count: int, what: str) -> list[Any]:
    values = labels.tolist() if isinstance(labels, (np.ndarray, Tensor)) else list(labels)
    if len(values) != count:
        raise ValueError(f"{what}: expected {count} labels (one per embedding row), found {len(values)}")
    return values


def _codes(*groups: Sequence[Any]) -> list[np.ndarray]:
    """Integer codes shared by several label lists (labels of any hashable type)."""
    joined = pd.Index([v for group in groups for v in group], dtype=object)
    codes, _ = pd.factorize(joined)
    out, start = [], 0
    for group in groups:
        out.append(codes[start : start + len(group)].astype(np.int64))
        start += len(group)
    return out


def _chunk_rows(num_columns: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, num_columns))


# ---------------------------------------------------------------------------------------------
# ECCV Caption (CUSA Table 2)
# ---------------------------------------------------------------------------------------------


def identity_relevance(image_identities: Sequence[Any], text_identities: Sequence[Any]) -> np.ndarray:
    """(I, T) bool: ``relevant[i, t]`` when image i and caption t share a manifest identity.

    Example:
        >>> identity_relevance(["a", "b"], ["b", "a", "a"]).astype(int).tolist()
        [[0, 1, 1], [1, 0, 0]]
    """
    images, texts = list(image_identities), list(text_identities)
    image_codes, text_codes = _codes(images, texts)
    return image_codes[:, None] == text_codes[None, :]


def _eccv_inputs(image_emb: Any, text_emb: Any, relevant_i2t: Any) -> tuple[Tensor, Tensor]:
    """``(scores, relevance)`` of :func:`eccv_scores`: cosines (I, T) and the checked (I, T) bool."""
    image = _unit(image_emb, "image_emb")
    text = _unit(text_emb, "text_emb", image.device)
    _same_dim(image, text, "image_emb", "text_emb")
    relevant = torch.as_tensor(np.asarray(relevant_i2t, dtype=bool))
    if tuple(relevant.shape) != (image.shape[0], text.shape[0]):
        raise ValueError(
            f"relevant_i2t: expected shape ({image.shape[0]}, {text.shape[0]}) (images x captions), "
            f"found {tuple(relevant.shape)}"
        )
    return image @ text.T, relevant


def eccv_scores(image_emb: Any, text_emb: Any, relevant_i2t: Any) -> dict[str, dict[str, float]]:
    """mAP@R, R-Precision and R@1 in both directions from a relevance matrix, in percent.

    ``scores = cos(image, text)``; image-to-text ranks the T captions for each image against
    ``relevant_i2t`` (I, T) bool, text-to-image ranks the I images for each caption against its
    transpose. Every image and every caption needs at least one relevant item (the metric
    functions raise otherwise). Used with :func:`identity_relevance` for the demo's ECCV table.

    Returns:
        ``{"i2t": {"mAP@R", "R-P", "R@1"}, "t2i": {...}}``.
    """
    scores, relevant = _eccv_inputs(image_emb, text_emb, relevant_i2t)
    # One pass ranks both directions (rows: i2t, columns: t2i): no second matrix, no sort.
    i2t, t2i = map_r_precision_r1_both_ways(scores, relevant)
    return {"i2t": i2t, "t2i": t2i}


def eccv_scores_per_query(image_emb: Any, text_emb: Any, relevant_i2t: Any) -> dict[str, QueryValues]:
    """:func:`eccv_scores` with the per-query values: ``{"i2t": QueryValues, "t2i": QueryValues}``,
    whose ``means`` are :func:`eccv_scores`'s numbers (bit for bit) and whose ``per_query`` hold
    each image's (i2t) and caption's (t2i) AP@R, R-P and R@1 in percent; one ranking pass."""
    scores, relevant = _eccv_inputs(image_emb, text_emb, relevant_i2t)
    i2t, t2i = map_r_precision_r1_per_query_both_ways(scores, relevant)
    return {"i2t": i2t, "t2i": t2i}


def _eccv_package_dir() -> Path:
    from softref.data.imagetext import eccv_data_dir

    return eccv_data_dir()


def _eccv_metrics_object(data_dir: Path | None) -> Any:
    """An ``eccv_caption.Metrics`` whose ECCV ground truth comes from ``data_dir`` (default: the package's)."""
    package_dir = _eccv_package_dir()
    missing = [package_dir / name for name in ECCV_PACKAGE_FILES if not (package_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"eccv_caption: the package's data file(s) {[str(p) for p in missing]} are missing; "
            "eccv_caption.Metrics() reads them when created (reinstall eccv_caption==0.1.0, which ships them)"
        )
    folder = package_dir if data_dir is None else Path(data_dir)
    for name in ECCV_GROUND_TRUTH_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"ECCV Caption ground truth not found: {folder / name}; expected the eccv_caption package's "
                f"files {list(ECCV_GROUND_TRUTH_FILES)} in {folder}"
            )
    with warnings.catch_warnings():
        # The package warns on import when the optional ujson is absent; json does the same job.
        warnings.simplefilter("ignore")
        from eccv_caption import Metrics

    metrics = Metrics()
    if data_dir is not None:
        metrics.set_eccv_gts(str(folder / ECCV_GROUND_TRUTH_FILES[0]), str(folder / ECCV_GROUND_TRUTH_FILES[1]))
    return metrics


def _int_ids(ids: Sequence[Any], what: str) -> list[int]:
    out = []
    for position, value in enumerate(ids):
        try:
            out.append(int(str(value)))
        except ValueError:
            raise ValueError(
                f"{what}[{position}] is {value!r}; ECCV Caption keys its annotations by integer COCO ids, so "
                "the manifest must come from the `eccv` format (image_id = cocoid, text_id = sentid)"
            ) from None
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: ids repeat once read as integers; expected unique COCO ids")
    return out


def _ranked_lists(
    queries: Tensor, gallery: Tensor, rows: list[int], gallery_ids: list[int], top: int
) -> dict[int, list[int]]:
    """Per query row, the ids of its ``top`` best gallery items (stable sort: ties to the lower index)."""
    out: dict[int, list[int]] = {}
    ids = np.asarray(gallery_ids, dtype=np.int64)
    for block, scores in _score_blocks(queries, gallery, rows):
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top].cpu().numpy()
        for row, ranked in zip(block, order):
            out[row] = ids[ranked].tolist()
    return out


def _score_blocks(queries: Tensor, gallery: Tensor, rows: list[int]) -> Iterator[tuple[list[int], Tensor]]:
    """``(rows, scores)`` per block of the query rows ``rows``: their cosines with the gallery.

    The ranked lists and the per-query values both read these blocks, so both rank the very same
    floats (a product of another shape may round differently and swap near ties).
    """
    step = _chunk_rows(gallery.shape[0])
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        yield block, queries[block] @ gallery.T


@dataclass(frozen=True)
class _EccvSide:
    """One direction of an ECCV Caption evaluation: its queries (rows of ``queries``), in the ground
    truth's order, and their positives (gallery ids, as the package reads them)."""

    queries: Tensor
    gallery: Tensor
    rows: list[int]
    positives: list[set[int]]
    gallery_ids: list[int]


def _eccv_caption_run(
    image_emb: Any, text_emb: Any, image_ids: Sequence[Any], text_ids: Sequence[Any], data_dir: Path | str | None,
    top_k: int,
) -> tuple[dict[str, dict[str, float]], dict[str, _EccvSide]]:
    """The package's numbers and, per direction, the queries it scored (see :func:`eccv_caption_scores`)."""
    image = _unit(image_emb, "image_emb")
    text = _unit(text_emb, "text_emb", image.device)
    _same_dim(image, text, "image_emb", "text_emb")
    image_int = _int_ids(_labels(image_ids, image.shape[0], "image_ids"), "image_ids")
    text_int = _int_ids(_labels(text_ids, text.shape[0], "text_ids"), "text_ids")
    metrics = _eccv_metrics_object(None if data_dir is None else Path(data_dir))
    source = Path(data_dir) if data_dir is not None else _eccv_package_dir()

    retrieved: dict[str, dict[int, list[int]]] = {}
    found: dict[str, _EccvSide] = {}
    sides = {
        "i2t": (image, text, image_int, text_int, "image", "caption"),
        "t2i": (text, image, text_int, image_int, "caption", "image"),
    }
    for direction, (queries, gallery, query_ids, gallery_ids, query_kind, gallery_kind) in sides.items():
        truth: Mapping[int, list[int]] = metrics.eccv_gts[direction]
        if not truth:
            raise ValueError(f"ECCV Caption ground truth in {source} lists no {query_kind} query ({direction})")
        index = {q: i for i, q in enumerate(query_ids)}
        absent = [q for q in truth if q not in index]
        if absent:
            raise ValueError(
                f"{len(absent)} of ECCV Caption's {len(truth)} {query_kind} queries ({direction}, from {source}) "
                f"are not among the {len(query_ids)} {query_kind}s given; first: {absent[:5]}"
            )
        longest = max(len(set(v)) for v in truth.values())
        if longest > len(gallery_ids):
            query = next(q for q, v in truth.items() if len(set(v)) == longest)
            raise ValueError(
                f"ECCV Caption {query_kind} query {query} ({source}) has {longest} positives but only "
                f"{len(gallery_ids)} {gallery_kind}s are ranked; its mAP@R needs a list of at least that length"
            )
        # The package reads position R-1 of every list: lists hold at least the most positives.
        top = min(len(gallery_ids), max(int(top_k), longest))
        rows = [index[q] for q in truth]
        ranked = _ranked_lists(queries, gallery, rows, gallery_ids, top)
        retrieved[direction] = {query_ids[row]: ranked[row] for row in rows}
        found[direction] = _EccvSide(queries, gallery, rows, [set(v) for v in truth.values()], gallery_ids)

    # The package always draws a progress bar on stderr; keep it quiet where softref's are.
    quiet = contextlib.redirect_stderr(io.StringIO()) if progress_disabled(logger) else contextlib.nullcontext()
    with quiet:
        raw = metrics.eccv_metrics(retrieved, "all")
    names = {"eccv_map_at_r": "mAP@R", "eccv_rprecision": "R-P", "eccv_r1": "R@1"}
    result = {
        direction: {names[key]: 100.0 * float(raw[key][direction]) for key in names} for direction in ("i2t", "t2i")
    }
    return result, found


def eccv_caption_scores_and_counts(
    image_emb: Any,
    text_emb: Any,
    image_ids: Sequence[Any],
    text_ids: Sequence[Any],
    data_dir: Path | str | None = None,
    *,
    top_k: int = ECCV_TOP_K,
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """:func:`eccv_caption_scores` plus the number of queries scored: ``(scores, {"i2t": n, "t2i": m})``."""
    result, sides = _eccv_caption_run(image_emb, text_emb, image_ids, text_ids, data_dir, top_k)
    return result, {direction: len(side.rows) for direction, side in sides.items()}


def _eccv_side_per_query(side: _EccvSide) -> QueryValues:
    """softref's AP@R, R-P and R@1 per query of one ECCV Caption direction, on the package's relevance.

    A positive that is not among the given gallery items (the ground truth may list one) still
    counts in its query's R, as in the package: it is scored as an extra gallery column of -inf,
    ranked after every real item, so it is never within the top R (R <= the gallery size).
    """
    position = {g: i for i, g in enumerate(side.gallery_ids)}
    extra: dict[int, int] = {}
    rows, cols = [], []
    for query, positives in enumerate(side.positives):
        for item in sorted(positives):
            column = position.get(item)
            if column is None:
                column = len(position) + extra.setdefault(item, len(extra))
            rows.append(query)
            cols.append(column)
    scores = torch.cat([block for _, block in _score_blocks(side.queries, side.gallery, side.rows)])
    if extra:
        padding = torch.full((scores.shape[0], len(extra)), -math.inf, dtype=scores.dtype, device=scores.device)
        scores = torch.cat([scores, padding], dim=1)
    return map_r_precision_r1_per_query(scores, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)))


def eccv_caption_per_query(
    image_emb: Any,
    text_emb: Any,
    image_ids: Sequence[Any],
    text_ids: Sequence[Any],
    data_dir: Path | str | None = None,
    *,
    top_k: int = ECCV_TOP_K,
    tolerance: float = 1e-6,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """:func:`eccv_caption_scores` (the package's numbers) and the per-query values behind them.

    The package computes its means from its own top-k lists and keeps no per-query values, so
    they are computed here with :func:`~softref.evaluate.metrics.map_r_precision_r1_per_query` on
    the package's relevance (its ground truth's queries and positives; same cosines, same ties),
    and their means must equal the package's numbers.

    Returns:
        ``(scores, per_query)``: ``per_query[direction][metric]`` holds the (n,) values in percent
        of the ground truth's queries, in its order.

    Raises:
        ValueError: a mean differs from the package's number by more than ``tolerance`` (percent
            points; the message names the direction and the metric), and :func:`eccv_caption_scores`'s
            errors.
    """
    result, sides = _eccv_caption_run(image_emb, text_emb, image_ids, text_ids, data_dir, top_k)
    per_query = {}
    for direction, side in sides.items():
        ours = _eccv_side_per_query(side)
        for name, package in result[direction].items():
            mean = float(np.mean(ours.per_query[name]))
            if not abs(mean - package) <= tolerance:
                raise ValueError(
                    f"ECCV Caption {direction} {name}: the mean of softref's per-query values is {mean!r} but the "
                    f"eccv_caption package gives {package!r} (expected equal within {tolerance}); the per-query "
                    "values would not belong to the reported number"
                )
        per_query[direction] = ours.per_query
    return result, per_query


def eccv_caption_scores(
    image_emb: Any,
    text_emb: Any,
    image_ids: Sequence[Any],
    text_ids: Sequence[Any],
    data_dir: Path | str | None = None,
    *,
    top_k: int = ECCV_TOP_K,
) -> dict[str, dict[str, float]]:
    """ECCV Caption's mAP@R, R-Precision and R@1 in both directions, computed by the ``eccv_caption`` package.

    The ids are the manifest's (`eccv` format): ``image_ids`` COCO image ids (``cocoid``),
    ``text_ids`` COCO caption ids (``sentid``), as strings or ints; they are read as ints, the
    package's keys. For each ECCV query (the 1,261 image and 1,332 caption queries of the real
    ground truth) the gallery is ranked by cosine (ties to the lower index) and its top
    ``max(top_k, most positives of any query)`` ids go to ``eccv_caption.Metrics.eccv_metrics``
    (``{"i2t": {image_id: [caption ids]}, "t2i": {caption_id: [image ids]}}``, modality
    ``"all"``). Queries outside the ground truth are not scored, as in ECCV Caption.

    Args:
        data_dir: a folder holding ``eccv_image_to_caption.json`` and ``eccv_caption_to_image.json``
            in the package's layout (set with ``Metrics.set_eccv_gts``); default: the installed
            package's own ``data/``.
        top_k: length of the ranked lists (50 as CUSA reports).

    Returns:
        ``{"i2t": {"mAP@R", "R-P", "R@1"}, "t2i": {...}}`` in percent.

    Raises:
        FileNotFoundError: a ground-truth file (or a data file of the package) is missing; the
            message names it.
        ValueError: an id is not an integer, or an ECCV query is not among the given ids.
    """
    result, counts = eccv_caption_scores_and_counts(image_emb, text_emb, image_ids, text_ids, data_dir, top_k=top_k)
    logger.info("ECCV Caption: scored %d image and %d caption queries", counts["i2t"], counts["t2i"])
    return result


# ---------------------------------------------------------------------------------------------
# Uni-modal image retrieval (CUSA Table 3)
# ---------------------------------------------------------------------------------------------


def _nearest_hits(
    queries: Tensor, query_codes: np.ndarray, gallery: Tensor, gallery_codes: np.ndarray, exclude_self: bool
) -> tuple[np.ndarray, int]:
    """(per query: is its nearest neighbour of its label, (Q,) bool; queries that have no gallery
    item of their label) of nearest-neighbour retrieval."""
    g_codes = torch.from_numpy(gallery_codes).to(queries.device)
    q_codes = torch.from_numpy(query_codes).to(queries.device)
    num_queries = queries.shape[0]
    step = _chunk_rows(gallery.shape[0])
    hits = np.zeros(num_queries, dtype=bool)
    for start in range(0, num_queries, step):
        stop = min(num_queries, start + step)
        scores = queries[start:stop] @ gallery.T
        if exclude_self:
            rows = torch.arange(stop - start, device=scores.device)
            scores[rows, rows + start] = -math.inf
        # argmax returns the first maximal index: ties go to the lower gallery index.
        nearest = scores.argmax(dim=1)
        hits[start:stop] = (g_codes[nearest] == q_codes[start:stop]).cpu().numpy()
    available = np.bincount(gallery_codes, minlength=int(max(query_codes.max(), gallery_codes.max())) + 1)
    have = available[query_codes] - (1 if exclude_self else 0)
    return hits, int((have <= 0).sum())


def leave_one_out_hits(emb: Any, labels: Sequence[Any]) -> np.ndarray:
    """Per item, (N,) bool: is its nearest other item (cosine; ties to the lower index) of its label;
    :func:`leave_one_out_r1` is their share in percent. A query whose label has no other item is a
    miss (a warning says how many)."""
    e = _unit(emb, "emb")
    if e.shape[0] < 2:
        raise ValueError(f"emb: leave-one-out needs at least 2 items, found {e.shape[0]}")
    (codes,) = _codes(_labels(labels, e.shape[0], "labels"))
    hits, alone = _nearest_hits(e, codes, e, codes, exclude_self=True)
    if alone:
        logger.warning("leave-one-out R@1: %d of %d queries are the only item of their label (counted as misses)",
                       alone, e.shape[0])
    return hits


def leave_one_out_r1(emb: Any, labels: Sequence[Any]) -> float:
    """R@1 in percent where every item queries all the others (itself excluded).

    A hit is a nearest neighbour (cosine; ties to the lower index) with the query's label. A
    query whose label has no other item cannot hit and counts as a miss (a warning says how
    many), as in the metric-learning evaluation CUSA follows. Per query: :func:`leave_one_out_hits`.

    Example:
        >>> import numpy as np
        >>> leave_one_out_r1(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), ["a", "a", "b"])
        66.66666666666667
    """
    hits = leave_one_out_hits(emb, labels)
    return 100.0 * int(hits.sum()) / hits.size


def query_gallery_hits(
    query_emb: Any, query_labels: Sequence[Any], gallery_emb: Any, gallery_labels: Sequence[Any]
) -> np.ndarray:
    """Per query, (Q,) bool: is its nearest gallery item (cosine; ties to the lower index) of its
    label; :func:`query_gallery_r1` is their share in percent."""
    queries = _unit(query_emb, "query_emb")
    gallery = _unit(gallery_emb, "gallery_emb", queries.device)
    _same_dim(queries, gallery, "query_emb", "gallery_emb")
    query_codes, gallery_codes = _codes(
        _labels(query_labels, queries.shape[0], "query_labels"),
        _labels(gallery_labels, gallery.shape[0], "gallery_labels"),
    )
    hits, alone = _nearest_hits(queries, query_codes, gallery, gallery_codes, exclude_self=False)
    if alone:
        logger.warning("query-gallery R@1: %d of %d queries have no gallery item of their label (counted as misses)",
                       alone, queries.shape[0])
    return hits


def query_gallery_r1(
    query_emb: Any, query_labels: Sequence[Any], gallery_emb: Any, gallery_labels: Sequence[Any]
) -> float:
    """R@1 in percent of queries against a separate gallery (In-Shop): the nearest gallery item
    (cosine; ties to the lower index) has the query's label. Queries without any gallery item of
    their label count as misses (a warning says how many). Per query: :func:`query_gallery_hits`."""
    hits = query_gallery_hits(query_emb, query_labels, gallery_emb, gallery_labels)
    return 100.0 * int(hits.sum()) / hits.size


# ---------------------------------------------------------------------------------------------
# Semantic textual similarity (CUSA Table 4)
# ---------------------------------------------------------------------------------------------


def _sts_cosines(emb1: Any, emb2: Any, scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(cos(emb1[i], emb2[i]), gold)`` as float64 arrays, checked (see :func:`sts_spearman`)."""
    a = _unit(emb1, "emb1")
    b = _unit(emb2, "emb2", a.device)
    _same_dim(a, b, "emb1", "emb2")
    gold = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not a.shape[0] == b.shape[0] == gold.shape[0]:
        raise ValueError(
            f"sts_spearman: expected as many rows in emb1 ({a.shape[0]}) and emb2 ({b.shape[0]}) as gold scores "
            f"({gold.shape[0]})"
        )
    if gold.shape[0] < 2:
        raise ValueError(f"sts_spearman: a correlation needs at least 2 pairs, found {gold.shape[0]}")
    return (a * b).sum(dim=1).double().cpu().numpy(), gold


def _spearman(cosine: np.ndarray, gold: np.ndarray) -> float:
    with warnings.catch_warnings():
        # A constant input gives NaN, which is turned into the error below.
        warnings.simplefilter("ignore")
        from scipy.stats import spearmanr  # here: importing scipy.stats costs every other job 0.6 s

        rho = float(spearmanr(cosine, gold).statistic)
    if not math.isfinite(rho):
        raise ValueError(
            "sts_spearman: the correlation is undefined (constant gold scores or constant cosines over "
            f"{gold.shape[0]} pairs)"
        )
    return 100.0 * rho


def sts_spearman(emb1: Any, emb2: Any, scores: Sequence[float]) -> float:
    """Spearman correlation x 100 between ``cos(emb1[i], emb2[i])`` and the gold ``scores[i]``."""
    return _spearman(*_sts_cosines(emb1, emb2, scores))


def _sts_group(task: str) -> str:
    """The reported dataset a ``pairs.parquet`` task belongs to (see :func:`sts_table`)."""
    year = task.split("/", 1)[0]
    if year in STS_YEAR_NAMES:
        return year.lower()
    return _STS_SINGLE.get(task, task)


def _sts_layout(values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The reported rows (dataset, value) in :func:`sts_table`'s order, from per-task values (floats,
    or arrays of per-resample values: the summaries are then recomputed per resample)."""
    years = [y.lower() for y in STS_YEAR_NAMES if y.lower() in values]
    singles = [s for s in _STS_SINGLE.values() if s in values]
    others = sorted(n for n in values if n not in years and n not in singles)
    out = [(y, values[y]) for y in years]
    if len(years) == len(STS_YEAR_NAMES):
        out.append(("sts12-16", np.mean([values[y] for y in years], axis=0)))
    out += [(n, values[n]) for n in singles + others]
    out.append(("avg", np.mean([values[n] for n in years + singles + others], axis=0)))
    return out


def sts_table(pairs_df: pd.DataFrame, emb1: Any, emb2: Any, *, bootstrap: Bootstrap | None = None
              ) -> list[dict[str, Any]]:
    """STS metric rows ("t2t", "spearman") from the pairs and their sentence embeddings.

    Row i of ``emb1`` / ``emb2`` embeds ``sentence1`` / ``sentence2`` of row i of ``pairs_df``
    (a ``pairs.parquet`` frame; its ``task`` and ``score`` columns are read). Grouping:

    - SentEval years (tasks ``STS12/MSRpar`` ... or a bare ``STS12``): the year's pairs are
      pooled ("all" setting) into one Spearman, dataset ``sts12`` ... ``sts16``;
    - ``sts12-16``: the mean of the five years, reported only when all five are present;
    - ``STSBenchmark`` -> ``stsb``, ``SICK-R`` -> ``sickr``; any other task keeps its name;
    - ``avg``: the mean over the reported tasks (years, stsb, sickr, others; not ``sts12-16``).

    Rows come in the order sts12 ... sts16, sts12-16, stsb, sickr, other tasks (sorted), avg.
    With ``bootstrap``, every row carries ``ci_low`` / ``ci_high``: the pairs of each reported
    task are one query set (``"<task> pairs"``), and the summaries are recomputed per resample
    (:mod:`softref.evaluate.intervals`).
    """
    for column in ("task", "score"):
        if column not in pairs_df.columns:
            raise ValueError(f"sts_table: pairs frame has no column {column!r}; found {list(pairs_df.columns)}")
    num_pairs = len(pairs_df)
    a = _unit(emb1, "emb1")
    b = _unit(emb2, "emb2", a.device)
    if not a.shape[0] == b.shape[0] == num_pairs:
        raise ValueError(
            f"sts_table: expected one row of emb1 ({a.shape[0]}) and emb2 ({b.shape[0]}) per pair ({num_pairs})"
        )
    groups: dict[str, list[int]] = {}
    for position, task in enumerate(pairs_df["task"].tolist()):
        groups.setdefault(_sts_group(str(task)), []).append(position)
    gold = pairs_df["score"].to_numpy(dtype=np.float64)
    values: dict[str, float] = {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, positions in groups.items():
        index = torch.as_tensor(positions, device=a.device)
        try:
            pairs[name] = _sts_cosines(a[index], b[index], gold[positions])
            values[name] = _spearman(*pairs[name])
        except ValueError as err:
            raise ValueError(f"sts_table: task {name!r} ({len(positions)} pairs): {err}") from err

    years = [y.lower() for y in STS_YEAR_NAMES if y.lower() in values]
    if years and len(years) < len(STS_YEAR_NAMES):
        logger.info("STS: sts12-16 not reported: years %s present, the mean needs all five", years)
    rows = [metric_row(name, "t2t", "spearman", float(value)) for name, value in _sts_layout(values)]
    if bootstrap is None:
        return rows
    replicates = {name: bootstrap.spearman(f"{name} pairs", *pairs[name]) for name in sorted(pairs)}
    return attach_intervals(rows, {(name, "t2t", "spearman", ""): reps for name, reps in _sts_layout(replicates)})


# ---------------------------------------------------------------------------------------------
# Zero-shot retrieval and classification (Reed et al.; MMRef on CUB and Flowers)
# ---------------------------------------------------------------------------------------------


def zero_shot_scores(
    image_emb: Any, image_labels: Sequence[Any], text_emb: Any, text_labels: Sequence[Any], k: int = 50
) -> dict[str, dict[str, float]]:
    """Reed et al.'s zero-shot protocol with class-mean caption embeddings, in percent.

    Each class with captions gets one embedding: the mean of its L2-normalised caption
    embeddings, re-normalised. Scores are cosines.

    - Text-to-image ``AP@k``: each class embedding ranks all images (ties to the lower index).
      With ``hit_j`` = 1 when the image at rank j (1-based) is of the class and ``P@j`` the
      precision of the top j: ``AP@k = sum_{j<=k} hit_j * P@j / sum_{j<=k} hit_j`` (0 when the
      top k holds no hit), averaged over the classes. ``k`` is capped at the number of images.
    - ``P@k`` (reported beside it): the share of the top k images that are of the class,
      averaged over the classes.
    - Image-to-text ``top-1``: the share of images whose most similar class embedding (ties to
      the class that comes first in sorted label order) is their own class.

    Every class must have images and captions (the message names those that miss either).

    Returns:
        ``{"t2i": {f"AP@{k}", f"P@{k}"}, "i2t": {"top-1"}}``.
    """
    scores, _ = zero_shot_scores_per_query(image_emb, image_labels, text_emb, text_labels, k)
    return scores


def _zero_shot_values(image_emb: Any, image_labels: Sequence[Any], text_emb: Any, text_labels: Sequence[Any],
                      k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per class AP@k and P@k (fractions), per image whether its nearest class is its own."""
    image = _unit(image_emb, "image_emb")
    text = _unit(text_emb, "text_emb", image.device)
    _same_dim(image, text, "image_emb", "text_emb")
    image_values = _labels(image_labels, image.shape[0], "image_labels")
    text_values = _labels(text_labels, text.shape[0], "text_labels")
    classes = sorted(set(text_values), key=lambda v: (str(type(v)), v))
    no_images = sorted(set(classes) - set(image_values), key=str)
    no_texts = sorted(set(image_values) - set(classes), key=str)
    if no_images or no_texts:
        raise ValueError(
            f"zero-shot: every class needs images and captions; {len(no_images)} class(es) have no image "
            f"(first {no_images[:5]}), {len(no_texts)} have no caption (first {no_texts[:5]})"
        )
    class_index = {c: i for i, c in enumerate(classes)}
    text_codes = torch.as_tensor([class_index[v] for v in text_values], device=image.device)
    image_codes = torch.as_tensor([class_index[v] for v in image_values], device=image.device)
    sums = torch.zeros(len(classes), text.shape[1], dtype=text.dtype, device=text.device)
    sums.index_add_(0, text_codes, text)
    means = sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)

    top = min(k, image.shape[0])
    scores = means @ image.T  # (C, I)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top]
    hits = (image_codes[order] == torch.arange(len(classes), device=image.device)[:, None]).double()
    ranks = torch.arange(1, top + 1, device=image.device, dtype=torch.float64)
    found = hits.sum(dim=1)
    precision_sum = (hits.cumsum(dim=1) / ranks * hits).sum(dim=1)
    average_precision = torch.where(found > 0, precision_sum / found.clamp_min(1), torch.zeros_like(found))
    precision_at_k = found / top

    nearest = (image @ means.T).argmax(dim=1)  # first maximal index: ties to the earlier class
    return average_precision, precision_at_k, nearest == image_codes


def zero_shot_scores_per_query(
    image_emb: Any, image_labels: Sequence[Any], text_emb: Any, text_labels: Sequence[Any], k: int = 50
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """``(zero_shot_scores(...), per_query)``: the numbers and the per-query values they average, in
    percent: ``per_query["t2i"]`` per class (in sorted label order; ``AP@k``, ``P@k``),
    ``per_query["i2t"]["top-1"]`` per image (100 when its nearest class is its own, else 0)."""
    if int(k) != k or k < 1:
        raise ValueError(f"k: expected a positive integer, found {k!r}")
    k = int(k)
    average_precision, precision_at_k, correct = _zero_shot_values(image_emb, image_labels, text_emb, text_labels, k)
    top1 = correct.double().mean()
    scores = {
        "t2i": {f"AP@{k}": 100.0 * float(average_precision.mean()), f"P@{k}": 100.0 * float(precision_at_k.mean())},
        "i2t": {"top-1": 100.0 * float(top1)},
    }
    per_query = {
        "t2i": {f"AP@{k}": 100.0 * average_precision.cpu().numpy(), f"P@{k}": 100.0 * precision_at_k.cpu().numpy()},
        "i2t": {"top-1": 100.0 * correct.cpu().numpy().astype(np.float64)},
    }
    return scores, per_query


# ---------------------------------------------------------------------------------------------
# Text-to-person retrieval (MMRef)
# ---------------------------------------------------------------------------------------------


def refine_parameters(refine: Any) -> dict[str, Any]:
    """``{"k", "tau", "top_k", "lam"}`` of a RefineConfig-like object (attributes) or mapping."""
    params = {}
    for name in ("k", "tau", "top_k", "lam"):
        if isinstance(refine, Mapping):
            if name not in refine:
                raise ValueError(
                    f"refine: key {name!r} missing; expected k, tau, top_k and lam, found {sorted(refine)}"
                )
            params[name] = refine[name]
        elif hasattr(refine, name):
            params[name] = getattr(refine, name)
        else:
            raise ValueError(
                f"refine: attribute {name!r} missing on {type(refine).__name__}; expected k, tau, top_k, lam"
            )
    return params


def person_scores(
    text_emb: Any,
    text_labels: Sequence[Any],
    image_emb: Any,
    image_labels: Sequence[Any],
    *,
    references: Any | None = None,
    refine: Any | None = None,
    dataset: str = "",
    bootstrap: Bootstrap | None = None,
) -> list[dict[str, Any]]:
    """Text-to-person retrieval rows ("t2i", R@1 / R@5 / R@10 / mAP / mINP), in percent.

    Captions query the image gallery by cosine; a hit is an image of the caption's identity;
    the metrics are :func:`~softref.evaluate.metrics.cmc_map_minp`'s (IRRA's ``rank``), rows
    with variant ``""``. With ``references`` (M, D) in the embeddings' space (the student's
    reference bank) and ``refine`` (an object or mapping with ``k``, ``tau``, ``top_k``,
    ``lam``, e.g. a RefineConfig), the same metrics on
    :func:`~softref.evaluate.refine.refine_scores` follow with variant ``"refined"``;
    ``lam = 0`` reproduces the plain numbers.

    Args:
        dataset: the ``dataset`` field of the rows.
        bootstrap: when given, every row carries ``ci_low`` / ``ci_high``: the captions are one
            query set (``"captions"``), resampled once for both variants, with each caption's
            first-hit rank, AP and INP under each ranking (:mod:`softref.evaluate.intervals`).
    """
    text = _unit(text_emb, "text_emb")
    image = _unit(image_emb, "image_emb", text.device)
    _same_dim(text, image, "text_emb", "image_emb")
    query_labels = _labels(text_labels, text.shape[0], "text_labels")
    gallery_labels = _labels(image_labels, image.shape[0], "image_labels")
    query_codes, gallery_codes = _codes(query_labels, gallery_labels)
    scores = text @ image.T
    variants = {"": scores}
    if refine is not None:
        if references is None:
            raise ValueError("person_scores: refine was given without references; the refined variant needs both")
        params = refine_parameters(refine)
        bank = _unit(references, "references", text.device)
        _same_dim(text, bank, "text_emb", "references")
        variants["refined"] = refine_scores(scores, text, image, bank, **params)
    rows = []
    per_query: dict[str, np.ndarray] = {}
    for variant, matrix in variants.items():
        found = cmc_map_minp_per_query(matrix, query_codes, gallery_codes, max_rank=10)
        rows += [metric_row(dataset, "t2i", name, found.means[name], variant) for name in _PERSON_METRICS]
        for name in _PERSON_METRICS:
            values = found.per_query[name] if name in ("mAP", "mINP") else \
                100.0 * (found.per_query["rank"] < int(name[2:]))
            per_query[f"{variant}/{name}"] = values
    if bootstrap is None:
        return rows
    replicates = bootstrap.means("captions", per_query)
    return attach_intervals(rows, {row_key(r): replicates[f"{r['variant']}/{r['metric']}"] for r in rows})
