"""Dataset adapters: turn each dataset's own annotation files into softref manifests.

:func:`prepare` is the one entry point (the ``prepare_manifest`` rule calls it): it runs the
adapter registered under a format name in :data:`FORMATS`, checks that the listed images exist,
validates everything, and only then writes the four tables into the output folder:
``images.parquet``, ``texts.parquet``, ``positives.parquet`` and ``pairs.parquet``. The last two
are written for every format, empty (with their columns) when the format has none: extra
relevance comes only with ``eccv``, scored sentence pairs only with ``senteval-sts`` and
``sts-pairs``; the workflow can thus declare all four as outputs. On any error nothing is
written. :func:`load_dataset` does the same reading and checking without writing (``softref
check-dataset`` uses it).

Formats (each module's docstring gives the exact layout and mapping):

========================  ===================================================  ==============
format                    files                                                module
========================  ===================================================  ==============
``karpathy``              ``dataset_coco.json``, ``dataset_flickr30k.json``    imagetext
``albef``                 ``<coco|flickr30k>_{train,val,test}.json``           imagetext
``cusa-json``             ``new_{train,val,test}.json``                        imagetext
``eccv``                  ``dataset_coco.json`` + the ``eccv_caption`` package  imagetext
``cuhk-pedes``            ``reid_raw.json``                                    person
``icfg-pedes``            ``ICFG-PEDES.json``                                  person
``rstpreid``              ``data_captions.json``                               person
``cub``                   ``images.txt``, ``image_class_labels.txt``           unimodal
``sop``                   ``Ebay_train.txt``, ``Ebay_test.txt``                unimodal
``inshop``                ``list_eval_partition.txt``                          unimodal
``inaturalist``           ``Inaturalist_{train,test}_set1.txt``                unimodal
``image-folders``         ``<split>/<class>/<image>`` folders, no list file    folders
``senteval-sts``          SentEval's ``STS/`` and ``SICK/`` test files         sts
``sts-pairs``             ``pairs.tsv`` (``sentence1 sentence2 score``)        folders
``reed-cub``              ``text_c10/``, ``{trainval,test}classes.txt``        reed
``reed-flowers``          ``text_c10/``, ``{trainval,test}classes.txt``        reed
========================  ===================================================  ==============

Image-only datasets (``cub``, ``sop``, ``inshop``, ``inaturalist``, ``image-folders``) get an
empty but valid ``texts.parquet``; the sentence-pair formats (``senteval-sts``, ``sts-pairs``)
get empty ``images.parquet`` and ``texts.parquet`` beside their ``pairs.parquet``, so every
dataset has the same four tables.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from softref.data.common import (
    Adapter,
    AdapterOutput,
    AnnotationError,
    MissingImagesError,
    quote,
)
from softref.data.folders import read_image_folders, read_sts_pairs
from softref.data.imagetext import read_albef, read_cusa_json, read_eccv, read_karpathy
from softref.data.manifest import (
    IMAGE_COLUMNS,
    PAIR_COLUMNS,
    POSITIVE_COLUMNS,
    TEXT_COLUMNS,
    _atomic_write_table,
    _to_table,
    validate_images,
    validate_pair,
    validate_pairs,
    validate_positives,
    validate_texts,
)
from softref.data.person import person_adapter
from softref.data.reed import reed_adapter
from softref.data.sts import read_senteval_sts
from softref.data.unimodal import read_cub, read_inaturalist, read_inshop, read_sop
from softref.files import write_text_atomic
from softref.runtime import progress_disabled

__all__ = [
    "AnnotationError",
    "MissingImagesError",
    "AdapterOutput",
    "CAPTION_FORMATS",
    "LoadedDataset",
    "PrepareResult",
    "FORMATS",
    "PLANNED_FORMATS",
    "adapter_options",
    "check_captions",
    "get_adapter",
    "load_dataset",
    "prepare",
    "read_karpathy",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` wrote, with row counts per split.

    ``positives_path`` and ``pairs_path`` are always set: both files are written for every
    format, empty when it has none (``num_positives`` / ``pairs_per_task`` say how many rows).
    ``paths`` lists every file written, ``skipped.json`` included when it was.
    """

    format: str
    annotations: Path
    images_path: Path
    texts_path: Path
    positives_path: Path
    pairs_path: Path
    images_per_split: Mapping[str, int]
    texts_per_split: Mapping[str, int]
    identities_per_split: Mapping[str, int]
    skipped_path: Path | None = None
    num_skipped_images: int = 0
    num_skipped_texts: int = 0
    paths: tuple[Path, ...] = field(default=())
    num_positives: int = 0
    pairs_per_task: Mapping[str, int] = field(default_factory=dict)
    num_empty_captions: int = 0
    num_uncaptioned_images: int = 0


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset read and validated by :func:`load_dataset`, not yet written.

    ``missing`` holds the rows of ``images`` whose file is absent under ``root`` (empty when
    images were not checked); ``images``, ``texts`` and ``positives`` still include them.
    """

    format: str
    root: Path
    annotations: Path
    images: pd.DataFrame
    texts: pd.DataFrame
    positives: pd.DataFrame | None
    pairs: pd.DataFrame | None
    missing: pd.DataFrame
    images_checked: bool


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

FORMATS: dict[str, Adapter] = {
    "karpathy": read_karpathy,
    "albef": read_albef,
    "cusa-json": read_cusa_json,
    "eccv": read_eccv,
    "cuhk-pedes": person_adapter("reid_raw.json", "file_path"),
    "icfg-pedes": person_adapter("ICFG-PEDES.json", "file_path", carve_val=True),
    "rstpreid": person_adapter("data_captions.json", "img_path"),
    "cub": read_cub,
    "sop": read_sop,
    "inshop": read_inshop,
    "inaturalist": read_inaturalist,
    "image-folders": read_image_folders,
    "senteval-sts": read_senteval_sts,
    "sts-pairs": read_sts_pairs,
    "reed-cub": reed_adapter("reed-cub", "images", class_subdirs=True),
    "reed-flowers": reed_adapter("reed-flowers", "jpg", class_subdirs=False),
}

#: Formats whose images come with captions: there an empty caption ("" or only whitespace) and an
#: image without any caption are errors (or, with ``skip_missing``, left out and reported).
CAPTION_FORMATS: tuple[str, ...] = (
    "karpathy", "albef", "cusa-json", "eccv", "cuhk-pedes", "icfg-pedes", "rstpreid", "reed-cub", "reed-flowers",
)

# Formats named before their adapters existed; every one of them is now in FORMATS.
PLANNED_FORMATS: tuple[str, ...] = ()


def get_adapter(fmt: str) -> Adapter:
    """The adapter registered as ``fmt``; a clear error for unknown or planned formats."""
    if fmt in FORMATS:
        return FORMATS[fmt]
    available = ", ".join(sorted(FORMATS))
    if fmt in PLANNED_FORMATS:
        raise NotImplementedError(
            f"dataset format {fmt!r} has no adapter yet; available formats: {available}"
        )
    raise ValueError(f"unknown dataset format {fmt!r}; available formats: {available}")


def adapter_options(fmt: str) -> dict[str, Any]:
    """The format-specific options of ``fmt`` (keyword-only parameters) with their defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(get_adapter(fmt)).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


