"""Adapters of two generic layouts: images sorted into split and class folders, and a TSV of
scored sentence pairs. The synthetic demo writes both (``resources/demo/retrieval`` and
``resources/demo/sts/pairs.tsv``); any dataset laid out the same way can use them.

``image-folders``
    ``<root>/<split>/<class>/<image file>``: split folders named among ``train``, ``val``,
    ``test``, ``query``, ``gallery``; in each, one folder per class holding that class's images
    (extensions ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, in any case). ``image_id`` and ``path``
    are ``<split>/<class>/<file>`` (``path`` with the folder ``annotations`` names in front when
    it is not the root), identity = the class folder, split = the split folder. Hidden entries
    (names starting with ``.``) are ignored at every level; anything else out of place (a file
    beside the split folders, a folder named after no split, a file that is not an image, a
    folder inside a class folder, a class folder without an image) is an error naming it. The
    texts manifest is empty, as for the other image-only datasets.
``sts-pairs``
    One tab-separated file (default ``pairs.tsv``) whose first line is a header naming at least
    the columns ``sentence1``, ``sentence2`` and ``score``, optionally ``task`` and ``split``
    (other columns are ignored); every later line is one scored pair with exactly the header's
    number of fields. Fields are split on tabs only (no quoting: sentences may hold quotes).
    ``task`` defaults to the option ``task`` (default ``sts-pairs``), ``split`` to ``test``;
    ``pair_id`` is ``<task>#<n>``, ``n`` the 0-based line after the header, zero-padded to 4
    digits; blank lines are skipped (they still count for ``n``). Scores are kept as written
    (finite numbers, no range imposed). It writes ``pairs.parquet``; the images and texts
    manifests are empty, as for ``senteval-sts``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from softref.data.common import (
    AdapterOutput,
    AnnotationError,
    PathLike,
    check_splits_option,
    frame,
    join_rel,
    read_lines,
    relative_to_root,
    resolve_annotations,
    resolve_folder,
)
from softref.data.manifest import IMAGE_COLUMNS, PAIR_COLUMNS, SPLITS, TEXT_COLUMNS
from softref.runtime import progress_disabled

__all__ = [
    "IMAGE_EXTENSIONS",
    "STS_PAIRS_FILE",
    "STS_PAIRS_COLUMNS",
    "read_image_folders",
    "read_sts_pairs",
]

logger = logging.getLogger("softref.data.adapters")

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
STS_PAIRS_FILE = "pairs.tsv"
# Required header columns of an sts-pairs file, then the optional ones.
STS_PAIRS_COLUMNS: tuple[str, ...] = ("sentence1", "sentence2", "score")
_STS_PAIRS_OPTIONAL: tuple[str, ...] = ("task", "split")


# ---------------------------------------------------------------------------------------------
# image-folders
# ---------------------------------------------------------------------------------------------


def _visible(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` whose names do not start with ``.``, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_images(folder: Path) -> list[str]:
    """The image file names of one class folder; any other visible entry is an error."""
    names: list[str] = []
    for entry in _visible(folder):
        path = Path(entry.path)
        if entry.is_dir():
            raise AnnotationError(
                f"image-folders: unexpected folder {path}: a class folder must hold only image "
                f"files ({', '.join(IMAGE_EXTENSIONS)}), not folders"
            )
        if not entry.is_file():
            raise AnnotationError(
                f"image-folders: {path} is neither a file nor a folder (a broken link?), "
                "expected an image file"
            )
        if not _is_image(entry.name):
            raise AnnotationError(
                f"image-folders: unexpected file {path}: not an image, expected one of the "
                f"extensions {list(IMAGE_EXTENSIONS)} (any case); hidden files (.name) are ignored"
            )
        names.append(entry.name)
    if not names:
        raise AnnotationError(
            f"image-folders: class folder {folder} holds no image, expected at least one file "
            f"with extension {list(IMAGE_EXTENSIONS)}"
        )
    return names


def _split_folders(folder: Path) -> dict[str, Path]:
    """The split folders directly under ``folder``; anything else visible there is an error."""
    found: dict[str, Path] = {}
    for entry in _visible(folder):
        path = Path(entry.path)
        if not entry.is_dir():
            raise AnnotationError(
                f"image-folders: unexpected file {path}: {folder} must hold only split folders "
                f"named among {list(SPLITS)}"
            )
        if entry.name not in SPLITS:
            raise AnnotationError(
                f"image-folders: unexpected folder {path}: split folders must be named one of "
                f"{list(SPLITS)}, found {entry.name!r}"
            )
        found[entry.name] = path
    if not found:
        raise FileNotFoundError(
            f"image-folders: split folders not found in {folder}: expected at least one folder "
            f"named among {list(SPLITS)}, each holding one folder per class"
        )
    return found


def read_image_folders(
    root: Path, annotations: PathLike | None = None, *, splits: Sequence[str] | None = None
) -> AdapterOutput:
    """Read images laid out as ``<split>/<class>/<file>``; see the module docstring.

    ``annotations`` is the folder holding the split folders (relative to ``root`` unless
    absolute; default ``root``); ``splits`` which split folders to read (each must exist;
    default every one present).
    """
    folder = resolve_folder(root, annotations, "image-folders")
    prefix = relative_to_root(root, folder)
    present = _split_folders(folder)
    if splits is None:
        chosen = tuple(s for s in SPLITS if s in present)
    else:
        chosen = check_splits_option(splits, SPLITS, "image-folders")
        absent = [s for s in chosen if s not in present]
        if absent:
            raise FileNotFoundError(
                f"image-folders: split folder(s) {absent} not found in {folder}; present: "
                f"{sorted(present)}"
            )
    rows: list[tuple[str, ...]] = []
    for split in chosen:
        classes = _visible(present[split])
        if not classes:
            raise AnnotationError(
                f"image-folders: split folder {present[split]} holds no class folder, expected "
                "one folder per class holding its images"
            )
        for entry in tqdm(classes, desc=f"listing {split}", unit="class",
                          disable=progress_disabled(logger)):
            if not entry.is_dir():
                raise AnnotationError(
                    f"image-folders: unexpected file {Path(entry.path)}: a split folder must "
                    "hold only class folders"
                )
            for name in _class_images(Path(entry.path)):
                image_id = f"{split}/{entry.name}/{name}"
                rows.append((image_id, join_rel(prefix, image_id), entry.name, split))
    logger.info(
        "image-folders: %d image(s) in %s (%s)", len(rows), folder,
        ", ".join(f"{s} {sum(r[3] == s for r in rows)}" for s in chosen),
    )
    return AdapterOutput(frame(rows, IMAGE_COLUMNS), frame([], TEXT_COLUMNS), folder)


# ---------------------------------------------------------------------------------------------
# sts-pairs
# ---------------------------------------------------------------------------------------------


def _header(line: str, path: Path) -> list[str]:
    # A UTF-8 byte order mark (spreadsheet exports) would otherwise glue onto the first name.
    columns = [c.strip() for c in line.removeprefix("\ufeff").split("\t")]
    expected = (
        f"expected a tab-separated header with at least {list(STS_PAIRS_COLUMNS)} (optional "
        f"{list(_STS_PAIRS_OPTIONAL)})"
    )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise AnnotationError(
            f"{path.name}: line 1: the header repeats column(s) {repeated}; {expected}, found "
            f"{columns} ({path})"
        )
    for column in STS_PAIRS_COLUMNS:
        if column not in columns:
            raise AnnotationError(
                f"{path.name}: line 1: the header has no column {column!r}; {expected}, found "
                f"{columns} ({path})"
            )
    return columns


def read_sts_pairs(
    root: Path, annotations: PathLike | None = None, *, task: str = "sts-pairs"
) -> AdapterOutput:
    """Read a TSV of scored sentence pairs; see the module docstring.

    ``annotations`` is the file (relative to ``root`` unless absolute; default
    ``pairs.tsv`` in ``root``); ``task`` the task of rows whose file has no ``task`` column.
    """
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"sts-pairs: option task must be a non-empty string, found {task!r}")
    path = resolve_annotations(root, annotations, (STS_PAIRS_FILE,), "sts-pairs")
    name = path.name
    lines = read_lines(path)
    if not lines:
        raise AnnotationError(
            f"{name}: the file is empty, expected a header line with the columns "
            f"{list(STS_PAIRS_COLUMNS)} ({path})"
        )
    columns = _header(lines[0], path)
    rows: list[tuple[object, ...]] = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip() and "\t" not in line:
            continue
        where = f"{name}: line {n}"
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise AnnotationError(
                f"{where}: expected {len(columns)} tab-separated fields ({', '.join(columns)}), "
                f"found {len(fields)}: {line!r} ({path})"
            )
        record = dict(zip(columns, fields))
        for column in ("sentence1", "sentence2"):
            if not record[column].strip():
                raise AnnotationError(
                    f"{where}: {column} is empty, expected a sentence ({path})"
                )
        raw = record["score"].strip()
        try:
            score = float(raw)
        except ValueError:
            raise AnnotationError(
                f"{where}: score must be a number, found {record['score']!r} ({path})"
            ) from None
        if not math.isfinite(score):
            raise AnnotationError(f"{where}: score must be finite, found {raw!r} ({path})")
        row_task = record["task"].strip() if "task" in record else task
        if not row_task:
            raise AnnotationError(f"{where}: task is empty, expected a task name ({path})")
        split = record["split"].strip() if "split" in record else "test"
        if split not in SPLITS:
            raise AnnotationError(
                f"{where}: split is {record['split']!r}, expected one of {list(SPLITS)} ({path})"
            )
        rows.append((f"{row_task}#{n - 2:04d}", record["sentence1"], record["sentence2"],
                     score, row_task, split))
    if not rows:
        raise AnnotationError(
            f"{name}: no pair after the header line, expected at least one ({path})"
        )
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    pairs = pairs.astype({c: object for c in PAIR_COLUMNS if c != "score"})
    pairs["score"] = pairs["score"].astype("float64")
    return AdapterOutput(
        images=frame([], IMAGE_COLUMNS),
        texts=frame([], TEXT_COLUMNS),
        annotations=path,
        pairs=pairs,
    )
