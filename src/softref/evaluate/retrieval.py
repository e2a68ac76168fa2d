"""Image-text retrieval evaluation (COCO 5K / Flickr30K 1K protocol) with the cross-modal heads.

The images and captions of a manifest split are encoded with the student's cross-modal heads;
``scores = img @ txt.T``; a caption is relevant to the image it annotates. Image-to-text
recall ranks the captions for each image, text-to-image recall the images for each caption;
RSUM is the sum of R@1, R@5 and R@10 in both directions. The trainer's validation uses the
same functions (:func:`split_items`, :func:`encode_split`, :func:`image_text_metrics`) on the
val split, so model selection and the final evaluation measure the same thing; with the
experiment key ``val_max_images`` its per-epoch validation reads :meth:`SplitItems.first_images`
of the val split, and the selected model is measured once more on the whole split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from softref.data.manifest import read_images, read_texts
from softref.evaluate.encode import encode_images, encode_texts
from softref.evaluate.metrics import recall_at_k_both_ways
from softref.files import file_sha256, write_text_atomic
from softref.models.student import load_student
from softref.runtime import default_device

__all__ = [
    "KS",
    "SplitItems",
    "split_items",
    "encode_split",
    "image_text_metrics",
    "evaluate_image_text",
    "write_json",
]

logger = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class SplitItems:
    """The images and captions of one manifest split, in manifest (id) order.

    Only images with at least one caption in the split are kept: an image without a caption
    would be an image-to-text query with nothing to find.
    """

    split: str
    image_ids: tuple[str, ...]
    image_paths: tuple[str, ...]
    text_ids: tuple[str, ...]
    captions: tuple[str, ...]
    text_image_ids: tuple[str, ...]
    image_identities: tuple[str, ...] = ()
    text_identities: tuple[str, ...] = ()

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_texts(self) -> int:
        return len(self.text_ids)

    def first_images(self, count: int) -> SplitItems:
        """The split cut to its first ``count`` images (manifest order) and only their captions.

        The captions kept are those whose image is among the first ``count``, in their own manifest
        order; identities are cut alike. With ``count`` >= :attr:`num_images` the items themselves.
        Every image kept has a caption (the split keeps no image without one), so the cut split is
        a valid evaluation in both directions: the trainer's cheaper per-epoch validation
        (``val_max_images``).

        Raises:
            ValueError: ``count`` is not an integer >= 1.
        """
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"split {self.split!r}: first_images expects an integer >= 1, found {count!r}")
        if count >= self.num_images:
            return self
        kept = set(self.image_ids[:count])
        texts = [j for j, image_id in enumerate(self.text_image_ids) if image_id in kept]

        def pick(values: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(values[j] for j in texts)

        with_identities = len(self.text_identities) == self.num_texts
        return dataclasses.replace(
            self,
            image_ids=self.image_ids[:count],
            image_paths=self.image_paths[:count],
            image_identities=self.image_identities[:count],
            text_ids=pick(self.text_ids),
            captions=pick(self.captions),
            text_image_ids=pick(self.text_image_ids),
            text_identities=pick(self.text_identities) if with_identities else self.text_identities,
        )

    def relevant(self) -> np.ndarray:
        """(num_images, num_texts) bool: relevant[i, j] when caption j annotates image i."""
        index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        rows = np.fromiter((index[i] for i in self.text_image_ids), dtype=np.int64, count=self.num_texts)
        relevant = np.zeros((self.num_images, self.num_texts), dtype=bool)
        relevant[rows, np.arange(self.num_texts)] = True
        return relevant

    def identity_relevant(self) -> np.ndarray:
        """(num_images, num_texts) bool: every caption of an image's identity is relevant to it."""
        if len(self.image_identities) != self.num_images or len(self.text_identities) != self.num_texts:
            raise ValueError(f"split {self.split!r}: the items carry no identities")
        image = np.asarray(self.image_identities, dtype=object)
        text = np.asarray(self.text_identities, dtype=object)
        return image[:, None] == text[None, :]


def split_items(images_manifest: Path, texts_manifest: Path, split: str) -> SplitItems:
    """Read the images and captions of ``split`` from the manifests.

    Raises:
        ValueError: no caption in the split, or a caption whose image is not an image of the
            split in ``images_manifest`` (the message names the file and the first ids).
    """
    images = read_images(Path(images_manifest))
    texts = read_texts(Path(texts_manifest))
    texts = texts[texts["split"] == split]
    if texts.empty:
        found = sorted(read_texts(Path(texts_manifest))["split"].unique().tolist())
        raise ValueError(f"{texts_manifest}: no caption with split {split!r}; splits found: {found}")
    images = images[images["split"] == split]
    known = set(images["image_id"])
    orphans = sorted(set(texts["image_id"]) - known)
    if orphans:
        raise ValueError(
            f"{texts_manifest}: {len(orphans)} caption image_id(s) of split {split!r} are not images "
            f"of that split in {images_manifest}; first: {orphans[:5]}"
        )
    with_captions = images["image_id"].isin(set(texts["image_id"]))
    if not with_captions.all():
        logger.warning(
            "%s: %d image(s) of split %r have no caption and are left out of the evaluation",
            images_manifest,
            int((~with_captions).sum()),
            split,
        )
        images = images[with_captions]
    return SplitItems(
        split=split,
        image_ids=tuple(images["image_id"].tolist()),
        image_paths=tuple(images["path"].tolist()),
        text_ids=tuple(texts["text_id"].tolist()),
        captions=tuple(texts["caption"].tolist()),
        text_image_ids=tuple(texts["image_id"].tolist()),
        image_identities=tuple(images["identity"].tolist()),
        text_identities=tuple(texts["identity"].tolist()),
    )


