"""Adapters of the uni-modal image retrieval sets (CUSA Table 3): CUB-200-2011, Stanford Online
Products, In-Shop Clothes, iNaturalist 2018.

These sets have no captions: the adapters return an empty texts frame, so ``prepare`` writes an
empty (but valid) ``texts.parquet`` beside ``images.parquet`` and every dataset keeps the same
two manifests. The identity of an image is its class (CUB, SOP, iNaturalist) or item (In-Shop).

``cub``
    ``images.txt`` (``<image_id> <path>``) and ``image_class_labels.txt`` (``<image_id>
    <class>``, classes 1-200); images under ``images/``. Classes 1-100 are ``train``, 101-200
    ``test`` (the metric-learning split evaluated leave-one-out).
``sop``
    ``Ebay_train.txt`` and ``Ebay_test.txt``: a header line ``image_id class_id super_class_id
    path`` then one image per line; paths relative to the ``Stanford_Online_Products`` root.
    Their ``image_id`` values run on across the two files (test starts at 59,552), so they are
    the manifest ids; the identity is ``class_id``; the files give the splits.
``inshop``
    ``list_eval_partition.txt``: the number of images, a header line ``image_name item_id
    evaluation_status``, then one image per line with status ``train``, ``query`` or
    ``gallery`` (the manifest splits). ``image_id`` is ``image_name``; the identity is
    ``item_id``; the path is ``image_name`` under ``Img/`` when the list is the download's
    ``Eval/list_eval_partition.txt``, else under the root.
``inaturalist``
    The metric-learning split lists of iNaturalist 2018 (Brown et al., Smooth-AP; used by
    Unicom's and CUSA's evaluation): ``Inaturalist_train_set1.txt`` and
    ``Inaturalist_test_set1.txt``, one image path per line relative to the root, shaped
    ``train_val2018/<super-category>/<category id>/<file>.jpg``. ``image_id`` is the path; the
    identity is the category id (the path's second-to-last part), as CUSA's evaluation labels
    them; the files give the splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from softref.data.common import (
    AdapterOutput,
    AnnotationError,
    PathLike,
    check_disjoint_identities,
    check_duplicates,
    check_splits_option,
    frame,
    int_field,
    join_rel,
    quote,
    read_lines,
    relative_image,
    relative_to_root,
    require_file,
    resolve_annotations,
    resolve_folder,
    split_fields,
)
from softref.data.manifest import IMAGE_COLUMNS, TEXT_COLUMNS

__all__ = [
    "CUB_TEST_CLASSES",
    "read_cub",
    "read_sop",
    "read_inshop",
    "read_inaturalist",
]

# CUB-200-2011's metric-learning split: the first 100 classes train, the other 100 test.
CUB_NUM_CLASSES = 200
CUB_TEST_CLASSES = range(101, 201)


def _no_texts() -> pd.DataFrame:
    return frame([], TEXT_COLUMNS)


def _records(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a list file with their 1-based line numbers."""
    return [(n, line) for n, line in enumerate(read_lines(path), 1) if line.strip()]


# ---------------------------------------------------------------------------------------------
# CUB-200-2011
# ---------------------------------------------------------------------------------------------


