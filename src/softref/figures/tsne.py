"""CUSA Figure 4: t-SNE of test image and text embeddings without and with USA, the same items in
both panels, coloured by identity (or class).

The items are every test image and caption of ``figures.tsne_identities`` identities drawn with
``figures.seed`` from the split's identities (for COCO, where the identity is the image, that many
images and their captions). Each panel is its own t-SNE (scikit-learn, Barnes-Hut, PCA
initialisation, ``random_state = figures.seed``, one thread so the result does not depend on the
machine's core count) of that model's images and captions together. A t-SNE's layout says little
on its own; each panel's title also gives a number measured in the embedding space itself: the
share of each item's 5 nearest neighbours (cosine, images and captions together) that belong to
its identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softref.figures.items import Items
from softref.figures.style import colour, figure, save

__all__ = ["HEIGHT", "NEIGHBOURS", "identity_agreement", "plot_tsne", "tsne_2d", "tsne_rows"]

#: Height (inches) of the figure.
HEIGHT = 3.9

#: Neighbours per item of the panels' identity-agreement number.
NEIGHBOURS = 5


def tsne_rows(items: Items, identities: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(image rows, text rows, identities): the items of ``identities`` identities drawn with ``seed``."""
    names = sorted(set(items.image_identities))
    rng = np.random.default_rng(seed)
    chosen = sorted(names[i] for i in rng.choice(len(names), size=min(identities, len(names)), replace=False))
    keep = set(chosen)
    images = np.array([i for i, name in enumerate(items.image_identities) if name in keep], dtype=np.int64)
    texts = np.array([t for t, name in enumerate(items.text_identities) if name in keep], dtype=np.int64)
    return images, texts, chosen


def tsne_2d(points: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) t-SNE of ``points`` (N, D): perplexity min(30, (N - 1) / 3), PCA start, one thread."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(points)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 items, found {n}")
    perplexity = min(30.0, (n - 1) / 3.0)
    with threadpool_limits(limits=1):
        model = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                     n_jobs=1)
        return model.fit_transform(np.asarray(points, dtype=np.float64))


def identity_agreement(points: np.ndarray, labels: Sequence[str], k: int = NEIGHBOURS) -> float:
    """Mean share of each row's ``k`` nearest other rows (cosine) with the row's label."""
    unit = points / np.linalg.norm(points, axis=1, keepdims=True).clip(min=1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(points) - 1)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    labels = np.asarray(labels, dtype=object)
    return float((labels[nearest] == labels[:, None]).mean())


def plot_tsne(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], image_labels: Sequence[str],
              text_labels: Sequence[str], *, title: str, out: Path, dpi: int, seed: int) -> Path:
    """One t-SNE panel per (title, image embeddings (I, D), text embeddings (T, D)), all of the same
    items; points coloured by label, images as dots, captions as triangles."""
    names = sorted(set(image_labels) | set(text_labels))
    shade = {name: colour(i) for i, name in enumerate(names)}
    labels = list(image_labels) + list(text_labels)
    with figure(HEIGHT, 1, len(panels)) as (fig, axes):
        for ax, (name, image, text) in zip(axes[0], panels):
            points = np.concatenate([image, text])
            xy = tsne_2d(points, seed)
            n = len(image)
            ax.scatter(xy[n:, 0], xy[n:, 1], c=[shade[x] for x in text_labels], marker="^", s=9, alpha=0.6, lw=0)
            ax.scatter(xy[:n, 0], xy[:n, 1], c=[shade[x] for x in image_labels], marker="o", s=22,
                       edgecolors="black", linewidths=0.4)
            ax.set_title(f"{name}\nsame-identity share of {NEIGHBOURS}-NN: {identity_agreement(points, labels):.2f}")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("0.7")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", ls="", color="0.5", markeredgecolor="black", label="image"),
                   Line2D([], [], marker="^", ls="", color="0.5", label="caption")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle(f"{title}: {len(image_labels)} images and {len(text_labels)} captions of "
                     f"{len(names)} identities (one colour each)", fontsize=8.5)
        return save(fig, out, dpi)
