"""Dataset adapters: turn each dataset's own annotation files into softref manifests.

:func:`prepare` is the one entry point (the ``prepare_manifest`` rule calls it): it runs the
adapter registered under a format name in :data:`FORMATS`, checks that the listed images exist,
validates everything, and only then writes ``images.parquet`` and ``texts.parquet`` (and
``positives.parquet`` for formats with extra relevance) into the output folder. On any error
nothing is written.

Formats implemented here:

``karpathy``
    Karpathy-split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_f8k.json``):
    ``{"images": [{"filepath"?, "filename", "imgid", "cocoid"?, "split", "sentences":
    [{"raw", "sentid", ...}]}], "dataset": ...}``. An image's path is ``filepath/filename``
    when the record has ``filepath`` (COCO: ``val2014/...``), else ``image_dir/filename``
    (option ``image_dir``, default ``"images"``; Flickr30K usually needs
    ``image_dir="flickr30k-images"``). ``restval`` counts as ``train``. ``image_id`` is the
    ``cocoid`` when present, else the ``imgid``; the identity is the image itself; ``text_id``
    is the ``sentid``; the caption is the sentence's ``raw`` text.
``cuhk-pedes``, ``icfg-pedes``, ``rstpreid``
    One JSON list of ``{"split", "captions": [...], "id", <image field>}`` with images under
    ``imgs/``: CUHK-PEDES ``reid_raw.json`` / ``file_path``, ICFG-PEDES ``ICFG-PEDES.json`` /
    ``file_path``, RSTPReid ``data_captions.json`` / ``img_path``. ``image_id`` is the image
    field itself (unique in these files), ``path`` is ``imgs/<image field>``, the identity is
    ``str(id)``, and caption ``k`` of an image gets ``text_id = "<image_id>#<k>"``. Identities
    must not cross splits.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from softref.data.manifest import (
    IMAGE_COLUMNS,
    POSITIVE_COLUMNS,
    TEXT_COLUMNS,
    _atomic_write_table,
    _to_table,
    validate_images,
    validate_pair,
    validate_positives,
    validate_texts,
)

__all__ = [
    "AnnotationError",
    "MissingImagesError",
    "AdapterOutput",
    "PrepareResult",
    "FORMATS",
    "PLANNED_FORMATS",
    "get_adapter",
    "prepare",
    "read_karpathy",
]

logger = logging.getLogger(__name__)

# How many offending ids/paths an error message quotes.
_SHOW = 5


class AnnotationError(ValueError):
    """An annotation file does not have the layout its format promises."""


class MissingImagesError(FileNotFoundError):
    """Images listed in the annotations are not on disk."""


@dataclass(frozen=True)
class AdapterOutput:
    """What an adapter read: manifest frames (not yet validated) and the file they came from."""

    images: pd.DataFrame
    texts: pd.DataFrame
    annotations: Path
    positives: pd.DataFrame | None = None


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` wrote, with row counts per split."""

    format: str
    annotations: Path
    images_path: Path
    texts_path: Path
    images_per_split: Mapping[str, int]
    texts_per_split: Mapping[str, int]
    identities_per_split: Mapping[str, int]
    positives_path: Path | None = None
    skipped_path: Path | None = None
    num_skipped_images: int = 0
    num_skipped_texts: int = 0
    paths: tuple[Path, ...] = field(default=())


Adapter = Callable[..., AdapterOutput]


# ---------------------------------------------------------------------------------------------
# Helpers shared by the adapters
# ---------------------------------------------------------------------------------------------


def _progress_disabled() -> bool:
    return bool(os.environ.get("CI")) or not logger.isEnabledFor(logging.INFO)


def _quote(values: Sequence[object]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_SHOW])
    more = f" (and {len(values) - _SHOW} more)" if len(values) > _SHOW else ""
    return shown + more


def _resolve_annotations(
    root: Path, annotations: str | os.PathLike[str] | None, candidates: Sequence[str], fmt: str
) -> Path:
    """The annotation file: ``annotations`` (relative to ``root`` unless absolute) or the one
    default name present in ``root``."""
    if annotations is not None:
        path = Path(annotations)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"{fmt}: annotation file not found: {path}")
        return path
    found = [root / name for name in candidates if (root / name).is_file()]
    if not found:
        raise FileNotFoundError(
            f"{fmt}: no annotation file in {root}; looked for {list(candidates)} "
            "(pass `annotations` to name another file)"
        )
    if len(found) > 1:
        raise AnnotationError(
            f"{fmt}: several annotation files in {root}: {[p.name for p in found]}; "
            "pass `annotations` to choose one"
        )
    return found[0]


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path.name}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
            f"({path})"
        ) from exc


