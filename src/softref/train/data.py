"""Training batches: image-caption pairs of a manifest's train split, with their teacher features.

One item is one caption of the ``texts.parquet`` train split and its image (``images.parquet``
path under the dataset root, loaded with PIL as RGB and passed through the student's eval
transform: CUSA trains without augmentation). The collate function tokenizes the captions of
a batch at once and fetches the batch's teacher features by id from two
:class:`~softref.features.FeatureStore` objects (image teacher by ``image_id``, text teacher by
``text_id``), one ``get`` per store and batch, in the stored dtype (float16 by default: half
the bytes through the worker queues and to the device); :meth:`Batch.to` casts them to
float32 on the device. Features are never loaded whole, so host memory does not grow with
the dataset; with ``num_workers > 0`` the fetch runs in the DataLoader workers and overlaps
with the step (each worker reopens the HDF5 files after the fork).

Host memory is flat in the number of batches and workers: the pairs' ids, captions and paths
are packed into numpy arrays (:class:`~softref.data.strings.PackedStrings`) and the id indexes
are sorted numpy arrays, so a forked worker reads them without writing a reference count into
any shared page (a Python list of strings is copied into every worker page by page as its
items are read); the workers persist across epochs instead of being forked again each epoch.

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
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from softref.data.images import load_rgb
from softref.data.manifest import read_images, read_texts
from softref.data.strings import PackedStrings, StringIndex
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

#: Batches the DataLoader workers keep ready together (make_loader's prefetch): enough to hide a
#: slow batch, few enough that host memory does not grow with the number of workers.
BATCHES_IN_FLIGHT = 4


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
    """Image-caption pairs: item i is (pixels, caption, image_id, text_id, image_index, identity, i).

    The last element is the pair's own index: the collator built with ``pairs=`` reads the pair's
    teacher rows by it, found once for the whole split (:meth:`FeatureStore.rows`).

    Args:
        pairs: the frame of :func:`load_pairs`.
        dataset_root: the root the manifest paths are relative to.
        transform: PIL image -> (3, H, W) tensor (the student's ``transform``).
    """

    def __init__(self, pairs: pd.DataFrame, dataset_root: Path, transform: Callable[[Image.Image], Tensor]) -> None:
        self.root = Path(dataset_root)
        self.transform = transform
        # numpy arrays, no Python object per pair: forked workers share them instead of copying
        # them (see the module docstring); no pandas per item.
        self.text_ids = PackedStrings.from_strings(pairs["text_id"], "pairs column text_id")
        self.image_ids = PackedStrings.from_strings(pairs["image_id"], "pairs column image_id")
        self.captions = PackedStrings.from_strings(pairs["caption"], "pairs column caption")
        self.paths = PackedStrings.from_strings(pairs["path"], "pairs column path")
        self.image_index = np.asarray(pairs["image_index"], dtype=np.int64)
        identities = pairs["identity"] if "identity" in pairs else [""] * len(self.text_ids)
        self.identities = PackedStrings.from_strings(identities, "pairs column identity")

    def __len__(self) -> int:
        return len(self.text_ids)

    def __getitem__(self, i: int) -> tuple[Tensor, str, str, str, int, str, int]:
        pixels = self.transform(load_rgb(self.root / self.paths[i]))
        return (pixels, self.captions[i], self.image_ids[i], self.text_ids[i], int(self.image_index[i]),
                self.identities[i], int(i))


@dataclass(frozen=True)
class Batch:
    """One training batch (of this process).

    Attributes:
        images: (B, 3, H, W) preprocessed pixels.
        tokens: (B, L) token ids of the captions.
        image_index: (B,) int64, the image of each pair (equal index: same image).
        image_ids, text_ids: the manifest ids of the rows.
        teacher_image: (B, D_ti) image teacher features (None without teachers), in the stored
            dtype (float16 by default) until :meth:`to` casts them to float32 on the device.
        teacher_text: (B, D_tt) text teacher features (None without teachers), likewise.
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

    def to(self, device: torch.device, non_blocking: bool = False, teacher_dtype: torch.dtype = torch.float32) -> Batch:
        """The batch on ``device``; the teacher features cast to ``teacher_dtype`` there.

        The cast runs after the copy, on the device: the host sends the stored (half) bytes.
        float16 -> float32 is exact, so the losses see the same values as a host-side cast.
        """
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        def teacher(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking).to(teacher_dtype)

        return replace(
            self,
            images=move(self.images),
            tokens=move(self.tokens),
            image_index=move(self.image_index),
            teacher_image=teacher(self.teacher_image),
            teacher_text=teacher(self.teacher_text),
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
        identity_rows: identity -> row of the reference bank (MMRef), or None; kept as a
            :class:`~softref.data.strings.StringIndex` (numpy arrays, shared by the workers).
        pairs: the :class:`TrainPairs` the items come from, or None. With the stores, the teacher
            row of every pair is looked up once here (:meth:`FeatureStore.rows`; a KeyError names
            the first pair without features before any batch), and each batch reads its rows by
            the items' pair index (``get_rows``) instead of looking its ids up again.

    Teacher features come in the stores' dtype (``dtype=None``): float16 shards give float16
    batches, cast to float32 by :meth:`Batch.to` on the device.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], Tensor],
        image_store: Any = None,
        text_store: Any = None,
        identity_rows: Mapping[str, int] | None = None,
        pairs: TrainPairs | None = None,
    ) -> None:
        if (image_store is None) != (text_store is None):
            raise ValueError("BatchCollator: give both teacher stores (image and text) or neither")
        self.tokenizer = tokenizer
        self.image_store = image_store
        self.text_store = text_store
        # Per pair index: its row in each store (int64 numpy, shared by forked workers).
        self.teacher_rows: tuple[np.ndarray, np.ndarray] | None = None
        self._pair_text_ids: PackedStrings | None = None
        self._pair_image_index: np.ndarray | None = None
        if pairs is not None and image_store is not None:
            self.teacher_rows = (image_store.rows(pairs.image_ids), text_store.rows(pairs.text_ids))
            self._pair_text_ids, self._pair_image_index = pairs.text_ids, pairs.image_index
        self.identity_rows = None
        if identity_rows is not None:
            names = list(identity_rows)
            self.identity_rows = StringIndex(names, [identity_rows[name] for name in names])

    def _identity_index(self, identities: Sequence[str]) -> Tensor:
        assert self.identity_rows is not None
        rows = self.identity_rows.lookup(identities)
        unknown = np.flatnonzero(rows < 0)
        if len(unknown):
            raise KeyError(f"identity {identities[int(unknown[0])]!r} has no row in the reference bank "
                           f"({len(self.identity_rows)} identities)")
        return torch.from_numpy(rows)

    def _teacher_features(self, image_ids: Sequence[str], text_ids: Sequence[str], image_index: Sequence[int],
                          pairs: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The batch's teacher rows, in the stored dtype: by pair index when the rows were found
        at construction, else by id. Items must be those pairs': every item's image_index and the
        first item's text_id are checked against the pair its index names (cheap, unlike a lookup)."""
        if self.teacher_rows is None:
            return (torch.from_numpy(self.image_store.get(list(image_ids), dtype=None)),
                    torch.from_numpy(self.text_store.get(list(text_ids), dtype=None)))
        assert self._pair_text_ids is not None and self._pair_image_index is not None
        at = np.fromiter(pairs, dtype=np.int64, count=len(pairs))
        inside = (at >= 0) & (at < len(self._pair_image_index))
        wrong = np.flatnonzero(~inside)
        if not len(wrong):
            wrong = np.flatnonzero(self._pair_image_index[at] != np.fromiter(image_index, np.int64, len(at)))
        if not len(wrong) and len(at) and self._pair_text_ids[int(at[0])] != text_ids[0]:
            wrong = np.zeros(1, dtype=np.int64)
        if len(wrong):
            k = int(wrong[0])
            raise ValueError(f"BatchCollator: item {k} of the batch (text_id {text_ids[k]!r}, image_id {image_ids[k]!r}) "
                             f"says it is pair {int(at[k])}, which is not that pair in the {len(self._pair_text_ids)} "
                             f"pairs this collator was built for; build the collator with the dataset its items come from")
        image_rows, text_rows = self.teacher_rows
        return (torch.from_numpy(self.image_store.get_rows(image_rows[at], dtype=None)),
                torch.from_numpy(self.text_store.get_rows(text_rows[at], dtype=None)))

    def __call__(self, items: Sequence[tuple[Tensor, str, str, str, int, str, int]]) -> Batch:
        pixels, captions, image_ids, text_ids, image_index, identities, pairs = zip(*items)
        identity_index = None
        if self.identity_rows is not None:
            identity_index = self._identity_index(identities)
        teacher_image = teacher_text = None
        seconds = 0.0
        if self.image_store is not None:
            start = time.perf_counter()
            teacher_image, teacher_text = self._teacher_features(image_ids, text_ids, image_index, pairs)
            seconds = time.perf_counter() - start
        return Batch(
            # default_collate stacks into shared memory inside a worker: the batch then travels
            # to the main process without a second copy of its pixels in the worker.
            images=default_collate(list(pixels)),
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
    """A DataLoader over ``sampler``'s batches; with workers the teacher fetch overlaps compute.

    Workers persist across epochs: forked once, they keep their open files and the pages they
    copied, instead of being forked (and copying again) every epoch. The sampler still runs in
    this process, so ``set_epoch`` before each epoch's ``iter`` reaches it. Each worker keeps
    ``ceil(BATCHES_IN_FLIGHT / num_workers)`` batches ready (at least one), so the batches
    waiting in shared memory stay about :data:`BATCHES_IN_FLIGHT` whatever the number of
    workers, instead of two per worker (a COCO batch of 128 at 224 px is 83 MiB).
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=-(-BATCHES_IN_FLIGHT // num_workers) if num_workers > 0 else None,
    )
