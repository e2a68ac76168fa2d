"""Teacher contracts: the spec a config names, and what an image or text teacher offers the extractors.

A teacher is a frozen, pretrained model that turns images or captions into feature vectors once,
offline; `softref.features` writes those vectors into HDF5 shards. Every teacher records the
sha256 of its weights and a readable description of its preprocessing, so a shard can be traced
to the exact model that produced it.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softref.config import TeacherError, TeacherSpec
from softref.data.captions import PRE_CAPTION_DESCRIPTION, pre_caption
from softref.files import file_sha256
from softref.runtime import default_device, progress_disabled

logger = logging.getLogger(__name__)

__all__ = [
    "ConvertRGB",
    "ImageTeacher",
    "MAIN_WEIGHTS_FILES",
    "TeacherError",
    "TeacherSpec",
    "TextTeacher",
    "check_weights_sha256",
    "file_sha256",
    "main_weights_file",
    "pre_caption",
    "resolve_device",
    "weights_sha256",
]

# A model folder is identified by its main weights file; the first of these that exists wins.
MAIN_WEIGHTS_FILES: tuple[str, ...] = (
    "model.safetensors",
    "pytorch_model.bin",
    "0_Transformer/model.safetensors",
    "0_Transformer/pytorch_model.bin",
)


# --------------------------------------------------------------------------------------------
# Weights identity
# --------------------------------------------------------------------------------------------


def main_weights_file(folder: str | os.PathLike[str]) -> Path:
    """The file that identifies a model folder: the first of `MAIN_WEIGHTS_FILES` present."""
    folder = Path(folder)
    for relative in MAIN_WEIGHTS_FILES:
        candidate = folder / relative
        if candidate.is_file():
            return candidate
    raise TeacherError(f"model folder {folder} has no main weights file; expected one of {list(MAIN_WEIGHTS_FILES)}")


def weights_sha256(weights: str | os.PathLike[str]) -> str:
    """The identity of a teacher's weights, as recorded in feature shards.

    A local file: the sha256 of its bytes. A model folder: the sha256 of its main weights file
    (`model.safetensors`). Anything else is taken as a hub name: "unverified:<name>".
    """
    path = Path(weights).expanduser()
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return file_sha256(main_weights_file(path))
    return f"unverified:{weights}"


def check_weights_sha256(spec: TeacherSpec, computed: str, where: str | os.PathLike[str]) -> None:
    """Refuse weights whose sha256 differs from the one the spec pins (no-op when it pins none)."""
    if spec.weights_sha256 is None:
        return
    expected = spec.weights_sha256.lower()
    if computed.startswith("unverified:"):
        raise TeacherError(
            f"teacher {spec.name!r}: weights_sha256 {expected} is pinned but {where} is not a local file or "
            f"folder (taken as a hub name), so its bytes cannot be checked; give the local path of the weights"
        )
    if computed != expected:
        raise TeacherError(f"teacher {spec.name!r}: sha256 of {where} is {computed}, but the spec expects {expected}")


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """A torch.device; "auto" picks CUDA when one is present, else the CPU."""
    return default_device(device)


# --------------------------------------------------------------------------------------------
# Teacher interfaces
# --------------------------------------------------------------------------------------------


class ConvertRGB:
    """Picklable PIL step: convert any image mode to RGB (DataLoader workers pickle transforms)."""

    def __call__(self, image: Any) -> Any:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ConvertRGB()"


def describe_transform(transform: Any) -> str:
    """A deterministic, readable description of a torchvision Compose (no memory addresses)."""
    steps = getattr(transform, "transforms", [transform])
    parts = []
    for step in steps:
        if callable(step) and hasattr(step, "__name__") and not isinstance(step, torch.nn.Module):
            parts.append(f"{step.__name__}()")
        else:
            parts.append(re.sub(r"\s+", " ", repr(step)))
    return ", ".join(parts)


class ImageTeacher(abc.ABC):
    """A frozen image model: preprocessed pixels in, one float32 vector per image out.

    Attributes:
        name: the spec name. dim: feature size. weights_sha256: see `weights_sha256`.
        preprocess_description: what `transform` does, in words (stored in the shards).
        normalized: whether the teacher L2-normalises its features itself.
        transform: PIL image -> (3, H, W) tensor; picklable, for DataLoader workers.
        device: where the model runs. token_shape: (T, C) of `encode_tokens`, or None.
        input_size: the side H = W that `encode` expects.
        encodes_paths: True for a teacher that reads something else than an image's pixels
            (the demo's oracle looks its facts up by path): the extractor then calls
            `encode_paths` with the image files' paths instead of decoding them.
    """

    encodes_paths: bool = False

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        weights_sha256: str,
        preprocess_description: str,
        normalized: bool,
        transform: Callable[[Any], torch.Tensor],
        device: torch.device,
        input_size: int,
        token_shape: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        self.dim = int(dim)
        self.weights_sha256 = weights_sha256
        self.preprocess_description = preprocess_description
        self.normalized = bool(normalized)
        self.transform = transform
        self.device = device
        self.input_size = int(input_size)
        self.token_shape = token_shape

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, normalized={self.normalized}, "
            f"device={self.device}, weights_sha256={self.weights_sha256[:16]!r}...)"
        )

    @abc.abstractmethod
    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) on self.device -> (B, dim), inside no_grad and autocast."""

    def _forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        raise TeacherError(f"teacher {self.name!r} ({type(self).__name__}) exposes no token features")

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        # Teachers run in half precision on GPUs, as their reference code does (Unicom's blocks run
        # under CUDA autocast); on the CPU they stay in float32.
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.no_grad(), autocast:
            yield

    def _check_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"teacher {self.name!r}: expected pixels of shape (B, 3, H, W), got {shape}")
        if pixels.shape[2] != self.input_size or pixels.shape[3] != self.input_size:
            raise ValueError(
                f"teacher {self.name!r}: expected {self.input_size}x{self.input_size} pixels "
                f"(its transform's output), got {pixels.shape[2]}x{pixels.shape[3]}"
            )
        return pixels.to(self.device, dtype=torch.float32, non_blocking=True)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, dim) float32 features on the CPU."""
        x = self._check_pixels(pixels)
        with self._inference():
            out = self._forward(x)
        out = out.float().cpu()
        if out.shape != (pixels.shape[0], self.dim):
            raise TeacherError(
                f"teacher {self.name!r}: produced features of shape {tuple(out.shape)}, "
                f"expected {(pixels.shape[0], self.dim)}"
            )
        return out

    def encode_paths(self, paths: Sequence[str]) -> torch.Tensor:
        """Image file paths -> (N, dim) float32 features; only for teachers with `encodes_paths`."""
        raise TeacherError(f"teacher {self.name!r} ({type(self).__name__}) encodes pixels, not paths")

    def encode_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, T, C) float32 token features on the CPU."""
        if self.token_shape is None:
            raise TeacherError(f"teacher {self.name!r} ({type(self).__name__}) exposes no token features")
        x = self._check_pixels(pixels)
        with self._inference():
            out = self._forward_tokens(x)
        return out.float().cpu()