# ---------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------


def _missing_images(root: Path, paths: Sequence[str]) -> list[int]:
    """Row numbers whose path is not a file under ``root``.

    Each folder is listed once instead of one stat per image: much faster on network file
    systems for datasets with 100k+ images.
    """
    listings: dict[str, set[str]] = {}
    missing: list[int] = []
    for row, rel in enumerate(
        tqdm(paths, desc="checking images", unit="img", disable=progress_disabled(logger))
    ):
        folder, _, fname = rel.rpartition("/")
        if folder not in listings:
            try:
                with os.scandir(root / folder) as entries:
                    listings[folder] = {e.name for e in entries if e.is_file()}
            except (FileNotFoundError, NotADirectoryError):
                listings[folder] = set()
        if fname not in listings[folder]:
            missing.append(row)
    return missing


def load_dataset(
    format: str,
    root: Path,
    *,
    annotations: str | os.PathLike[str] | None = None,
    check_images: bool = True,
    **options: Any,
) -> LoadedDataset:
    """Read the dataset at ``root`` with the adapter of ``format`` and validate every table.

    Arguments are those of :func:`prepare`. Images absent on disk are reported in
    :attr:`LoadedDataset.missing`, not raised: :func:`prepare` decides what to do with them.
    """
    adapter = get_adapter(format)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{format}: dataset root not found: {root}")
    accepted = list(adapter_options(format))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"format {format!r} has no option(s) {unknown}; its options: {accepted or 'none'}"
        )

    raw = adapter(root, annotations, **options)
    images = validate_images(raw.images, "images.parquet")
    texts = validate_texts(raw.texts, "texts.parquet")
    positives = (
        None if raw.positives is None else validate_positives(raw.positives, "positives.parquet")
    )
    pairs = None if raw.pairs is None else validate_pairs(raw.pairs, "pairs.parquet")
    validate_pair(images, texts, "texts.parquet", positives)
    missing = _missing_images(root, images["path"].tolist()) if check_images else []
    return LoadedDataset(
        format=format,
        root=root,
        annotations=raw.annotations,
        images=images,
        texts=texts,
        positives=positives,
        pairs=pairs,
        missing=images.iloc[missing],
        images_checked=check_images,
    )


