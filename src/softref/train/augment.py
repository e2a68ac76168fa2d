"""Augmentation of the student's training images (``experiments.<name>.augment``).

``none`` (the default, the public CUSA code's choice): the student trains on its evaluation
transform's output. ``reid``: the training transform of IRRA (anosorae/IRRA,
``datasets/build.py`` with ``img_aug``), the common recipe of text-to-person retrieval:

1. the student's evaluation transform (resize to the student's size, to tensor, normalise);
2. horizontal flip with probability 0.5;
3. pad 10 pixels of black on every side and crop a random window of the original size back;
4. random erasing with probability 0.5 of a rectangle of 2-40 % of the image with aspect ratio
   0.3-3.3, filled with the normalisation mean values (IRRA passes ``value=mean`` to
   torchvision's ``RandomErasing``, which fills the normalised tensor with those numbers).

IRRA flips, pads and crops the PIL image before normalising; normalisation is a per-pixel affine
map, so flipping and cropping the normalised tensor, padded with the normalised value of black,
gives the same pixels. The augmentation is student-side: the teacher features (computed once,
offline, on the plain images), validation and evaluation never see it.

Determinism: each item's randomness comes from its own ``torch.Generator`` seeded from
(experiment seed, epoch, item index), never from a global stream, so the augmented batch is the
same with or without DataLoader workers, with any number of training processes, and after a
resume at an epoch boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from softref.names import AUGMENTATIONS

__all__ = ["AugmentedPairs", "EpochTaggedBatches", "ReidAugment", "augmentation", "item_generator"]

# Keeps the augmentation's seeds apart from any other use of (seed, epoch) in a run.
_STREAM = 0x617567


@dataclass(frozen=True)
class ReidAugment:
    """IRRA's flip, pad-crop and random erasing on a normalised (3, H, W) image (module docstring).

    Attributes:
        mean, std: the normalisation the student's transform applied (per channel).
        flip_p: probability of a horizontal flip.
        pad: pixels of black added on every side before the random crop back to (H, W).
        erase_p, erase_scale, erase_ratio: random erasing's probability, area share range and
            aspect ratio range (torchvision's defaults, as IRRA uses them).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    erase_scale: tuple[float, float] = (0.02, 0.4)
    erase_ratio: tuple[float, float] = (0.3, 3.3)

    def __call__(self, pixels: Tensor, generator: torch.Generator) -> Tensor:
        """(3, H, W) normalised pixels -> (3, H, W) augmented pixels, every draw from ``generator``."""
        if pixels.dim() != 3:
            raise ValueError(f"ReidAugment: expected (3, H, W) pixels, found shape {tuple(pixels.shape)}")
        _, height, width = pixels.shape
        out = pixels
        if float(torch.rand((), generator=generator)) < self.flip_p:
            out = out.flip(-1)
        if self.pad > 0:
            black = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=out.dtype).view(3, 1, 1)
            padded = black.expand(3, height + 2 * self.pad, width + 2 * self.pad).clone()
            padded[:, self.pad:self.pad + height, self.pad:self.pad + width] = out
            top = int(torch.randint(0, 2 * self.pad + 1, (), generator=generator))
            left = int(torch.randint(0, 2 * self.pad + 1, (), generator=generator))
            out = padded[:, top:top + height, left:left + width]
        if float(torch.rand((), generator=generator)) < self.erase_p:
            box = self._erase_box(height, width, generator)
            if box is not None:
                i, j, h, w = box
                out = out.clone()
                out[:, i:i + h, j:j + w] = torch.tensor(self.mean, dtype=out.dtype).view(3, 1, 1)
        return out.contiguous()

    def _erase_box(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int] | None:
        """torchvision's ``RandomErasing.get_params``: up to 10 tries at a box inside the image."""
        area = height * width
        log_ratio = (math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(*self.erase_scale, generator=generator))
            aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio, generator=generator)))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if not (h < height and w < width):
                continue
            i = int(torch.randint(0, height - h + 1, (), generator=generator))
            j = int(torch.randint(0, width - w + 1, (), generator=generator))
            return i, j, h, w
        return None


def augmentation(name: str, preprocess_cfg: Mapping[str, object]) -> ReidAugment | None:
    """The augmentation ``experiments.<name>.augment`` names (``softref.names.AUGMENTATIONS``) for a
    student whose transform normalises as ``preprocess_cfg`` says (``mean``, ``std``); None for none."""
    if name == "none":
        return None
    if name == "reid":
        mean, std = preprocess_cfg["mean"], preprocess_cfg["std"]
        return ReidAugment(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    raise ValueError(f"augment: expected one of {list(AUGMENTATIONS)}, found {name!r}")


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one item's augmentation in one epoch: a function of (seed, epoch, index) alone."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index), _STREAM]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class AugmentedPairs(Dataset):
    """A training dataset whose items' pixels (item[0]) go through a seeded augmentation.

    Wraps the method's dataset (:class:`softref.train.data.TrainPairs`, which applies the student's
    evaluation transform) without touching it: item i of epoch e is augmented with
    :func:`item_generator` ``(seed, e, i)``. The epoch travels with the index: a key ``(e, i)``
    (what :class:`EpochTaggedBatches` yields) names it, a plain ``i`` takes the one of
    :meth:`set_epoch`. DataLoader workers persist across epochs (``make_loader``), so a
    ``set_epoch`` in the main process after they started would never reach them; the tagged
    index is read in the main process, by the sampler, each epoch.
    """

    def __init__(self, dataset: Dataset, augment: ReidAugment, seed: int) -> None:
        self.dataset = dataset
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        pixels, *rest = self.dataset[index]
        return (self.augment(pixels, item_generator(self.seed, epoch, index)), *rest)


class EpochTaggedBatches(Sampler):
    """``sampler``'s batches with each index as ``(epoch, index)``, the epoch of ``augmented`` when
    the batch is drawn (in the main process): the key :class:`AugmentedPairs` reads its epoch from."""

    def __init__(self, sampler: Sampler, augmented: AugmentedPairs) -> None:
        self.sampler, self.augmented = sampler, augmented

    def __iter__(self):
        for batch in self.sampler:
            yield [(self.augmented.epoch, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.sampler)
