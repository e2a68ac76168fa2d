"""The test items behind a run's embeddings (image files, captions, identities) and what a benchmark
counts as relevant, for the figures that show rankings.

Relevance follows the benchmark's own protocol: ECCV Caption's positives for an ``eccv`` benchmark
with ``relevance: eccv`` (read with :func:`softref.data.imagetext.load_eccv_annotations` from the
benchmark's ``eccv_dir``, the demo's ``coco/eccv``), else every image and caption of one identity
(the manifests' ``identity``; for COCO and Flickr that is the image itself, so only the annotated
pair). The annotated pair is always relevant; an item relevant by the ground truth but not the
annotated pair is what CUSA's case study calls relevant but unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from softref.config import BenchmarkConfig
from softref.data.images import load_rgb
from softref.data.manifest import read_images, read_texts
from softref.figures.embeddings import Embeddings


__all__ = ["Items", "Relevance", "benchmark_relevance", "load_items", "ranks_of_first", "thumbnail"]


@dataclass(frozen=True)
class Items:
    """The images and captions of an embeddings file, in its order, with their manifest facts."""

    root: Path
    image_ids: tuple[str, ...]
    image_paths: tuple[str, ...]
    image_identities: tuple[str, ...]
    text_ids: tuple[str, ...]
    captions: tuple[str, ...]
    text_identities: tuple[str, ...]
    text_image_ids: tuple[str, ...]

    def paired(self) -> np.ndarray:
        """(I, T) bool: caption t annotates image i."""
        index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        out = np.zeros((len(self.image_ids), len(self.text_ids)), dtype=bool)
        out[[index[i] for i in self.text_image_ids], np.arange(len(self.text_ids))] = True
        return out


@dataclass(frozen=True)
class Relevance:
    """What a benchmark counts as relevant: ``relevant`` (I, T) bool, which text queries its ground
    truth covers (``queries``, (T,) bool) and its name for legends."""

    relevant: np.ndarray
    queries: np.ndarray
    name: str


def _lookup(frame: pd.DataFrame, key: str, ids: tuple[str, ...], path: Path) -> pd.DataFrame:
    rows = frame.set_index(key).reindex(list(ids))
    missing = [i for i, ok in zip(ids, rows["identity"].notna()) if not ok]
    if missing:
        raise ValueError(f"{path}: {len(missing)} id(s) of the embeddings are not in the manifest; first {missing[:5]}")
    return rows


def load_items(emb: Embeddings, images_manifest: Path, texts_manifest: Path, root: Path) -> Items:
    """The manifests' rows of the embeddings' images and captions, in the embeddings' order."""
    images = _lookup(read_images(Path(images_manifest)), "image_id", emb.image_ids, Path(images_manifest))
    texts = _lookup(read_texts(Path(texts_manifest)), "text_id", emb.text_ids, Path(texts_manifest))
    return Items(
        root=Path(root), image_ids=emb.image_ids, image_paths=tuple(images["path"]),
        image_identities=tuple(str(i) for i in images["identity"]), text_ids=emb.text_ids,
        captions=tuple(texts["caption"]), text_identities=tuple(str(i) for i in texts["identity"]),
        text_image_ids=tuple(texts["image_id"]),
    )


def _eccv_relevance(items: Items, benchmark: BenchmarkConfig, root: Path) -> Relevance:
    from softref.data.imagetext import load_eccv_annotations

    folder = benchmark.options.get("eccv_dir")
    if folder is not None and not Path(folder).is_absolute():
        folder = Path(root) / folder
    annotations = load_eccv_annotations(folder)
    images = {int(i): k for k, i in enumerate(items.image_ids)}
    texts = {int(t): k for k, t in enumerate(items.text_ids)}
    relevant, queries = items.paired(), np.zeros(len(items.text_ids), dtype=bool)
    for caption, positives in annotations.caption_to_image.items():
        if caption in texts:
            queries[texts[caption]] = True
            relevant[[images[p] for p in positives if p in images], texts[caption]] = True
    for image, positives in annotations.image_to_caption.items():
        if image in images:
            relevant[images[image], [texts[p] for p in positives if p in texts]] = True
    return Relevance(relevant, queries, f"ECCV Caption positives ({annotations.source})")


def benchmark_relevance(items: Items, benchmark: BenchmarkConfig, root: Path) -> Relevance:
    """The benchmark's relevance over ``items`` (module docstring)."""
    if benchmark.protocol == "eccv" and benchmark.options.get("relevance", "eccv") == "eccv":
        return _eccv_relevance(items, benchmark, root)
    image = np.asarray(items.image_identities, dtype=object)
    text = np.asarray(items.text_identities, dtype=object)
    relevant = (image[:, None] == text[None, :]) | items.paired()
    return Relevance(relevant, np.ones(len(items.text_ids), dtype=bool), "same identity")


def ranks_of_first(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(Q,) 1-based rank of each query row's first relevant column under ``scores`` (Q, G), stable
    descending order (ties to the lower index); G + 1 where a row has none."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    first = hits.argmax(axis=1) + 1
    return np.where(hits.any(axis=1), first, scores.shape[1] + 1)


def thumbnail(items: Items, image: int) -> np.ndarray:
    """The pixels of image ``image`` of ``items`` (H, W, 3 uint8)."""
    return np.asarray(load_rgb(items.root / items.image_paths[image]))