def read_cub(
    root: Path, annotations: PathLike | None = None, *, image_dir: str = "images"
) -> AdapterOutput:
    """Read CUB-200-2011's ``images.txt`` and ``image_class_labels.txt``; see the module docstring.

    ``annotations`` is the folder holding both files (default ``root``); ``image_dir`` the
    folder, relative to ``root``, that the paths of ``images.txt`` are relative to.
    """
    folder = resolve_folder(root, annotations, "cub")
    images_txt = require_file(folder / "images.txt", "cub", "images.txt")
    labels_txt = require_file(folder / "image_class_labels.txt", "cub", "image_class_labels.txt")

    paths: dict[str, str] = {}
    places: list[str] = []
    ids: list[str] = []
    for n, line in _records(images_txt):
        where = f"line {n}"
        image_id, path = split_fields(
            line, ("image_id", "path"), where, images_txt.name, last_may_have_spaces=True
        )
        paths[image_id] = relative_image(path.strip(), f"{where} path", images_txt.name)
        ids.append(image_id)
        places.append(where)
    check_duplicates(ids, places, "image_id", images_txt.name)

    classes: dict[str, int] = {}
    ids, places = [], []
    for n, line in _records(labels_txt):
        where = f"line {n}"
        image_id, label = split_fields(line, ("image_id", "class_id"), where, labels_txt.name)
        cls = int_field(label, "class_id", where, labels_txt.name)
        if not 1 <= cls <= CUB_NUM_CLASSES:
            raise AnnotationError(
                f"{labels_txt.name}: {where}: class_id {cls} is outside 1..{CUB_NUM_CLASSES}, "
                "so it has no split (classes 1-100 are train, 101-200 test)"
            )
        classes[image_id] = cls
        ids.append(image_id)
        places.append(where)
    check_duplicates(ids, places, "image_id", labels_txt.name)

    unlabelled = [i for i in paths if i not in classes]
    unlisted = [i for i in classes if i not in paths]
    if unlabelled or unlisted:
        raise AnnotationError(
            f"cub: images.txt and image_class_labels.txt must list the same image ids; "
            f"{len(unlabelled)} have no class (first {quote(unlabelled)}), {len(unlisted)} "
            f"have a class but no path (first {quote(unlisted)})"
        )
    rows = [
        (
            image_id,
            join_rel(image_dir, path),
            str(classes[image_id]),
            "test" if classes[image_id] in CUB_TEST_CLASSES else "train",
        )
        for image_id, path in paths.items()
    ]
    return AdapterOutput(frame(rows, IMAGE_COLUMNS), _no_texts(), images_txt)


# ---------------------------------------------------------------------------------------------
# Stanford Online Products
# ---------------------------------------------------------------------------------------------

SOP_FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}
_SOP_FIELDS = ("image_id", "class_id", "super_class_id", "path")


def read_sop(
    root: Path, annotations: PathLike | None = None, *, splits: Sequence[str] = ("train", "test")
) -> AdapterOutput:
    """Read ``Ebay_train.txt`` / ``Ebay_test.txt``; see the module docstring.

    ``annotations`` is the folder holding the files (default ``root``); ``splits`` which of
    the two files to read (each must exist).
    """
    chosen = check_splits_option(splits, tuple(SOP_FILES), "sop")
    folder = resolve_folder(root, annotations, "sop")
    rows: list[tuple[str, ...]] = []
    places: list[str] = []
    last = folder
    for split in chosen:
        path = require_file(folder / SOP_FILES[split], "sop", f"{split} list")
        last = path
        records = _records(path)
        if not records or records[0][1].split() != list(_SOP_FIELDS):
            found = records[0][1] if records else "an empty file"
            raise AnnotationError(
                f"{path.name}: line 1 must be the header {' '.join(_SOP_FIELDS)!r}, found "
                f"{found!r}"
            )
        for n, line in records[1:]:
            where = f"line {n}"
            image_id, class_id, super_id, image = split_fields(line, _SOP_FIELDS, where, path.name)
            for field, value in (("image_id", image_id), ("class_id", class_id),
                                 ("super_class_id", super_id)):
                int_field(value, field, where, path.name)
            image = relative_image(image, f"{where} path", path.name)
            rows.append((image_id, image, class_id, split))
            places.append(f"{path.name} {where}")
    check_duplicates([r[0] for r in rows], places, "image_id", "sop")
    check_duplicates([r[1] for r in rows], places, "path", "sop")
    check_disjoint_identities(rows, places, "sop", what="classes")
    return AdapterOutput(frame(rows, IMAGE_COLUMNS), _no_texts(), last)


# ---------------------------------------------------------------------------------------------
# In-Shop Clothes
# ---------------------------------------------------------------------------------------------

INSHOP_FILES = ("list_eval_partition.txt", "Eval/list_eval_partition.txt")
INSHOP_SPLITS = ("train", "query", "gallery")
_INSHOP_FIELDS = ("image_name", "item_id", "evaluation_status")


