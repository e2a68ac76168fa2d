"""MMRef's figures: a query's gallery before and after reference-based refinement, and an identity's
reference neighbours.

Refinement: the student's text queries rank the test gallery by cosine, and
:func:`softref.evaluate.refine.refine_scores` re-ranks them with the student's trained reference bank
and the benchmark's ``refine`` parameters, as the evaluation does. The query shown is chosen by a
fixed rule: the one whose first hit (an image of its identity) moves up most (ties: manifest
order). Its top-10 before and after are drawn with hits marked.

Neighbours: the identities of the teacher references' FAISS neighbours table
(``results/references/{dataset}/{teachers}.neighbours.parquet``) at evenly spaced positions of their
sorted list (first, middle, last for three), each with its nearest identities by rank; each identity
is shown by its first image (manifest order) of the references' split, with the cosine of the
multi-modal references.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from softref.figures.embeddings import Embeddings
from softref.figures.items import Items, ranks_of_first, thumbnail
from softref.figures.style import HIT, MISS, figure, image_panel, save


__all__ = ["GALLERY", "REFINEMENT_HEIGHT", "anchor_identities", "neighbours_height", "plot_neighbours",
           "plot_refinement", "refined_query"]

#: Gallery items shown per ranking.
GALLERY = 10
#: Height (inches) of the refinement figure.
REFINEMENT_HEIGHT = 3.9


def neighbours_height(rows: int) -> float:
    """Height (inches) of a neighbours figure with ``rows`` identities."""
    return 0.6 + 1.55 * rows


def refined_query(scores: np.ndarray, refined: np.ndarray, relevant: np.ndarray) -> tuple[int, int, int]:
    """(query row, first-hit rank before, after): the query whose first hit moves up most."""
    before, after = ranks_of_first(scores, relevant), ranks_of_first(refined, relevant)
    change = before - after
    row = int(np.lexsort((np.arange(len(change)), -change))[0])
    return row, int(before[row]), int(after[row])


def _refined_scores(emb: Embeddings, refine: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from softref.evaluate.refine import refine_scores

    if emb.references is None:
        raise ValueError(f"refinement figure: the embeddings of {emb.meta.get('experiment')!r} carry no trained "
                         "reference bank (only mmref students whose bank trains have one)")
    scores = (emb.text_emb @ emb.image_emb.T).astype(np.float32)
    refs = emb.references / np.linalg.norm(emb.references, axis=1, keepdims=True).clip(min=1e-12)
    refined = refine_scores(scores, emb.text_emb, emb.image_emb, refs, **{k: refine[k] for k in ("k", "tau", "top_k", "lam")})
    return scores, np.asarray(refined)


def plot_refinement(items: Items, emb: Embeddings, refine: Mapping[str, Any], *, title: str, out: Path,
                    dpi: int) -> Path:
    """A text query's top-10 gallery before (top row) and after refinement (bottom row), hits framed."""
    scores, refined = _refined_scores(emb, refine)
    relevant = np.asarray(items.text_identities, dtype=object)[:, None] == np.asarray(items.image_identities,
                                                                                      dtype=object)[None, :]
    row, before, after = refined_query(scores, refined, relevant)
    shown = min(GALLERY, scores.shape[1])
    with figure(REFINEMENT_HEIGHT, 2, shown) as (fig, axes):
        for r, (name, matrix) in enumerate((("initial ranking", scores), ("after refinement", refined))):
            order = np.argsort(-matrix[row], kind="stable")[:shown]
            for k, image in enumerate(order):
                hit = bool(relevant[row, image])
                image_panel(axes[r, k], thumbnail(items, int(image)), border=HIT if hit else MISS, title=f"#{k + 1}")
            axes[r, 0].set_ylabel(name, fontsize=7)
        params = ", ".join(f"{k}={refine[k]}" for k in ("k", "tau", "top_k", "lam"))
        fig.suptitle(f"{title}\nquery: {textwrap.shorten(items.captions[row], 150)}\nfirst hit at rank {before} -> "
                     f"{after} (refinement {params}; green: an image of the query's identity)", fontsize=7.5)
        return save(fig, out, dpi)


def anchor_identities(identities: list[str], count: int) -> list[str]:
    """``count`` identities at evenly spaced positions of the sorted list (first and last included)."""
    names = sorted(identities)
    positions = np.unique(np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int))
    return [names[p] for p in positions]


def _first_images(images: pd.DataFrame, split: str) -> dict[str, str]:
    rows = images[images["split"] == split].sort_values("image_id")
    return dict(rows.groupby("identity", sort=False)["path"].first())


def plot_neighbours(neighbours: pd.DataFrame, images: pd.DataFrame, root: Path, *, split: str, title: str,
                    out: Path, dpi: int, anchors: int = 3, k: int = 5) -> Path:
    """Rows of an identity (left) and its ``k`` nearest identities by the teacher references."""
    first = _first_images(images, split)
    chosen = anchor_identities(list(neighbours["identity"].unique()), anchors)
    k = min(k, int(neighbours["rank"].max()))
    with figure(neighbours_height(len(chosen)), len(chosen), k + 1) as (fig, axes):
        for r, identity in enumerate(chosen):
            rows = neighbours[neighbours["identity"] == identity].sort_values("rank").head(k)
            cells = [(identity, "identity " + identity)]
            cells += [(n, f"rank {rank}: {n}\ncos {score:.3f}") for n, rank, score in
                      zip(rows["neighbour"], rows["rank"], rows["score"])]
            for c, (name, label) in enumerate(cells):
                ax = axes[r, c]
                if name not in first:
                    raise ValueError(f"{out}: identity {name!r} has no image of split {split!r} in the manifest")
                image_panel(ax, np.asarray(_load(root, first[name])), border=HIT if c == 0 else None, title=label)
        fig.suptitle(f"{title}\nidentities (framed) and their {k} nearest identities by the teacher references",
                     fontsize=8)
        return save(fig, out, dpi)


def _load(root: Path, path: str) -> Any:
    from softref.data.images import load_rgb

    return load_rgb(Path(root) / path)