@torch.no_grad()
def encode_split(
    model: torch.nn.Module,
    items: SplitItems,
    dataset_root: Path,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    head: str = "cross",
    desc: str = "",
) -> tuple[Tensor, Tensor]:
    """Encode the split's images and captions: ((I, D), (T, D)) L2-normalised float32 on CPU.

    ``model`` is a :class:`~softref.models.student.Student` (its ``transform``,
    ``tokenize``, ``encode_image`` and ``encode_text`` are used); it is put in eval mode and
    left there.
    """
    image_emb = encode_images(model, Path(dataset_root), items.image_paths, head=head, batch_size=batch_size,
                              device=device, num_workers=num_workers, desc=f"{desc} images".strip())
    text_emb = encode_texts(model, items.captions, head=head, batch_size=batch_size, device=device,
                            desc=f"{desc} captions".strip())
    return image_emb, text_emb


def image_text_metrics(image_emb: Tensor, text_emb: Tensor, relevant: np.ndarray | Tensor, *,
                       device: str | torch.device | None = None) -> dict[str, Any]:
    """R@1/5/10 in both directions and RSUM: {"i2t": {"R@1", ...}, "t2i": {...}, "rsum"}.

    ``scores = image_emb @ text_emb.T``; i2t ranks captions per image with ``relevant``,
    t2i ranks images per caption with ``relevant.T``.

    ``device``: where the score matrix is made and ranked (the embeddings are moved there; the
    relevance's pair list follows them); None: the embeddings' own device. :func:`encode_split`
    returns CPU tensors, so the trainer and :func:`evaluate_image_text` pass their device: on a
    GPU the (I, T) scores and the ranking passes stay on it. On the CPU the result is the same
    floats as without the argument; another device's GEMM may differ in the last bits of a score
    (the ranking of those scores is exact, ties broken by index, on any device).
    """
    if device is not None:
        image_emb, text_emb = image_emb.to(device), text_emb.to(device)
    scores = image_emb.float() @ text_emb.float().T
    relevant_t = torch.as_tensor(np.asarray(relevant, dtype=bool))
    # Both directions from one pass over the score matrix (rows: i2t, columns: t2i).
    i2t, t2i = recall_at_k_both_ways(scores, relevant_t, KS)
    result = {
        "i2t": {f"R@{k}": float(i2t[k]) for k in KS},
        "t2i": {f"R@{k}": float(t2i[k]) for k in KS},
    }
    result["rsum"] = float(sum(result["i2t"].values()) + sum(result["t2i"].values()))
    return result


def evaluate_image_text(
    checkpoint: Path,
    dataset_root: Path,
    images_manifest: Path,
    texts_manifest: Path,
    split: str = "test",
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    benchmark: str | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Image-text retrieval of a trained student on one manifest split.

    Args:
        checkpoint: a selected-model ``checkpoint.pt`` written by :func:`softref.train.train`.
        dataset_root: the root the manifest image paths are relative to.
        images_manifest, texts_manifest: the benchmark's manifests.
        split: the manifest split to evaluate (``test``; never the split used for selection).
        batch_size: images / captions encoded at once.
        device: None picks CUDA when available, else the CPU.
        benchmark: the name written in the result; default: the manifests' folder name
            (``results/data/{dataset}/images.parquet`` gives the dataset).
        num_workers: DataLoader workers for reading images.

    Returns:
        A JSON-able dict: benchmark, protocol ("image-text"), split, num_images, num_texts,
        i2t and t2i ({"R@1", "R@5", "R@10"}, percent), rsum, checkpoint, checkpoint_sha256,
        selected_epoch, and the experiment, student and method of the checkpoint.
    """
    checkpoint = Path(checkpoint)
    device = default_device(device)
    model, ckpt = load_student(checkpoint, device)
    items = split_items(Path(images_manifest), Path(texts_manifest), split)
    logger.info(
        "evaluating %s on %s split %r: %d images, %d captions",
        checkpoint,
        images_manifest,
        split,
        items.num_images,
        items.num_texts,
    )
    image_emb, text_emb = encode_split(
        model, items, Path(dataset_root), batch_size=batch_size, device=device, num_workers=num_workers, desc=split
    )
    metrics = image_text_metrics(image_emb, text_emb, items.relevant(), device=device)
    config = ckpt["config"]
    experiment = config.get("experiment", {}) if isinstance(config, dict) else {}
    result = {
        "benchmark": benchmark if benchmark is not None else Path(images_manifest).resolve().parent.name,
        "protocol": "image-text",
        "split": split,
        "num_images": items.num_images,
        "num_texts": items.num_texts,
        "i2t": metrics["i2t"],
        "t2i": metrics["t2i"],
        "rsum": metrics["rsum"],
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "selected_epoch": int(ckpt.get("epoch", -1)),
        "experiment": experiment.get("name"),
        "student": config.get("student", {}).get("name"),
        "method": experiment.get("method"),
    }
    logger.info(
        "%s: i2t R@1 %.2f, t2i R@1 %.2f, RSUM %.2f",
        result["benchmark"],
        result["i2t"]["R@1"],
        result["t2i"]["R@1"],
        result["rsum"],
    )
    return result


def write_json(obj: Mapping[str, Any], path: Path) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (temporary file, then rename)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")