class TextTeacher(abc.ABC):
    """A frozen text model: captions in, one float32 vector per caption out, in input order.

    `encode` encodes the strings it is given as they are; callers that want the teacher's caption
    cleaning apply `preprocess_text` to each caption first (`extract_text_features` does).
    """

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        weights_sha256: str,
        preprocess_description: str,
        normalized: bool,
        device: torch.device,
        apply_pre_caption: bool,
    ) -> None:
        self.name = name
        self.dim = int(dim)
        self.weights_sha256 = weights_sha256
        self.preprocess_description = preprocess_description
        self.normalized = bool(normalized)
        self.device = device
        self.apply_pre_caption = bool(apply_pre_caption)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, normalized={self.normalized}, "
            f"pre_caption={self.apply_pre_caption}, device={self.device})"
        )

    def preprocess_text(self, caption: str) -> str:
        """The caption as this teacher wants it: CUSA's `pre_caption` when enabled, else unchanged."""
        return pre_caption(caption) if self.apply_pre_caption else caption

    @abc.abstractmethod
    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        """Non-empty list of strings -> (N, dim) array in input order."""

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Strings -> (N, dim) float32 array, row i for texts[i]."""
        if isinstance(texts, str):
            raise TypeError(f"teacher {self.name!r}: encode takes a list of strings, not one string")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"teacher {self.name!r}: text {index} is {type(text).__name__}, expected str")
        if batch_size <= 0:
            raise ValueError(f"teacher {self.name!r}: batch_size must be positive, got {batch_size}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._encode(texts, batch_size, show_progress), dtype=np.float32)
        if out.shape != (len(texts), self.dim):
            raise TeacherError(
                f"teacher {self.name!r}: produced features of shape {out.shape}, expected {(len(texts), self.dim)}"
            )
        return out


def progress_enabled(requested: bool) -> bool:
    """Progress bars only when asked, outside CI, and while INFO messages are shown."""
    return bool(requested) and not progress_disabled()
