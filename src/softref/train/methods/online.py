"""Teacher features computed online, on every batch: ``experiments.*.teacher_features: online``.

The public CUSA code runs its text teacher on every batch's captions; the paper recommends
online features when a dataset outgrows the disk, and its Table 13 measures both ways. Here a
modality whose features are ``online`` loads its teacher once per run; the data-loader items
carry what it needs (the image decoded again through the image teacher's own transform, or its
path for a teacher that reads paths; the caption as annotated, which a text teacher cleans with
its own ``pre_caption``) and the features are computed on the training device inside the step,
so their cost lands in the epoch's time. A modality read from shards is fetched by id as usual.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from softref.data.images import load_rgb
from softref.train.data import Batch, BatchCollator

__all__ = ["OnlineBatch", "OnlineCollator", "OnlineItems", "OnlineTeachers"]


@dataclass(frozen=True)
class OnlineTeachers:
    """The run's online teachers (None for a modality read from shards) and its shard stores."""

    image: Any = None
    text: Any = None
    image_store: Any = None
    text_store: Any = None

    def features(self, batch: OnlineBatch, device: torch.device) -> tuple[Tensor, Tensor]:
        """(image, text) teacher features of ``batch`` on ``device``, float32."""
        if self.image is None:
            image = batch.batch.teacher_image
        elif self.image.encodes_paths:
            image = self.image.encode_paths(list(batch.image_inputs)).to(device)
        else:
            image = self.image.encode(batch.image_inputs).to(device)
        if self.text is None:
            text = batch.batch.teacher_text
        else:
            text = torch.from_numpy(self.text.encode(list(batch.captions), batch_size=len(batch.captions))).to(device)
        return image.float(), text.float()


class OnlineItems(Dataset):
    """The training pairs, each item with what the online image teacher reads: its pixels through
    the teacher's transform, or its path (``image_transform`` None)."""

    def __init__(self, base: Any, image_transform: Any | None, image_online: bool) -> None:
        self.base, self.image_transform, self.image_online = base, image_transform, image_online

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        item = tuple(self.base[i])
        if not self.image_online:
            return item + (None,)
        path = Path(self.base.root) / str(self.base.paths[i])
        return item + ((str(path) if self.image_transform is None else self.image_transform(load_rgb(path))),)


@dataclass(frozen=True)
class OnlineBatch:
    """A :class:`~softref.train.data.Batch` with the online teachers' inputs beside it."""

    batch: Batch
    image_inputs: Any
    captions: tuple[str, ...]

    @property
    def fetch_seconds(self) -> float:
        return self.batch.fetch_seconds

    def to(self, device: torch.device, non_blocking: bool = False) -> OnlineBatch:
        moved = self.image_inputs.to(device, non_blocking=non_blocking) if isinstance(self.image_inputs, Tensor) \
            else self.image_inputs
        return dataclasses.replace(self, batch=self.batch.to(device, non_blocking=non_blocking), image_inputs=moved)


class OnlineCollator:
    """Collate items of :class:`OnlineItems`: the usual batch (teacher rows of the shard modality
    fetched by id, float32) and the online teachers' inputs."""

    def __init__(self, tokenizer: Any, image_store: Any = None, text_store: Any = None) -> None:
        self.base = BatchCollator(tokenizer)
        self.image_store, self.text_store = image_store, text_store

    def __call__(self, items: Sequence[tuple[Any, ...]]) -> OnlineBatch:
        batch = self.base([item[:7] for item in items])
        start = time.perf_counter()
        image = self._fetch(self.image_store, batch.image_ids)
        text = self._fetch(self.text_store, batch.text_ids)
        extra = [item[7] for item in items]
        inputs = torch.stack(extra) if extra and isinstance(extra[0], Tensor) else tuple(extra)
        batch = dataclasses.replace(batch, teacher_image=image, teacher_text=text,
                                    fetch_seconds=time.perf_counter() - start)
        return OnlineBatch(batch, inputs, tuple(item[1] for item in items))

    @staticmethod
    def _fetch(store: Any, ids: Sequence[str]) -> Tensor | None:
        return None if store is None else torch.from_numpy(np.asarray(store.get(list(ids), dtype=np.float32)))


def load_online_teachers(specs: Mapping[str, Any], image_teacher: str | None, text_teacher: str | None,
                         online: Mapping[str, bool], device: torch.device, what: str) -> tuple[Any, Any]:
    """Load the teachers whose modality is online (``online[modality]``); None for the others."""
    from softref.teachers import load_teacher

    loaded = []
    for modality, name in (("image", image_teacher), ("text", text_teacher)):
        if not online[modality]:
            loaded.append(None)
            continue
        if name not in specs:
            raise ValueError(f"{what} computes its {modality} teacher's features online, but teacher {name!r} is not "
                             f"among the run's teachers ({sorted(specs)}); pass the config's teachers to train()")
        loaded.append(load_teacher(specs[name], device))
    return loaded[0], loaded[1]
