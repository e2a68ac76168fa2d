"""A trained student's cross-modal embeddings of one manifest split, kept as a file for the figures.

The figures that look at rankings (CUSA's t-SNE and case study, MMRef's refinement gallery) read
the same test embeddings the evaluation scores; encoding once per (run, dataset, split) and writing
them to ``results/runs/{experiment}/seed-{seed}/embeddings/{dataset}/{split}.npz`` lets every figure
of a run reuse them without loading torch models.

The file is a plain ``numpy.savez`` archive, read with ``allow_pickle=False``:

``image_emb`` (I, D) and ``text_emb`` (T, D)
    float32, L2-normalised, the cross-modal heads (:func:`softref.evaluate.retrieval.encode_split`).
``image_ids`` (I,), ``text_ids`` (T,), ``text_image_ids`` (T,)
    unicode strings: the manifest ids in manifest order (images with a caption in the split only,
    as :func:`~softref.evaluate.retrieval.split_items` keeps them) and each caption's image.
``references`` (M, D), optional
    float32: the student's trained MMRef reference bank (``mmref_head['bank']``), present only when
    the checkpoint has one that trained (:func:`softref.evaluate.benchmarks.bank_was_trained`).
``meta``
    a 0-d unicode array holding a JSON object: experiment, seed, method, label, dataset, split,
    checkpoint_sha256, selected_epoch.

``numpy.savez`` stores its members with a fixed zip date, so the same embeddings give the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softref.files import atomic_path, file_sha256

__all__ = ["Embeddings", "read_embeddings", "write_embeddings"]

logger = logging.getLogger(__name__)

_REQUIRED = ("image_emb", "text_emb", "image_ids", "text_ids", "text_image_ids", "meta")


@dataclass(frozen=True)
class Embeddings:
    """One embeddings file, read back (module docstring)."""

    image_emb: np.ndarray
    text_emb: np.ndarray
    image_ids: tuple[str, ...]
    text_ids: tuple[str, ...]
    text_image_ids: tuple[str, ...]
    meta: Mapping[str, Any]
    references: np.ndarray | None = None


def _trained_bank(ckpt: Mapping[str, Any], dim: int, checkpoint: Path) -> np.ndarray | None:
    """The checkpoint's trained reference bank as (M, dim) float32, or None when it has none."""
    from torch import Tensor

    from softref.evaluate.benchmarks import bank_was_trained

    head = ckpt.get("mmref_head")
    if not isinstance(head, Mapping) or "bank" not in head or not bank_was_trained(ckpt):
        return None
    bank = head["bank"]
    if not isinstance(bank, Tensor) or bank.ndim != 2 or bank.shape[1] != dim:
        found = tuple(bank.shape) if isinstance(bank, Tensor) else type(bank).__name__
        raise ValueError(f"{checkpoint}: mmref_head['bank'] must be a (M, {dim}) tensor, found {found}")
    return bank.detach().float().cpu().numpy()


def write_embeddings(
    checkpoint: Path, *, dataset_root: Path, images_manifest: Path, texts_manifest: Path, split: str,
    dataset: str, out: Path, batch_size: int = 64, num_workers: int = 0, device: Any = None,
) -> Path:
    """Encode ``split`` of a dataset with the student of ``checkpoint`` and write the file ``out``
    (module docstring) atomically; returns ``out``."""
    from softref.evaluate.retrieval import encode_split, split_items
    from softref.models.student import load_student
    from softref.runtime import default_device

    checkpoint, device = Path(checkpoint), default_device(device)
    model, ckpt = load_student(checkpoint, device)
    items = split_items(Path(images_manifest), Path(texts_manifest), split)
    image_emb, text_emb = encode_split(model, items, Path(dataset_root), batch_size=batch_size, device=device,
                                       num_workers=num_workers, head="cross", desc=split)
    config = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
    experiment = config.get("experiment") or {}
    meta = {"experiment": experiment.get("name"), "seed": experiment.get("seed"), "method": experiment.get("method"),
            "label": experiment.get("label") or experiment.get("method"), "dataset": dataset, "split": split,
            "checkpoint_sha256": file_sha256(checkpoint), "selected_epoch": int(ckpt.get("epoch", -1))}
    arrays = {
        "image_emb": image_emb.numpy().astype(np.float32), "text_emb": text_emb.numpy().astype(np.float32),
        "image_ids": np.asarray(items.image_ids, dtype=str), "text_ids": np.asarray(items.text_ids, dtype=str),
        "text_image_ids": np.asarray(items.text_image_ids, dtype=str),
        "meta": np.asarray(json.dumps(meta, sort_keys=True)),
    }
    bank = _trained_bank(ckpt, int(image_emb.shape[1]), checkpoint)
    if bank is not None:
        arrays["references"] = bank
    with atomic_path(out) as tmp:
        # A file object: given a name, numpy.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    logger.info("%s: %d images, %d captions of split %r%s", out, items.num_images, items.num_texts, split,
                "" if bank is None else f", reference bank {bank.shape[0]} x {bank.shape[1]}")
    return Path(out)


def read_embeddings(path: Path) -> Embeddings:
    """Read a file written by :func:`write_embeddings` (``allow_pickle=False``), checking its members
    and shapes; errors name the file and what was found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in _REQUIRED if k not in data.files]
        if missing:
            raise ValueError(f"{path}: expected members {list(_REQUIRED)}, missing {missing}")
        arrays = {k: data[k] for k in data.files}
    image, text = arrays["image_emb"], arrays["text_emb"]
    shapes = {k: arrays[k].shape for k in ("image_emb", "text_emb", "image_ids", "text_ids", "text_image_ids")}
    if (image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1] or len(arrays["image_ids"]) != len(image)
            or len(arrays["text_ids"]) != len(text) or len(arrays["text_image_ids"]) != len(text)):
        raise ValueError(f"{path}: inconsistent shapes {shapes}: expected (I, D), (T, D), (I,), (T,), (T,)")
    references = arrays.get("references")
    if references is not None and (references.ndim != 2 or references.shape[1] != image.shape[1]):
        raise ValueError(f"{path}: references must be (M, {image.shape[1]}), found {references.shape}")
    return Embeddings(
        image_emb=image.astype(np.float32), text_emb=text.astype(np.float32),
        image_ids=tuple(arrays["image_ids"].tolist()), text_ids=tuple(arrays["text_ids"].tolist()),
        text_image_ids=tuple(arrays["text_image_ids"].tolist()), meta=json.loads(str(arrays["meta"])),
        references=None if references is None else references.astype(np.float32),
    )
