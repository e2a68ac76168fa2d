"""Training batches: image-caption pairs of a manifest's train split, with their teacher features.

One item is one caption of the ``texts.parquet`` train split and its image (``images.parquet``
path under the dataset root, loaded with PIL as RGB and passed through the student's eval
transform: CUSA trains without augmentation). The collate function tokenizes the captions of
a batch at once and fetches the batch's teacher features by id from two
:class:`~softref.features.FeatureStore` objects (image teacher by ``image_id``, text teacher by
``text_id``), one ``get`` per store and batch. Features are never loaded whole, so host memory
does not grow with the dataset; with ``num_workers > 0`` the fetch runs in the DataLoader
workers and overlaps with the step (each worker reopens the HDF5 files after the fork).

The order of an epoch is a permutation drawn from a ``torch.Generator`` seeded with
``seed + epoch``: the same on every process, independent of earlier epochs, so a run resumed
at an epoch boundary sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from softref.data.images import load_rgb
from softref.data.manifest import read_images, read_texts
from softref.train.distributed import shard_batches

__all__ = [
    "TrainPairs",
    "Batch",
    "BatchCollator",
    "EpochBatchSampler",
    "load_pairs",
    "make_loader",
]

logger = logging.getLogger(__name__)


def load_pairs(images_manifest: Path, texts_manifest: Path, split: str) -> pd.DataFrame:
    """The (caption, image) pairs of ``split``: columns text_id, image_id, caption, path, image_index, identity.

    ``image_index`` numbers the distinct images of the split (in image_id order); rows are in
    text_id order (the manifest's). Raises ValueError when the split has no caption, or a
    caption's image is not in ``images_manifest``.
    """
    images = read_images(Path(images_manifest))
    texts = read_texts(Path(texts_manifest))
    texts = texts[texts["split"] == split]
    if texts.empty:
        found = sorted(read_texts(Path(texts_manifest))["split"].unique().tolist())
        raise ValueError(f"{texts_manifest}: no caption with split {split!r}; splits found: {found}")
    paths = dict(zip(images["image_id"], images["path"]))
    missing = sorted(set(texts["image_id"]) - set(paths))
    if missing:
        raise ValueError(
            f"{texts_manifest}: {len(missing)} image_id(s) of split {split!r} are not in "
            f"{images_manifest}; first: {missing[:5]}"
        )
    image_ids = sorted(set(texts["image_id"]))
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    return pd.DataFrame(
        {
            "text_id": texts["text_id"].to_numpy(),
            "image_id": texts["image_id"].to_numpy(),
            "caption": texts["caption"].to_numpy(),
            "path": [paths[i] for i in texts["image_id"]],
            "image_index": np.asarray([index[i] for i in texts["image_id"]], dtype=np.int64),
            "identity": texts["identity"].to_numpy(),
        }
    ).reset_index(drop=True)


class TrainPairs(Dataset):
    """Image-caption pairs: item i is (pixels, caption, image_id, text_id, image_index, identity).

    Args:
        pairs: the frame of :func:`load_pairs`.
        dataset_root: the root the manifest paths are relative to.
        transform: PIL image -> (3, H, W) tensor (the student's ``transform``).
    """

    def __init__(self, pairs: pd.DataFrame, dataset_root: Path, transform: Callable[[Image.Image], Tensor]) -> None:
        self.root = Path(dataset_root)
        self.transform = transform
        # Plain lists: cheap to share with forked workers, no pandas per item.
        self.text_ids: list[str] = pairs["text_id"].tolist()
        self.image_ids: list[str] = pairs["image_id"].tolist()
        self.captions: list[str] = pairs["caption"].tolist()
        self.paths: list[str] = pairs["path"].tolist()
        self.image_index: list[int] = [int(i) for i in pairs["image_index"]]
        self.identities: list[str] = pairs["identity"].tolist() if "identity" in pairs else [""] * len(self.text_ids)

    def __len__(self) -> int:
        return len(self.text_ids)

    def __getitem__(self, i: int) -> tuple[Tensor, str, str, str, int, str]:
        pixels = self.transform(load_rgb(self.root / self.paths[i]))
        return pixels, self.captions[i], self.image_ids[i], self.text_ids[i], self.image_index[i], self.identities[i]


@dataclass(frozen=True)
class Batch:
    """One training batch (of this process).

    Attributes:
        images: (B, 3, H, W) preprocessed pixels.
        tokens: (B, L) token ids of the captions.
        image_index: (B,) int64, the image of each pair (equal index: same image).
        image_ids, text_ids: the manifest ids of the rows.
        teacher_image: (B, D_ti) float32 image teacher features (None without teachers).
        teacher_text: (B, D_tt) float32 text teacher features (None without teachers).
        fetch_seconds: time spent reading the teacher features of this batch.
        identity_index: (B,) int64 row of each pair's identity in the reference bank (MMRef;
            None when the collator was given no identity table).
    """

    images: Tensor
    tokens: Tensor
    image_index: Tensor
    image_ids: tuple[str, ...]
    text_ids: tuple[str, ...]
    teacher_image: Tensor | None = None
    teacher_text: Tensor | None = None
    fetch_seconds: float = 0.0
    identity_index: Tensor | None = None

    def __len__(self) -> int:
        return len(self.text_ids)

    def positives(self) -> Tensor:
        """(B, B) bool: every caption of the same image is a positive of that image."""
        return self.image_index[:, None] == self.image_index[None, :]

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            images=move(self.images),
            tokens=move(self.tokens),
            image_index=move(self.image_index),
            teacher_image=move(self.teacher_image),
            teacher_text=move(self.teacher_text),
            identity_index=move(self.identity_index),
        )

    def pin_memory(self) -> Batch:
        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return replace(
            self,
            images=pin(self.images),
            tokens=pin(self.tokens),
            image_index=pin(self.image_index),
            teacher_image=pin(self.teacher_image),
            teacher_text=pin(self.teacher_text),
            identity_index=pin(self.identity_index),
        )


class BatchCollator:
    """Stack pixels, tokenize captions, fetch teacher features by id: items -> :class:`Batch`.

    Args:
        tokenizer: list of captions -> (B, L) LongTensor (the student's ``tokenizer``).
        image_store: image teacher features by image_id, or None (no teachers).
        text_store: text teacher features by text_id, or None.
        identity_rows: identity -> row of the reference bank (MMRef), or None.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], Tensor],
        image_store: Any = None,
        text_store: Any = None,
        identity_rows: Mapping[str, int] | None = None,
    ) -> None:
        if (image_store is None) != (text_store is None):
            raise ValueError("BatchCollator: give both teacher stores (image and text) or neither")
        self.tokenizer = tokenizer
        self.image_store = image_store
        self.text_store = text_store
        self.identity_rows = identity_rows

    def __call__(self, items: Sequence[tuple[Tensor, str, str, str, int, str]]) -> Batch:
        pixels, captions, image_ids, text_ids, image_index, identities = zip(*items)
        identity_index = None
        if self.identity_rows is not None:
            identity_index = torch.tensor([self.identity_rows[i] for i in identities], dtype=torch.int64)
        teacher_image = teacher_text = None
        seconds = 0.0
        if self.image_store is not None:
            start = time.perf_counter()
            teacher_image = torch.from_numpy(self.image_store.get(list(image_ids), dtype=np.float32))
            teacher_text = torch.from_numpy(self.text_store.get(list(text_ids), dtype=np.float32))
            seconds = time.perf_counter() - start
        return Batch(
            images=torch.stack(pixels),
            tokens=self.tokenizer(list(captions)),
            image_index=torch.tensor(image_index, dtype=torch.int64),
            image_ids=tuple(image_ids),
            text_ids=tuple(text_ids),
            teacher_image=teacher_image,
            teacher_text=teacher_text,
            fetch_seconds=seconds,
            identity_index=identity_index,
        )


class EpochBatchSampler(Sampler[list[int]]):
    """This process's batches of an epoch: a ``seed + epoch`` permutation cut by :func:`shard_batches`.

    Call :meth:`set_epoch` before iterating. ``batch_size`` is the global batch (all
    processes together).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if num_items < 1:
            raise ValueError(f"EpochBatchSampler: no items to sample (num_items={num_items})")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        # Validates batch_size against world_size up front.
        shard_batches([0], self.batch_size, self.rank, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_items, generator=generator)

    def batches(self) -> list[list[int]]:
        return shard_batches(self.order(), self.batch_size, self.rank, self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-self.num_items // self.batch_size)


def make_loader(
    dataset: TrainPairs,
    sampler: Sampler[list[int]],
    collator: BatchCollator,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``sampler``'s batches; with workers the teacher fetch overlaps compute."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )
