"""CUSA Figure 5, the case study: what the baseline and the compared method retrieve, side by side.

(a) Text queries and each model's top-3 images. The queries are chosen by a fixed rule: among the
captions the benchmark's ground truth covers, the ``figures.case_queries`` whose rank of the first
relevant image improves most from the baseline to the compared method (ties: manifest order), and
one more, the caption it hurts most, when some caption got worse. (b) The two test images most
alike under the baseline (highest cosine of its image embeddings) and each model's top-2 captions
for each.

Every retrieved item is marked: the annotated match (the pair the dataset labels), relevant but not
labelled (relevant by the benchmark's ground truth, :func:`softref.figures.items.benchmark_relevance`),
or not relevant.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softref.figures.items import Items, Relevance, ranks_of_first, thumbnail
from softref.figures.style import HIT, MISS, RELEVANT, figure, image_panel, save

__all__ = ["Model", "Query", "case_study_height", "choose_queries", "plot_case_study", "similar_pair"]

_TOP_IMAGES, _TOP_TEXTS = 3, 2


@dataclass(frozen=True)
class Model:
    """One side of the comparison: its name in the figure and its embeddings of the items."""

    name: str
    image_emb: np.ndarray
    text_emb: np.ndarray


@dataclass(frozen=True)
class Query:
    """A chosen text query: its row and the 1-based rank of its first relevant image under each model."""

    row: int
    baseline_rank: int
    other_rank: int


def choose_queries(baseline: Model, other: Model, relevance: Relevance, count: int) -> list[Query]:
    """The case study's queries (module docstring): the ``count`` most improved, then the most hurt."""
    relevant_t2i = relevance.relevant.T
    rank_b = ranks_of_first(baseline.text_emb @ baseline.image_emb.T, relevant_t2i)
    rank_o = ranks_of_first(other.text_emb @ other.image_emb.T, relevant_t2i)
    rows = np.flatnonzero(relevance.queries & relevant_t2i.any(axis=1))
    if rows.size == 0:
        raise ValueError("case study: no caption has a relevant image under the benchmark's ground truth")
    change = rank_b[rows] - rank_o[rows]
    order = rows[np.lexsort((rows, -change))]
    chosen = list(order[:count])
    worst = rows[np.lexsort((rows, change))][0]
    if rank_b[worst] < rank_o[worst] and worst not in chosen:
        chosen.append(worst)
    return [Query(int(r), int(rank_b[r]), int(rank_o[r])) for r in chosen]


def similar_pair(image_emb: np.ndarray) -> tuple[int, int]:
    """(i, j), i < j: the two rows of ``image_emb`` with the highest cosine (ties: the first pair)."""
    if len(image_emb) < 2:
        raise ValueError(f"case study: two images needed, found {len(image_emb)}")
    unit = image_emb / np.linalg.norm(image_emb, axis=1, keepdims=True).clip(min=1e-12)
    sims = np.triu(unit @ unit.T, k=1)
    sims[np.tril_indices(len(unit))] = -np.inf
    i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    return int(i), int(j)


def case_study_height(num_queries: int) -> float:
    """Height (inches) of a case study with ``num_queries`` query rows."""
    return 0.75 + 0.95 * num_queries + 0.35 + 2 * 1.05


def _mark(relevance: Relevance, paired: np.ndarray, image: int, text: int) -> str:
    if paired[image, text]:
        return HIT
    return RELEVANT if relevance.relevant[image, text] else MISS


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def _queries_part(subfig, items: Items, models: tuple[Model, Model], relevance: Relevance, queries: list[Query],
                  paired: np.ndarray) -> None:
    grid = subfig.add_gridspec(len(queries), 8, width_ratios=[2.3, 1, 1, 1, 0.12, 1, 1, 1])
    for r, q in enumerate(queries):
        ax = subfig.add_subplot(grid[r, 0])
        ax.axis("off")
        ranks = f"first relevant image at rank {q.baseline_rank} \u2192 {q.other_rank}"
        ax.text(0, 1, textwrap.fill(items.captions[q.row], 40) + f"\n({ranks})", va="top", fontsize=6.3,
                transform=ax.transAxes)
        for side, (model, start) in enumerate(zip(models, (1, 5))):
            for k, image in enumerate(_top(model.image_emb @ model.text_emb[q.row], _TOP_IMAGES)):
                cell = subfig.add_subplot(grid[r, start + k])
                header = f"{model.name}\n#{k + 1}" if r == 0 else f"#{k + 1}"
                image_panel(cell, thumbnail(items, int(image)), border=_mark(relevance, paired, int(image), q.row),
                            title=header)
    subfig.suptitle("(a) text queries and the top-3 images of each model", fontsize=8, x=0.02, ha="left")


def _images_part(subfig, items: Items, models: tuple[Model, Model], relevance: Relevance, pair: tuple[int, int],
                 paired: np.ndarray) -> None:
    grid = subfig.add_gridspec(2, 3, width_ratios=[0.8, 3, 3])
    for r, image in enumerate(pair):
        image_panel(subfig.add_subplot(grid[r, 0]), thumbnail(items, image), title=f"image {items.image_ids[image]}")
        for side, model in enumerate(models):
            ax = subfig.add_subplot(grid[r, 1 + side])
            ax.axis("off")
            if r == 0:
                ax.set_title(model.name, fontsize=7)
            for k, text in enumerate(_top(model.text_emb @ model.image_emb[image], _TOP_TEXTS)):
                y = 1 - 0.5 * k
                ax.text(0, y, "\u25a0", color=_mark(relevance, paired, image, int(text)), va="top", fontsize=8,
                        transform=ax.transAxes)
                ax.text(0.05, y, textwrap.fill(items.captions[int(text)], 58), va="top", fontsize=6,
                        transform=ax.transAxes)
    subfig.suptitle("(b) the two most similar test images (baseline cosine) and the top-2 captions of each model",
                    fontsize=8, x=0.02, ha="left")


def plot_case_study(items: Items, relevance: Relevance, baseline: Model, other: Model, *, count: int, title: str,
                    out: Path, dpi: int) -> Path:
    """Draw the case study (module docstring) of ``baseline`` against ``other`` on ``items``."""
    for model in (baseline, other):
        if model.image_emb.shape[0] != len(items.image_ids) or model.text_emb.shape[0] != len(items.text_ids):
            raise ValueError(f"{out}: {model.name}'s embeddings do not cover the items "
                             f"({model.image_emb.shape[0]} images, {model.text_emb.shape[0]} texts)")
    queries = choose_queries(baseline, other, relevance, count)
    pair, paired, models = similar_pair(baseline.image_emb), items.paired(), (baseline, other)
    with figure(case_study_height(len(queries)), nrows=0) as (fig, _):
        top, bottom = fig.subfigures(2, 1, height_ratios=[0.35 + 0.95 * len(queries), 2.4])
        _queries_part(top, items, models, relevance, queries, paired)
        _images_part(bottom, items, models, relevance, pair, paired)
        from matplotlib.patches import Patch

        handles = [Patch(color=HIT, label="the annotated match"),
                   Patch(color=RELEVANT, label=f"relevant, not labelled ({relevance.name.split(' (')[0]})"),
                   Patch(color=MISS, label="not relevant")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle(title, fontsize=8.5)
        return save(fig, out, dpi)