def _uncaptioned(fmt: str, images: pd.DataFrame, texts: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Masks of the empty captions (``""`` or only whitespace) of ``texts`` and of the images of
    ``images`` without any other caption; both all-False outside :data:`CAPTION_FORMATS`."""
    if fmt not in CAPTION_FORMATS:
        return pd.Series(False, index=texts.index), pd.Series(False, index=images.index)
    blank = texts["caption"].str.strip() == ""
    captioned = set(texts.loc[~blank, "image_id"])
    return blank, ~images["image_id"].isin(captioned)


def _caption_error(fmt: str, annotations: Path, texts: pd.DataFrame, images: pd.DataFrame) -> AnnotationError:
    """The error naming the annotation file and the records of empty captions and caption-less images."""
    parts = []
    if len(texts):
        records = [f"text_id {t!r} (image_id {i!r})" for t, i in zip(texts["text_id"], texts["image_id"])]
        parts.append(f"{len(texts)} empty caption(s) (\"\" or only whitespace), expected text: {_records(records)}")
    if len(images):
        records = [f"image_id {i!r} ({p})" for i, p in zip(images["image_id"], images["path"])]
        parts.append(f"{len(images)} image(s) with no caption, expected at least one in a {fmt} dataset: "
                     f"{_records(records)}")
    return AnnotationError(
        f"{annotations}: {'; '.join(parts)} (pass skip_missing=True, --skip-missing on the command line, "
        "to leave them out; they are then listed in skipped.json)"
    )


def _records(values: Sequence[str], show: int = 5) -> str:
    """The first ``show`` of ``values`` joined by commas, with how many more there are."""
    more = f" (and {len(values) - show} more)" if len(values) > show else ""
    return ", ".join(values[:show]) + more


def check_captions(loaded: LoadedDataset) -> None:
    """AnnotationError when a caption dataset has an empty caption or an image without a caption."""
    blank, uncaptioned = _uncaptioned(loaded.format, loaded.images, loaded.texts)
    if blank.any() or uncaptioned.any():
        raise _caption_error(loaded.format, loaded.annotations, loaded.texts[blank], loaded.images[uncaptioned])


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _atomic_write_json(obj: Any, path: Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _empty_table(columns: tuple[str, ...]) -> pd.DataFrame:
    """A frame with ``columns`` and no row, typed as the validated tables are."""
    return pd.DataFrame(
        {c: pd.Series([], dtype="float64" if c == "score" else object) for c in columns}
    )


def _counts(df: pd.DataFrame, column: str | None = None, by: str = "split") -> dict[str, int]:
    if column is None:
        sizes = df.groupby(by).size()
    else:
        sizes = df.groupby(by)[column].nunique()
    return {str(k): int(v) for k, v in sorted(sizes.items())}


def prepare(
    format: str,
    root: Path,
    out_dir: Path,
    *,
    annotations: str | None = None,
    skip_missing: bool = False,
    check_images: bool = True,
    **options: Any,
) -> PrepareResult:
    """Write the manifests of the dataset at ``root`` into ``out_dir``.

    The four tables are always written: ``images.parquet``, ``texts.parquet``,
    ``positives.parquet`` and ``pairs.parquet`` (the last two empty, with their columns, for a
    format that has no extra positives or no sentence pairs).

    Args:
        format: a key of :data:`FORMATS` (``"karpathy"``, ``"cuhk-pedes"``, ``"cub"``, ...).
        root: the dataset root; manifest paths are relative to it.
        out_dir: where the manifests go (created if needed).
        annotations: the annotation file (or, for multi-file formats, their folder), relative
            to ``root`` unless absolute; by default the format's standard name in ``root``.
        skip_missing: leave out images absent from disk (and their captions) instead of
            failing, and in a caption format (:data:`CAPTION_FORMATS`) empty captions (``""`` or
            only whitespace) and images left without a caption; all reported in
            ``out_dir/skipped.json``. Without it any of them is an error naming the annotation
            file and the records' ids.
        check_images: check that every listed image exists under ``root``.
        **options: format-specific options (e.g. ``image_dir`` for ``karpathy``); see
            :func:`adapter_options`.

    Nothing is written unless the annotations, the images on disk and every table pass every
    check. A ``skipped.json`` left by an earlier run with ``skip_missing`` is removed when this
    run does not skip, so the folder always describes one run.
    """
    if skip_missing and not check_images:
        raise ValueError("skip_missing=True needs check_images=True (it skips what the check finds)")
    loaded = load_dataset(
        format, root, annotations=annotations, check_images=check_images, **options
    )
    out_dir = Path(out_dir)
    paths = _output_paths(out_dir)
    tables = _filled_tables(loaded)
    skipped: dict[str, Any] | None = None
    if check_images:
        tables, skipped = _leave_out_missing(loaded, tables, skip_missing, paths)
    tables = _leave_out_uncaptioned(loaded, tables, skipped if skip_missing else None, paths)

    # Everything validated: now write.
    written = _write_manifests(out_dir, tables, paths, skipped if skip_missing else None)
    images, texts = tables["images"], tables["texts"]
    result = PrepareResult(
        format=format,
        annotations=loaded.annotations,
        images_path=paths["images"],
        texts_path=paths["texts"],
        positives_path=paths["positives"],
        pairs_path=paths["pairs"],
        images_per_split=_counts(images),
        texts_per_split=_counts(texts),
        identities_per_split=_counts(images, "identity"),
        skipped_path=paths["skipped"] if skip_missing else None,
        num_skipped_images=0 if skipped is None else skipped["num_missing_images"],
        num_skipped_texts=0 if skipped is None else skipped["num_dropped_texts"],
        paths=tuple(written),
        num_positives=len(tables["positives"]),
        pairs_per_task=_counts(tables["pairs"], by="task"),
        num_empty_captions=len((skipped or {}).get("empty_captions", [])),
        num_uncaptioned_images=len((skipped or {}).get("uncaptioned_images", [])),
    )
    logger.info(
        "%s: wrote %s (images per split %s, texts per split %s)",
        loaded.annotations.name, out_dir, dict(result.images_per_split), dict(result.texts_per_split),
    )
    return result


# The tables prepare writes, in the order it writes them, and their columns.
_MANIFESTS: dict[str, tuple[str, ...]] = {
    "images": IMAGE_COLUMNS,
    "texts": TEXT_COLUMNS,
    "positives": POSITIVE_COLUMNS,
    "pairs": PAIR_COLUMNS,
}


def _output_paths(out_dir: Path) -> dict[str, Path]:
    """``<table>.parquet`` for each of :data:`_MANIFESTS`, and ``skipped`` (skipped.json)."""
    paths = {name: out_dir / f"{name}.parquet" for name in _MANIFESTS}
    paths["skipped"] = out_dir / "skipped.json"
    return paths


def _filled_tables(loaded: LoadedDataset) -> dict[str, pd.DataFrame]:
    """The four tables of ``loaded``; formats without extra positives or sentence pairs still
    get both tables, empty."""
    positives = (
        loaded.positives if loaded.positives is not None else _empty_table(POSITIVE_COLUMNS)
    )
    pairs = loaded.pairs if loaded.pairs is not None else _empty_table(PAIR_COLUMNS)
    return {"images": loaded.images, "texts": loaded.texts, "positives": positives, "pairs": pairs}


def _leave_out_missing(
    loaded: LoadedDataset,
    tables: Mapping[str, pd.DataFrame],
    skip_missing: bool,
    paths: Mapping[str, Path],
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The tables without the images missing on disk and their captions and positives, and
    the report written as skipped.json; MissingImagesError on a missing image unless
    ``skip_missing``."""
    images, texts, positives = tables["images"], tables["texts"], tables["positives"]
    name = loaded.annotations.name
    gone = loaded.missing
    if len(gone) and not skip_missing:
        raise MissingImagesError(
            f"{name}: {len(gone)} of {len(images)} listed images are "
            f"missing under {loaded.root}; first: {quote(gone['path'].tolist())} "
            "(pass skip_missing=True to leave them and their captions out)"
        )
    dropped = texts["image_id"].isin(gone["image_id"])
    skipped = {
        "format": loaded.format,
        "annotations": str(loaded.annotations),
        "root": str(loaded.root),
        "num_missing_images": len(gone),
        "num_dropped_texts": int(dropped.sum()),
        "missing_images": [
            {"image_id": i, "path": p} for i, p in zip(gone["image_id"], gone["path"])
        ],
        "dropped_text_ids": texts["text_id"][dropped].tolist(),
    }
    if len(gone):
        logger.warning(
            "%s: leaving out %d missing image(s) and %d caption(s); see %s",
            name, len(gone), int(dropped.sum()), paths["skipped"],
        )
        images = images.drop(index=gone.index).reset_index(drop=True)
        texts = texts[~dropped].reset_index(drop=True)
        keep = positives["text_id"].isin(texts["text_id"]) & positives["image_id"].isin(
            images["image_id"]
        )
        positives = positives[keep].reset_index(drop=True)
        validate_pair(images, texts, paths["texts"], positives)
    return {**tables, "images": images, "texts": texts, "positives": positives}, skipped


def _leave_out_uncaptioned(
    loaded: LoadedDataset,
    tables: Mapping[str, pd.DataFrame],
    skipped: dict[str, Any] | None,
    paths: Mapping[str, Path],
) -> dict[str, pd.DataFrame]:
    """The tables without empty captions and images left without a caption, both added to the
    ``skipped`` report; without a report (no ``skip_missing``) any of them is an AnnotationError."""
    images, texts, positives = tables["images"], tables["texts"], tables["positives"]
    blank, uncaptioned = _uncaptioned(loaded.format, images, texts)
    if not (blank.any() or uncaptioned.any()):
        return dict(tables)
    if skipped is None:
        raise _caption_error(loaded.format, loaded.annotations, texts[blank], images[uncaptioned])
    skipped["empty_captions"] = [
        {"text_id": t, "image_id": i} for t, i in zip(texts["text_id"][blank], texts["image_id"][blank])
    ]
    skipped["uncaptioned_images"] = [
        {"image_id": i, "path": p} for i, p in zip(images["image_id"][uncaptioned], images["path"][uncaptioned])
    ]
    logger.warning(
        "%s: leaving out %d empty caption(s) and %d image(s) without a caption; see %s",
        loaded.annotations.name, int(blank.sum()), int(uncaptioned.sum()), paths["skipped"],
    )
    images = images[~uncaptioned].reset_index(drop=True)
    texts = texts[~blank].reset_index(drop=True)
    keep = positives["text_id"].isin(texts["text_id"]) & positives["image_id"].isin(images["image_id"])
    positives = positives[keep].reset_index(drop=True)
    validate_pair(images, texts, paths["texts"], positives)
    return {**tables, "images": images, "texts": texts, "positives": positives}


def _write_manifests(
    out_dir: Path,
    tables: Mapping[str, pd.DataFrame],
    paths: Mapping[str, Path],
    skipped: dict[str, Any] | None,
) -> list[Path]:
    """Write the four tables, and ``skipped`` as skipped.json when given (else remove one left
    by an earlier run); the paths written, in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [paths[name] for name in _MANIFESTS]
    for name, columns in _MANIFESTS.items():
        _atomic_write_table(_to_table(tables[name], columns), paths[name])
    if skipped is not None:
        _atomic_write_json(skipped, paths["skipped"])
        written.append(paths["skipped"])
    elif paths["skipped"].exists():
        logger.info("removing %s left by an earlier run", paths["skipped"])
        paths["skipped"].unlink()
    return written