def read_inshop(
    root: Path, annotations: PathLike | None = None, *, image_dir: str | None = None
) -> AdapterOutput:
    """Read In-Shop's ``list_eval_partition.txt``; see the module docstring.

    ``image_dir`` is the folder (relative to ``root``) the ``image_name`` values are relative
    to; by default ``Img`` when the list is ``Eval/list_eval_partition.txt`` (the layout of the
    DeepFashion download), else the root itself.
    """
    path = resolve_annotations(root, annotations, INSHOP_FILES, "inshop")
    name = path.name
    if image_dir is None:
        image_dir = "Img" if relative_to_root(root, path) == "Eval/list_eval_partition.txt" else ""
    records = _records(path)
    if len(records) < 2:
        raise AnnotationError(
            f"{name}: expected a count line and a header line before the images, found "
            f"{len(records)} line(s)"
        )
    count = int_field(records[0][1].strip(), "number of images", "line 1", name)
    if records[1][1].split() != list(_INSHOP_FIELDS):
        raise AnnotationError(
            f"{name}: line 2 must be the header {' '.join(_INSHOP_FIELDS)!r}, found "
            f"{records[1][1]!r}"
        )
    rows: list[tuple[str, ...]] = []
    places: list[str] = []
    for n, line in records[2:]:
        where = f"line {n}"
        image, item, status = split_fields(line, _INSHOP_FIELDS, where, name)
        if status not in INSHOP_SPLITS:
            raise AnnotationError(
                f"{name}: {where}: evaluation_status is {status!r}, expected one of "
                f"{list(INSHOP_SPLITS)}"
            )
        image = relative_image(image, f"{where} image_name", name)
        rows.append((image, join_rel(image_dir, image), item, status))
        places.append(where)
    if count != len(rows):
        raise AnnotationError(
            f"{name}: line 1 announces {count} images, the file lists {len(rows)}"
        )
    check_duplicates([r[0] for r in rows], places, "image_name", name)
    # Query and gallery share their items by design; train items must be apart from both.
    check_disjoint_identities(
        rows, places, name, what="items",
        groups=lambda s: "train" if s == "train" else "query/gallery",
    )
    return AdapterOutput(frame(rows, IMAGE_COLUMNS), _no_texts(), path)


# ---------------------------------------------------------------------------------------------
# iNaturalist 2018, metric-learning split
# ---------------------------------------------------------------------------------------------

INAT_FILES = {"train": "Inaturalist_train_set1.txt", "test": "Inaturalist_test_set1.txt"}
INAT_FOLDERS = ("Inat_dataset_splits", ".")


def _inat_folder(root: Path, annotations: PathLike | None) -> Path:
    if annotations is not None:
        return resolve_folder(root, annotations, "inaturalist")
    found = [
        root / f for f in INAT_FOLDERS
        if any((root / f / name).is_file() for name in INAT_FILES.values())
    ]
    if not found:
        raise FileNotFoundError(
            f"inaturalist: no split list in {root}; looked for {list(INAT_FILES.values())} in "
            f"{list(INAT_FOLDERS)} (pass `annotations` to name their folder)"
        )
    if len(found) > 1:
        raise AnnotationError(
            f"inaturalist: split lists in several folders of {root}: "
            f"{[relative_to_root(root, f) or '.' for f in found]}; pass `annotations` to choose one"
        )
    return found[0]


def read_inaturalist(
    root: Path, annotations: PathLike | None = None, *, splits: Sequence[str] = ("train", "test")
) -> AdapterOutput:
    """Read iNaturalist 2018's metric-learning split lists; see the module docstring.

    ``annotations`` is the folder holding the lists (default: ``Inat_dataset_splits/`` under
    the root, or the root itself, whichever holds them); ``splits`` which lists to read.
    """
    chosen = check_splits_option(splits, tuple(INAT_FILES), "inaturalist")
    folder = _inat_folder(root, annotations)
    rows: list[tuple[str, ...]] = []
    places: list[str] = []
    last = folder
    for split in chosen:
        path = require_file(folder / INAT_FILES[split], "inaturalist", f"{split} list")
        last = path
        for n, line in _records(path):
            where = f"line {n}"
            image = relative_image(line.strip(), f"{where} path", path.name)
            parts = image.split("/")
            if len(parts) < 3:
                raise AnnotationError(
                    f"{path.name}: {where}: expected a path <folder>/<super-category>/<category "
                    f"id>/<file>, found {image!r} (no category folder)"
                )
            rows.append((image, image, parts[-2], split))
            places.append(f"{path.name} {where}")
    check_duplicates([r[0] for r in rows], places, "path", "inaturalist")
    check_disjoint_identities(rows, places, "inaturalist", what="categories")
    return AdapterOutput(frame(rows, IMAGE_COLUMNS), _no_texts(), last)
