"""Per-identity teacher references: build them from the feature shards, read them back.

A reference summarises one identity (person, class, object) of a split in the teachers'
spaces. For identity ``c`` with images ``I_c`` and captions ``T_c``::

    image[c]      = normalize(mean_{i in I_c} normalize(f_img(i)))
    text[c]       = normalize(mean_{t in T_c} normalize(f_txt(t)))
    multimodal[c] = concat(image[c], text[c]) / sqrt(2)

Both halves of ``multimodal`` are unit vectors, so their concatenation has norm sqrt(2);
dividing by sqrt(2) makes it a unit vector whose inner product with another reference is the
mean of the image and text cosines. The neighbour index relies on this (inner product =
cosine).

An identity of the split with images but no caption (or the reverse) has no multi-modal
reference: by default that is an error naming the identities; ``on_missing="skip"`` leaves
them out (named in the log and counted in the ``skipped_identities`` attribute). Manifests
checked by :func:`softref.data.manifest.validate_pair` cannot have captions without images,
so in practice only caption-less images can trigger it.

The file (HDF5) holds the datasets ``identities`` (utf-8, sorted by code point), ``image``,
``text``, ``multimodal`` (float32), ``image_count``, ``text_count`` (int64) and the root
attributes :data:`REFERENCE_ATTRS`. It is written as ``<name>.tmp-<pid>`` and renamed once
complete, as the feature shards are.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from softref import __version__
from softref.files import atomic_path, file_sha256
from softref.data.manifest import read_images, read_texts
from softref.features.shards import attrs_equal, read_complete_attrs, read_h5_attrs
from softref.features.store import FeatureStore
from softref.runtime import progress_disabled

__all__ = [
    "REFERENCE_ATTRS",
    "ReferencesError",
    "References",
    "build_references",
    "read_reference_attrs",
]

log = logging.getLogger(__name__)

REFERENCE_ATTRS: tuple[str, ...] = (
    "image_teacher",
    "text_teacher",
    "image_weights_sha256",
    "text_weights_sha256",
    "images_manifest_sha256",
    "texts_manifest_sha256",
    "split",
    "image_dim",
    "text_dim",
    "dim",
    "num_identities",
    "skipped_identities",
    "normalization",
    "softref_version",
    "created",
    "complete",
)
NORMALIZATION = (
    "image, text: re-normalised means of L2-normalised teacher features; "
    "multimodal: concat(image, text) / sqrt(2) (unit norm)"
)
DATASETS: tuple[str, ...] = ("identities", "image", "text", "multimodal", "image_count", "text_count")
# Rows fetched from a FeatureStore at once: bounds memory to block x dim floats.
BLOCK_ROWS = 4096
# A mean of unit vectors shorter than this points nowhere in particular.
_MIN_MEAN_NORM = 1e-6
_SHOW = 5


class ReferencesError(ValueError):
    """A references file is incomplete, malformed or disagrees with what the reader expects."""


def _quote(values: Sequence[Any]) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:_SHOW])
    return shown + (f" (and {len(values) - _SHOW} more)" if len(values) > _SHOW else "")


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _identity_means(
    store: FeatureStore,
    ids: Sequence[str],
    codes: np.ndarray,
    num_identities: int,
    desc: str,
    block_rows: int,
) -> np.ndarray:
    """Sum of L2-normalised features per identity code, in float64: ``(num_identities, dim)``.

    ``ids`` are fetched in manifest order, block by block: shards hold contiguous manifest
    rows, so each block reads a few runs of consecutive rows.
    """
    sums = np.zeros((num_identities, store.dim), dtype=np.float64)
    with tqdm(total=len(ids), desc=desc, unit="row", disable=progress_disabled(log)) as bar:
        for start, stop in _blocks(len(ids), block_rows):
            feats = _normalize_rows(store.get(ids[start:stop], dtype=np.float64))
            block_codes = codes[start:stop]
            order = np.argsort(block_codes, kind="stable")
            sorted_codes = block_codes[order]
            firsts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
            sums[sorted_codes[firsts]] += np.add.reduceat(feats[order], firsts, axis=0)
            bar.update(stop - start)
    return sums


def _renormalize(sums: np.ndarray, identities: Sequence[str], what: str) -> np.ndarray:
    norms = np.linalg.norm(sums, axis=1)
    bad = np.flatnonzero(norms < _MIN_MEAN_NORM)
    if len(bad):
        raise ReferencesError(
            f"{len(bad)} identit(ies) have {what} features that cancel out (norm of the sum "
            f"< {_MIN_MEAN_NORM}), so their {what} reference has no direction: "
            f"{_quote([identities[i] for i in bad])}"
        )
    return sums / norms[:, None]


def build_references(
    images_manifest: Path | str,
    texts_manifest: Path | str,
    image_shards: Sequence[Path | str],
    text_shards: Sequence[Path | str],
    out: Path | str,
    *,
    split: str | Sequence[str] = "train",
    on_missing: Literal["error", "skip"] = "error",
    block_rows: int = BLOCK_ROWS,
) -> Path:
    """Write the per-identity references of ``split`` to ``out`` (HDF5, atomically).

    Args:
        images_manifest, texts_manifest: the dataset's manifests; their sha256 must match the
            ``manifest_sha256`` attribute of the shards (else the shards are refused).
        image_shards, text_shards: every shard file of the image teacher and the text teacher.
        out: the references file to write.
        split: which split's identities get references (the training split by default); a list
            pools several (``["train", "val"]`` for a retrain on train + val), recorded in the
            ``split`` attribute joined by ``+`` (``"train+val"``).
        on_missing: what to do with an identity that has images but no captions in the split
            (or the reverse): ``"error"`` raises naming them, ``"skip"`` leaves them out.
        block_rows: rows fetched from the shards at once (memory bound).

    Returns:
        ``out`` as a Path.

    Raises:
        ReferencesError: no identity in the split, an identity without one modality (with
            ``on_missing="error"``), a degenerate mean.
        ShardError: a shard incomplete or from another manifest; KeyError: a manifest id of
            the split absent from the shards.
    """
    images_manifest, texts_manifest, out = Path(images_manifest), Path(texts_manifest), Path(out)
    _check_build_args(on_missing, block_rows)
    images = read_images(images_manifest)
    texts = read_texts(texts_manifest)
    splits = (split,) if isinstance(split, str) else tuple(split)
    split = "+".join(splits)
    images = images[images["split"].isin(splits)]
    texts = texts[texts["split"].isin(splits)]
    identities, skipped = _paired_identities(images, texts, split, on_missing, images_manifest, texts_manifest)
    code_of = {identity: i for i, identity in enumerate(identities)}
    image = _modality_rows(images, "image_id", code_of, "images", images_manifest, image_shards)
    text = _modality_rows(texts, "text_id", code_of, "texts", texts_manifest, text_shards)
    num = len(identities)

    image_attrs, text_attrs, image_sums, text_sums = _teacher_sums(image, text, num, split, block_rows)
    # float32 from here on: the outputs are float32, and datasets with an identity per image
    # (COCO-style) have as many references as images.
    image_ref = _renormalize(image_sums, identities, "image").astype(np.float32)
    del image_sums
    text_ref = _renormalize(text_sums, identities, "text").astype(np.float32)
    del text_sums
    multimodal = np.concatenate([image_ref, text_ref], axis=1)
    multimodal /= np.float32(math.sqrt(2.0))

    arrays = {
        "image": image_ref,
        "text": text_ref,
        "multimodal": multimodal,
        "image_count": np.bincount(image.codes, minlength=num).astype(np.int64),
        "text_count": np.bincount(text.codes, minlength=num).astype(np.int64),
    }
    attrs = _reference_attrs(image_attrs, text_attrs, image, text, arrays, num, split, skipped)
    _write(out, attrs, identities, arrays)
    log.info("wrote %s: %d identities, multimodal dim %d", out, num, multimodal.shape[1])
    return out


def _check_build_args(on_missing: str, block_rows: int) -> None:
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")


def _paired_identities(
    images: pd.DataFrame,
    texts: pd.DataFrame,
    split: str,
    on_missing: str,
    images_manifest: Path,
    texts_manifest: Path,
) -> tuple[list[str], int]:
    """The sorted identities of the split's rows that have both images and captions, and how
    many identities lack a modality (an error unless ``on_missing="skip"``)."""
    image_ids_of = set(images["identity"].tolist())
    text_ids_of = set(texts["identity"].tolist())
    if not image_ids_of and not text_ids_of:
        raise ReferencesError(
            f"no rows of split {split!r} in {images_manifest} or {texts_manifest}; "
            f"expected at least one identity"
        )
    only_images = sorted(image_ids_of - text_ids_of)
    only_texts = sorted(text_ids_of - image_ids_of)
    if only_images or only_texts:
        what = "; ".join(
            part for part in (
                f"{len(only_images)} with images but no caption: {_quote(only_images)}" if only_images else "",
                f"{len(only_texts)} with captions but no image: {_quote(only_texts)}" if only_texts else "",
            ) if part
        )
        if on_missing == "error":
            raise ReferencesError(
                f"identities of split {split!r} in {images_manifest} / {texts_manifest} lack a "
                f"modality ({what}); expected images and captions for every identity "
                f"(on_missing='skip' leaves such identities out)"
            )
        log.warning("leaving out identities of split %r that lack a modality: %s", split, what)
    identities = sorted(image_ids_of & text_ids_of)
    if not identities:
        raise ReferencesError(
            f"no identity of split {split!r} has both images and captions in "
            f"{images_manifest} / {texts_manifest}"
        )
    return identities, len(only_images) + len(only_texts)


@dataclass(frozen=True, eq=False)
class _ModalityRows:
    """One modality of the split, as its teacher's shards are read: the shard files, the attrs
    they must have, the manifest ids (in manifest order) and the code of each id's identity."""

    shards: Sequence[Path | str]
    expect: Mapping[str, Any]
    ids: list[str]
    codes: np.ndarray


