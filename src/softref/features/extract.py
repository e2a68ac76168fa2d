"""Teacher feature extraction: one manifest shard in, one HDF5 feature shard out.

:func:`extract_image_features` decodes the shard's images in DataLoader workers (PIL, RGB,
``teacher.transform``) and runs ``teacher.encode`` batch by batch; a teacher that reads no
pixels (``teacher.encodes_paths``, the demo's oracle) gets the image files' paths instead,
through ``teacher.encode_paths``. Every image file is checked to exist before any model work. :func:`extract_text_features` preprocesses the
shard's captions with ``teacher.preprocess_text`` and encodes them in chunks. Both write
through :class:`~softref.features.shards.ShardWriter`, so an interrupted run leaves no file
at ``out`` and a rerun starts clean.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from softref.data.manifest import file_sha256, read_images, read_texts, shard_rows
from softref.features.shards import ShardError, ShardWriter
from softref.runtime import progress_disabled

__all__ = [
    "ImageReadError",
    "extract_image_features",
    "extract_text_features",
]

log = logging.getLogger(__name__)

# Captions per teacher.encode call: keeps the progress bar moving and memory bounded while
# leaving the teacher enough captions to sort by length.
TEXT_CHUNK = 1024
_SHOW = 5


class ImageReadError(ValueError):
    """An image listed in a manifest cannot be decoded."""


class _ImageFiles(Dataset):
    """Decodes one image per item with PIL (RGB) and applies the teacher's transform."""

    def __init__(
        self,
        paths: Sequence[str],
        image_ids: Sequence[str],
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.paths = list(paths)
        self.image_ids = list(image_ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            # Returned, not raised: an exception raised in a worker reaches the main process
            # wrapped in a worker traceback; the message alone is what the user needs.
            return None, index, (
                f"cannot read image {path} (image_id {self.image_ids[index]!r}): {exc}"
            )
        return self.transform(rgb), index, ""


def _collate(
    items: list[tuple[torch.Tensor | None, int, str]],
) -> tuple[torch.Tensor | None, list[int], list[str]]:
    errors = [error for _, _, error in items if error]
    indices = [index for _, index, _ in items]
    if errors:
        return None, indices, errors
    return torch.stack([pixels for pixels, _, _ in items]), indices, errors  # type: ignore[misc]


def _shard_frame(df: Any, shard: int, num_shards: int) -> tuple[Any, int, int]:
    start, stop = shard_rows(len(df), shard, num_shards)
    return df.iloc[start:stop], start, stop


def _base_attrs(teacher: Any, manifest: Path, shard: int, num_shards: int, modality: str) -> dict[str, Any]:
    return {
        "teacher": str(teacher.name),
        "weights_sha256": str(teacher.weights_sha256),
        "preprocess": str(teacher.preprocess_description),
        "normalized": bool(teacher.normalized),
        "manifest_sha256": file_sha256(manifest),
        "shard": int(shard),
        "num_shards": int(num_shards),
        "modality": modality,
    }


def _check_images_exist(rows: Any, start: int, root: Path, manifest: Path, shard: int, num_shards: int) -> list[str]:
    """Absolute paths of the shard's images; FileNotFoundError listing the missing ones."""
    paths = [str(root / p) for p in rows["path"].tolist()]
    missing = [k for k, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        ids = rows["image_id"].tolist()
        first = "; ".join(
            f"{paths[k]} (image_id {ids[k]!r}, manifest row {start + k})" for k in missing[:_SHOW]
        )
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} images of shard {shard}/{num_shards} of {manifest} "
            f"are missing under {root}; first: {first}"
        )
    return paths


def extract_image_features(
    manifest: Path,
    dataset_root: Path,
    teacher: Any,
    out: Path,
    *,
    shard: int,
    num_shards: int,
    batch_size: int = 32,
    num_workers: int = 2,
    dtype: str = "float16",
    store_tokens: bool = False,
) -> None:
    """Encode the images of one manifest shard with an image teacher into ``out``.

    ``teacher`` is an :class:`softref.teachers.ImageTeacher`; the shard is the contiguous
    block :func:`~softref.data.manifest.shard_rows` gives. A teacher with ``encodes_paths``
    gets the absolute image paths (``encode_paths``), ``batch_size`` at a time, and no image
    is decoded. Raises FileNotFoundError naming the
    missing files (path, image_id, manifest row) before loading any batch, and
    :class:`ImageReadError` naming the file and image_id of an undecodable image.
    """
    manifest, dataset_root, out = Path(manifest), Path(dataset_root), Path(out)
    df = read_images(manifest)
    rows, start, stop = _shard_frame(df, shard, num_shards)
    paths = _check_images_exist(rows, start, dataset_root, manifest, shard, num_shards)
    ids = rows["image_id"].tolist()
    token_shape = None
    if store_tokens:
        token_shape = getattr(teacher, "token_shape", None)
        if token_shape is None:
            raise ShardError(
                f"{out}: store_tokens=True but teacher {teacher.name!r} exposes no token features"
            )
    attrs = _base_attrs(teacher, manifest, shard, num_shards, "images")
    log.info(
        "extracting %d images (manifest rows [%d, %d), shard %d/%d) with %s into %s",
        len(ids), start, stop, shard, num_shards, teacher.name, out,
    )
    with torch.no_grad(), ShardWriter(
        out, num_rows=len(ids), dim=int(teacher.dim), dtype=dtype, attrs=attrs, token_shape=token_shape
    ) as writer:
        if getattr(teacher, "encodes_paths", False):
            _write_by_path(writer, teacher, paths, ids, batch_size, shard)
        else:
            _write_by_pixels(writer, teacher, paths, ids, batch_size, num_workers, shard, store_tokens)
    log.info("wrote %s (%d rows)", out, len(ids))


def _write_by_path(writer: ShardWriter, teacher: Any, paths: list[str], ids: list[str],
                   batch_size: int, shard: int) -> None:
    """Rows from ``teacher.encode_paths`` (a teacher that reads no pixels), ``batch_size`` paths at a time."""
    with tqdm(total=len(ids), desc=f"{teacher.name} images-{shard}", unit="img",
              disable=progress_disabled(log)) as bar:
        for a in range(0, len(ids), batch_size):
            block = paths[a : a + batch_size]
            features = _to_numpy(teacher.encode_paths(block))
            if features.shape != (len(block), int(teacher.dim)):
                raise ShardError(
                    f"teacher {teacher.name!r}: encode_paths returned shape {features.shape} for "
                    f"{len(block)} paths, expected {(len(block), int(teacher.dim))}"
                )
            writer.write(a, ids[a : a + len(block)], features)
            bar.update(len(block))


def _write_by_pixels(writer: ShardWriter, teacher: Any, paths: list[str], ids: list[str], batch_size: int,
                     num_workers: int, shard: int, store_tokens: bool) -> None:
    """Rows from ``teacher.encode`` on the decoded, transformed images (DataLoader workers decode)."""
    device = torch.device(teacher.device)
    loader = DataLoader(
        _ImageFiles(paths, ids, teacher.transform),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    done = 0
    with tqdm(total=len(ids), desc=f"{teacher.name} images-{shard}", unit="img",
              disable=progress_disabled(log)) as bar:
        for pixels, index, errors in loader:
            if errors:
                more = f" (and {len(errors) - 1} more in this batch)" if len(errors) > 1 else ""
                raise ImageReadError(errors[0] + more)
            if index[0] != done:
                raise RuntimeError(f"DataLoader returned row {index[0]}, expected {done}")
            pixels = pixels.to(device, non_blocking=True)
            features = teacher.encode(pixels)
            tokens = teacher.encode_tokens(pixels) if store_tokens else None
            n = len(index)
            writer.write(
                done,
                ids[done : done + n],
                _to_numpy(features),
                None if tokens is None else _to_numpy(tokens),
            )
            done += n
            bar.update(n)


def extract_text_features(
    manifest: Path,
    teacher: Any,
    out: Path,
    *,
    shard: int,
    num_shards: int,
    batch_size: int = 64,
    dtype: str = "float16",
) -> None:
    """Encode the captions of one texts-manifest shard with a text teacher into ``out``.

    ``teacher`` is a :class:`softref.teachers.TextTeacher`; captions go through
    ``teacher.preprocess_text`` and are encoded ``TEXT_CHUNK`` at a time (the teacher sorts
    each chunk by length itself).
    """
    manifest, out = Path(manifest), Path(out)
    df = read_texts(manifest)
    rows, start, stop = _shard_frame(df, shard, num_shards)
    ids = rows["text_id"].tolist()
    captions = [teacher.preprocess_text(c) for c in rows["caption"].tolist()]
    attrs = _base_attrs(teacher, manifest, shard, num_shards, "texts")
    log.info(
        "extracting %d captions (manifest rows [%d, %d), shard %d/%d) with %s into %s",
        len(ids), start, stop, shard, num_shards, teacher.name, out,
    )
    with torch.no_grad(), ShardWriter(
        out, num_rows=len(ids), dim=int(teacher.dim), dtype=dtype, attrs=attrs
    ) as writer:
        with tqdm(total=len(ids), desc=f"{teacher.name} texts-{shard}", unit="text",
                  disable=progress_disabled(log)) as bar:
            for a in range(0, len(ids), TEXT_CHUNK):
                chunk = captions[a : a + TEXT_CHUNK]
                features = teacher.encode(chunk, batch_size=batch_size, show_progress=False)
                writer.write(a, ids[a : a + len(chunk)], _to_numpy(features))
                bar.update(len(chunk))
    log.info("wrote %s (%d rows)", out, len(ids))


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)