def _require(record: Any, key: str, where: str, name: str) -> Any:
    if not isinstance(record, dict):
        raise AnnotationError(f"{name}: {where} must be an object, found {type(record).__name__}")
    if key not in record:
        raise AnnotationError(
            f"{name}: {where} has no key {key!r} (keys found: {sorted(record)})"
        )
    return record[key]


def _id_str(value: Any, where: str, name: str) -> str:
    """An id as a string: integers and non-empty strings only (a float or bool id is a bug)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise AnnotationError(
            f"{name}: {where} must be an integer or a non-empty string, found {value!r}"
        )
    return str(value)


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise AnnotationError(f"{name}: {where} must be a string, found {type(value).__name__}")
    return value


def _check_duplicates(ids: Sequence[str], places: Sequence[str], what: str, name: str) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for i, place in zip(ids, places):
        seen[i].append(place)
    dups = {i: where for i, where in seen.items() if len(where) > 1}
    if dups:
        first = list(dups.items())[:_SHOW]
        detail = "; ".join(f"{i!r} at {', '.join(where[:_SHOW])}" for i, where in first)
        more = f" (and {len(dups) - _SHOW} more)" if len(dups) > _SHOW else ""
        raise AnnotationError(f"{name}: {len(dups)} duplicated {what}(s): {detail}{more}")


def _frame(rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns), dtype=object)


# ---------------------------------------------------------------------------------------------
# Karpathy JSON (MSCOCO, Flickr30K, Flickr8K)
# ---------------------------------------------------------------------------------------------

KARPATHY_FILES = ("dataset_coco.json", "dataset_flickr30k.json", "dataset_f8k.json")
_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_karpathy(
    root: Path, annotations: str | os.PathLike[str] | None = None, *, image_dir: str = "images"
) -> AdapterOutput:
    """Read a Karpathy-split JSON; see the module docstring for the mapping.

    ``image_dir`` is the folder (relative to ``root``) holding the images of records without
    ``filepath`` (Flickr30K, Flickr8K).
    """
    path = _resolve_annotations(root, annotations, KARPATHY_FILES, "karpathy")
    name = path.name
    data = _load_json(path)
    records = _require(data, "images", "the top level", name)
    if not isinstance(records, list):
        raise AnnotationError(f"{name}: 'images' must be a list, found {type(records).__name__}")

    image_rows: list[tuple[str, ...]] = []
    text_rows: list[tuple[str, ...]] = []
    image_places: list[str] = []
    text_places: list[str] = []
    for i, rec in enumerate(records):
        where = f"images[{i}]"
        filename = _text(_require(rec, "filename", where, name), f"{where}.filename", name)
        imgid = _id_str(_require(rec, "imgid", where, name), f"{where}.imgid", name)
        raw_split = _require(rec, "split", where, name)
        sentences = _require(rec, "sentences", where, name)
        if raw_split not in _KARPATHY_SPLITS:
            raise AnnotationError(
                f"{name}: {where}.split is {raw_split!r}, expected one of "
                f"{sorted(_KARPATHY_SPLITS)}"
            )
        split = _KARPATHY_SPLITS[raw_split]
        if "cocoid" in rec:
            image_id = _id_str(rec["cocoid"], f"{where}.cocoid", name)
        else:
            image_id = imgid
        if "filepath" in rec:
            folder = _text(rec["filepath"], f"{where}.filepath", name)
        else:
            folder = image_dir
        image_path = f"{folder}/{filename}" if folder else filename
        image_rows.append((image_id, image_path, image_id, split))
        image_places.append(where)

        if not isinstance(sentences, list):
            raise AnnotationError(
                f"{name}: {where}.sentences must be a list, found {type(sentences).__name__}"
            )
        sentids: list[str] = []
        for k, sent in enumerate(sentences):
            swhere = f"{where}.sentences[{k}]"
            raw = _text(_require(sent, "raw", swhere, name), f"{swhere}.raw", name)
            sentid = _id_str(_require(sent, "sentid", swhere, name), f"{swhere}.sentid", name)
            if "imgid" in sent and str(sent["imgid"]) != imgid:
                raise AnnotationError(
                    f"{name}: {swhere}.imgid is {sent['imgid']!r}, expected the record's imgid "
                    f"{imgid}"
                )
            sentids.append(sentid)
            text_rows.append((sentid, image_id, image_id, raw, split))
            text_places.append(swhere)
        if "sentids" in rec:
            listed = rec["sentids"]
            if not isinstance(listed, list) or [str(s) for s in listed] != sentids:
                raise AnnotationError(
                    f"{name}: {where}.sentids is {listed!r}, expected the sentences' sentids "
                    f"{[int(s) if s.isdigit() else s for s in sentids]}"
                )

    _check_duplicates([r[0] for r in image_rows], image_places, "image id", name)
    _check_duplicates([r[0] for r in text_rows], text_places, "sentid", name)
    return AdapterOutput(
        images=_frame(image_rows, IMAGE_COLUMNS),
        texts=_frame(text_rows, TEXT_COLUMNS),
        annotations=path,
    )


# ---------------------------------------------------------------------------------------------
# Person JSON lists (CUHK-PEDES, ICFG-PEDES, RSTPReid)
# ---------------------------------------------------------------------------------------------

_PERSON_SPLITS = ("train", "val", "test")


def _person_adapter(default_file: str, image_field: str, image_dir: str = "imgs") -> Adapter:
    """An adapter for a text-to-person JSON list whose image name sits under ``image_field``."""

    def read_person(
        root: Path, annotations: str | os.PathLike[str] | None = None
    ) -> AdapterOutput:
        path = _resolve_annotations(root, annotations, (default_file,), default_file)
        name = path.name
        records = _load_json(path)
        if not isinstance(records, list):
            raise AnnotationError(
                f"{name}: the top level must be a list of records, found {type(records).__name__}"
            )
        image_rows: list[tuple[str, ...]] = []
        text_rows: list[tuple[str, ...]] = []
        places: list[str] = []
        splits_of: dict[str, dict[str, str]] = defaultdict(dict)
        for i, rec in enumerate(records):
            where = f"record [{i}]"
            split = _require(rec, "split", where, name)
            captions = _require(rec, "captions", where, name)
            identity = _id_str(_require(rec, "id", where, name), f"{where}.id", name)
            image = _require(rec, image_field, where, name)
            if not isinstance(image, str) or not image:
                raise AnnotationError(
                    f"{name}: {where}.{image_field} must be a non-empty string, found {image!r}"
                )
            if split not in _PERSON_SPLITS:
                raise AnnotationError(
                    f"{name}: {where}.split is {split!r}, expected one of {list(_PERSON_SPLITS)}"
                )
            if not isinstance(captions, list):
                raise AnnotationError(
                    f"{name}: {where}.captions must be a list, found {type(captions).__name__}"
                )
            splits_of[identity].setdefault(split, where)
            image_rows.append((image, f"{image_dir}/{image}", identity, split))
            places.append(where)
            for k, caption in enumerate(captions):
                caption = _text(caption, f"{where}.captions[{k}]", name)
                text_rows.append((f"{image}#{k}", image, identity, caption, split))

        _check_duplicates([r[0] for r in image_rows], places, image_field, name)
        crossing = {ident: s for ident, s in splits_of.items() if len(s) > 1}
        if crossing:
            first = list(crossing.items())[:_SHOW]
            detail = "; ".join(
                f"id {ident} in {', '.join(f'{sp} ({w})' for sp, w in s.items())}"
                for ident, s in first
            )
            raise AnnotationError(
                f"{name}: {len(crossing)} identities appear in more than one split, expected "
                f"disjoint splits: {detail}"
            )
        return AdapterOutput(
            images=_frame(image_rows, IMAGE_COLUMNS),
            texts=_frame(text_rows, TEXT_COLUMNS),
            annotations=path,
        )

    read_person.__name__ = read_person.__qualname__ = (
        "read_" + default_file.rsplit(".", 1)[0].lower().replace("-", "_")
    )
    read_person.__doc__ = (
        f"Read {default_file} (image field {image_field!r}, images under {image_dir}/)."
    )
    return read_person


# ---------------------------------------------------------------------------------------------
# Registry and entry point
# ---------------------------------------------------------------------------------------------

FORMATS: dict[str, Adapter] = {
    "karpathy": read_karpathy,
    "cuhk-pedes": _person_adapter("reid_raw.json", "file_path"),
    "icfg-pedes": _person_adapter("ICFG-PEDES.json", "file_path"),
    "rstpreid": _person_adapter("data_captions.json", "img_path"),
}

# Formats the pipeline will read through this registry once their adapters exist.
PLANNED_FORMATS: tuple[str, ...] = (
    "albef",
    "cusa-json",
    "eccv",
    "cub",
    "sop",
    "inshop",
    "inaturalist",
    "senteval-sts",
    "reed-cub",
    "reed-flowers",
)


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


def _adapter_options(adapter: Adapter) -> list[str]:
    return [
        p.name
        for p in inspect.signature(adapter).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _missing_images(root: Path, paths: Sequence[str]) -> list[int]:
    """Row numbers whose path is not a file under ``root``.

    Each folder is listed once instead of one stat per image: much faster on network file
    systems for datasets with 100k+ images.
    """
    listings: dict[str, set[str]] = {}
    missing: list[int] = []
    for row, rel in enumerate(
        tqdm(paths, desc="checking images", unit="img", disable=_progress_disabled())
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


def _atomic_write_json(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _counts(df: pd.DataFrame, column: str | None = None) -> dict[str, int]:
    if column is None:
        sizes = df.groupby("split").size()
    else:
        sizes = df.groupby("split")[column].nunique()
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
    """Write ``out_dir/images.parquet`` and ``out_dir/texts.parquet`` for the dataset at ``root``.

    Args:
        format: a key of :data:`FORMATS` (``"karpathy"``, ``"cuhk-pedes"``, ...).
        root: the dataset root; manifest paths are relative to it.
        out_dir: where the manifests go (created if needed).
        annotations: the annotation file, relative to ``root`` unless absolute; by default the
            format's standard file name in ``root``.
        skip_missing: leave out images absent from disk (and their captions) instead of
            failing, and report them in ``out_dir/skipped.json``.
        check_images: check that every listed image exists under ``root``.
        **options: format-specific options (e.g. ``image_dir`` for ``karpathy``).

    Nothing is written unless the annotations, the images on disk and both manifests pass
    every check. A ``skipped.json`` left by an earlier run with ``skip_missing`` is removed
    when this run does not skip, so the folder always describes one run.
    """
    adapter = get_adapter(format)
    root = Path(root)
    out_dir = Path(out_dir)
    if skip_missing and not check_images:
        raise ValueError("skip_missing=True needs check_images=True (it skips what the check finds)")
    if not root.is_dir():
        raise FileNotFoundError(f"{format}: dataset root not found: {root}")
    accepted = _adapter_options(adapter)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"format {format!r} has no option(s) {unknown}; its options: {accepted or 'none'}"
        )

    raw = adapter(root, annotations, **options)
    images_path = out_dir / "images.parquet"
    texts_path = out_dir / "texts.parquet"
    positives_path = out_dir / "positives.parquet"
    skipped_path = out_dir / "skipped.json"

    images = validate_images(raw.images, images_path)
    texts = validate_texts(raw.texts, texts_path)
    positives = None if raw.positives is None else validate_positives(raw.positives, positives_path)

    skipped: dict[str, Any] | None = None
    if check_images:
        missing = _missing_images(root, images["path"].tolist())
        if missing and not skip_missing:
            raise MissingImagesError(
                f"{raw.annotations.name}: {len(missing)} of {len(images)} listed images are "
                f"missing under {root}; first: {_quote(images['path'].iloc[missing].tolist())} "
                "(pass skip_missing=True to leave them and their captions out)"
            )
        gone = images.iloc[missing]
        dropped = texts["image_id"].isin(gone["image_id"])
        skipped = {
            "format": format,
            "annotations": str(raw.annotations),
            "root": str(root),
            "num_missing_images": len(gone),
            "num_dropped_texts": int(dropped.sum()),
            "missing_images": [
                {"image_id": i, "path": p} for i, p in zip(gone["image_id"], gone["path"])
            ],
            "dropped_text_ids": texts["text_id"][dropped].tolist(),
        }
        if missing:
            logger.warning(
                "%s: leaving out %d missing image(s) and %d caption(s); see %s",
                raw.annotations.name, len(gone), int(dropped.sum()), skipped_path,
            )
            images = images.drop(index=gone.index).reset_index(drop=True)
            texts = texts[~dropped].reset_index(drop=True)
            if positives is not None:
                keep = positives["text_id"].isin(texts["text_id"]) & positives["image_id"].isin(
                    images["image_id"]
                )
                positives = positives[keep].reset_index(drop=True)

    validate_pair(images, texts, texts_path, positives)

    # Everything validated: now write.
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [images_path, texts_path]
    _atomic_write_table(_to_table(images, IMAGE_COLUMNS), images_path)
    _atomic_write_table(_to_table(texts, TEXT_COLUMNS), texts_path)
    if positives is not None:
        _atomic_write_table(_to_table(positives, POSITIVE_COLUMNS), positives_path)
        written.append(positives_path)
    if skip_missing and skipped is not None:
        _atomic_write_json(skipped, skipped_path)
        written.append(skipped_path)
    elif skipped_path.exists():
        logger.info("removing %s left by an earlier run", skipped_path)
        skipped_path.unlink()

    result = PrepareResult(
        format=format,
        annotations=raw.annotations,
        images_path=images_path,
        texts_path=texts_path,
        images_per_split=_counts(images),
        texts_per_split=_counts(texts),
        identities_per_split=_counts(images, "identity"),
        positives_path=positives_path if positives is not None else None,
        skipped_path=skipped_path if skip_missing else None,
        num_skipped_images=0 if skipped is None else skipped["num_missing_images"],
        num_skipped_texts=0 if skipped is None else skipped["num_dropped_texts"],
        paths=tuple(written),
    )
    logger.info(
        "%s: wrote %s (images per split %s, texts per split %s)",
        raw.annotations.name, out_dir, dict(result.images_per_split), dict(result.texts_per_split),
    )
    return result