def _modality_rows(
    rows: pd.DataFrame,
    id_column: str,
    code_of: Mapping[str, int],
    modality: str,
    manifest: Path,
    shards: Sequence[Path | str],
) -> _ModalityRows:
    """The ``rows`` of ``manifest`` whose identity gets a reference (others were skipped)."""
    rows = rows[rows["identity"].isin(code_of)]
    codes = np.fromiter((code_of[c] for c in rows["identity"]), dtype=np.int64, count=len(rows))
    expect = {"modality": modality, "manifest_sha256": file_sha256(manifest)}
    return _ModalityRows(shards=shards, expect=expect, ids=rows[id_column].tolist(), codes=codes)


def _teacher_sums(
    image: _ModalityRows, text: _ModalityRows, num: int, split: str, block_rows: int
) -> tuple[Mapping[str, Any], Mapping[str, Any], np.ndarray, np.ndarray]:
    """``(image_attrs, text_attrs, image_sums, text_sums)``: the attrs of both teachers' shards
    and the per-identity sums of :func:`_identity_means` in each teacher's space."""
    with FeatureStore(image.shards, expect=image.expect) as image_store, \
            FeatureStore(text.shards, expect=text.expect) as text_store:
        image_attrs, text_attrs = image_store.attrs, text_store.attrs
        log.info(
            "references of %d identities (split %r): %d images (%s), %d captions (%s)",
            num, split, len(image.ids), image_attrs["teacher"], len(text.ids), text_attrs["teacher"],
        )
        image_sums = _identity_means(image_store, image.ids, image.codes, num,
                                     f"{image_attrs['teacher']} images", block_rows)
        text_sums = _identity_means(text_store, text.ids, text.codes, num,
                                    f"{text_attrs['teacher']} texts", block_rows)
    return image_attrs, text_attrs, image_sums, text_sums


def _reference_attrs(
    image_attrs: Mapping[str, Any],
    text_attrs: Mapping[str, Any],
    image: _ModalityRows,
    text: _ModalityRows,
    arrays: Mapping[str, np.ndarray],
    num: int,
    split: str,
    skipped: int,
) -> dict[str, Any]:
    """The root attributes of the references file, but for ``created`` and ``complete``."""
    return {
        "image_teacher": str(image_attrs["teacher"]),
        "text_teacher": str(text_attrs["teacher"]),
        "image_weights_sha256": str(image_attrs["weights_sha256"]),
        "text_weights_sha256": str(text_attrs["weights_sha256"]),
        "images_manifest_sha256": image.expect["manifest_sha256"],
        "texts_manifest_sha256": text.expect["manifest_sha256"],
        "split": split,
        "image_dim": int(arrays["image"].shape[1]),
        "text_dim": int(arrays["text"].shape[1]),
        "dim": int(arrays["multimodal"].shape[1]),
        "num_identities": num,
        "skipped_identities": skipped,
        "normalization": NORMALIZATION,
        "softref_version": __version__,
    }


def _write(out: Path, attrs: Mapping[str, Any], identities: Sequence[str], arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        f.attrs["complete"] = False
        f.create_dataset("identities", data=np.array(identities, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        for name, values in arrays.items():
            f.create_dataset(name, data=values)
        # Last, so a file that says complete holds every dataset.
        f.attrs["complete"] = True


def read_reference_attrs(path: Path | str) -> dict[str, Any]:
    """The root attributes of a references file as plain Python values."""
    return read_h5_attrs(path, "references file", ReferencesError)


@dataclass(frozen=True, eq=False)
class References:
    """The per-identity references of one (dataset, image teacher, text teacher, split).

    Arrays are loaded whole (one row per identity: small next to the features they summarise).
    Row ``i`` of every array belongs to ``identities[i]``.
    """

    path: Path
    identities: tuple[str, ...]
    image: np.ndarray
    text: np.ndarray
    multimodal: np.ndarray
    image_count: np.ndarray
    text_count: np.ndarray
    attrs: Mapping[str, Any]

    @classmethod
    def open(cls, path: Path | str, expect: Mapping[str, Any] | None = None) -> References:
        """Read a references file, refusing an incomplete one or one whose attributes differ.

        ``expect`` maps attribute names (:data:`REFERENCE_ATTRS`) to the values the consumer
        requires, e.g. ``{"image_teacher": "unicom", "split": "train"}``; a difference raises
        :class:`ReferencesError` naming the key, both values and the file.
        """
        path = Path(path)
        attrs = read_complete_attrs(path, "references file", "build", ReferencesError)
        missing = [key for key in REFERENCE_ATTRS if key not in attrs]
        if missing:
            raise ReferencesError(f"{path}: attr(s) {missing} missing; found attrs {sorted(attrs)}")
        for key, value in (expect or {}).items():
            found = attrs.get(key, "<missing>")
            if not attrs_equal(found, value):
                raise ReferencesError(f"{path}: attr {key!r} expected {value!r}, found {found!r}")
        with h5py.File(path, "r") as f:
            absent = [name for name in DATASETS if name not in f]
            if absent:
                raise ReferencesError(f"{path}: dataset(s) {absent} missing; found {sorted(f)}")
            identities = tuple(f["identities"].asstr()[:].tolist())
            arrays = {name: f[name][:] for name in DATASETS[1:]}
        num = len(identities)
        shapes = {
            "image": (num, int(attrs["image_dim"])),
            "text": (num, int(attrs["text_dim"])),
            "multimodal": (num, int(attrs["dim"])),
            "image_count": (num,),
            "text_count": (num,),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ReferencesError(
                    f"{path}: dataset {name!r} expected shape {shape} (from 'identities' and the "
                    f"dim attributes), found {arrays[name].shape}"
                )
        if num != int(attrs["num_identities"]):
            raise ReferencesError(
                f"{path}: attr 'num_identities' expected {num} (rows of 'identities'), "
                f"found {attrs['num_identities']}"
            )
        for array in arrays.values():
            array.setflags(write=False)
        return cls(path=path, identities=identities, attrs=attrs, **arrays)

    @property
    def dim(self) -> int:
        """Width of the multi-modal references (image dim + text dim)."""
        return int(self.multimodal.shape[1])

    def __len__(self) -> int:
        return len(self.identities)

    def index(self, identity: str) -> int:
        """Row of ``identity``; KeyError naming it and the file when absent."""
        position = _bisect(self.identities, identity)
        if position is None:
            raise KeyError(f"identity {identity!r} has no reference in {self.path} ({len(self)} identities)")
        return position

    def __repr__(self) -> str:
        return (
            f"References({str(self.path)!r}, identities={len(self)}, image_teacher="
            f"{self.attrs['image_teacher']!r}, text_teacher={self.attrs['text_teacher']!r}, "
            f"split={self.attrs['split']!r}, dim={self.dim})"
        )


def _bisect(sorted_values: Sequence[str], value: str) -> int | None:
    position = bisect.bisect_left(sorted_values, value)
    if position < len(sorted_values) and sorted_values[position] == value:
        return position
    return None
