"""What every dataset adapter shares: its output type, its errors, the readers of its files.

An adapter (one per annotation format, registered in :data:`softref.data.adapters.FORMATS`)
reads a dataset's own files and returns an :class:`AdapterOutput`: manifest frames that are not
yet validated. The helpers here give every adapter the same error messages: they name the file,
the record (index or line number), the key or field, what was expected and what was found.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


__all__ = [
    "AnnotationError",
    "MissingImagesError",
    "AdapterOutput",
    "Adapter",
    "PathLike",
]

logger = logging.getLogger("softref.data.adapters")

# How many offending ids/paths an error message quotes.
SHOW = 5

PathLike = str | os.PathLike[str]


class AnnotationError(ValueError):
    """An annotation file does not have the layout its format promises."""


class MissingImagesError(FileNotFoundError):
    """Images listed in the annotations are not on disk."""


@dataclass(frozen=True)
class AdapterOutput:
    """What an adapter read: manifest frames (not yet validated) and the file they came from.

    ``positives`` holds extra relevant (text, image) pairs (ECCV Caption); ``pairs`` holds
    scored sentence pairs (the STS benchmarks), whose image and text frames are empty.
    """

    images: pd.DataFrame
    texts: pd.DataFrame
    annotations: Path
    positives: pd.DataFrame | None = None
    pairs: pd.DataFrame | None = None


Adapter = Callable[..., AdapterOutput]


def quote(values: Sequence[object]) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:SHOW])
    more = f" (and {len(values) - SHOW} more)" if len(values) > SHOW else ""
    return shown + more


def under(root: Path, name: PathLike) -> Path:
    """``name`` relative to ``root`` unless absolute."""
    path = Path(name)
    return path if path.is_absolute() else root / path


def resolve_annotations(
    root: Path, annotations: PathLike | None, candidates: Sequence[str], fmt: str
) -> Path:
    """The annotation file: ``annotations`` (relative to ``root`` unless absolute) or the one
    default name present in ``root``."""
    if annotations is not None:
        path = under(root, annotations)
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
            f"{fmt}: several annotation files in {root}: "
            f"{[str(p.relative_to(root)) for p in found]}; pass `annotations` to choose one"
        )
    return found[0]


def resolve_folder(root: Path, annotations: PathLike | None, fmt: str) -> Path:
    """The folder holding a multi-file format's annotation files: ``annotations`` (relative to
    ``root`` unless absolute) or ``root`` itself."""
    if annotations is None:
        return root
    path = under(root, annotations)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{fmt}: annotations must name the folder holding the annotation files; "
            f"no such folder: {path}"
        )
    return path


def require_file(path: Path, fmt: str, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{fmt}: {what} not found: {path}")
    return path


def relative_to_root(root: Path, path: Path) -> str:
    """``path`` (inside ``root``) as a POSIX path relative to ``root``; ``""`` for ``root``."""
    rel = os.path.relpath(path, root)
    return "" if rel == "." else Path(rel).as_posix()


def join_rel(*parts: str) -> str:
    """Join relative POSIX path parts, skipping empty ones, normalised (no ``./``)."""
    kept = [p for p in parts if p]
    return posixpath.normpath(posixpath.join(*kept)) if kept else ""


def check_splits_option(splits: Sequence[str], allowed: Sequence[str], fmt: str) -> tuple[str, ...]:
    """The ``splits`` option of a multi-file format: a non-empty subset of ``allowed``."""
    if isinstance(splits, str):
        splits = [splits]
    chosen = tuple(splits)
    unknown = [s for s in chosen if s not in allowed]
    if unknown or not chosen:
        raise ValueError(
            f"{fmt}: splits must be a non-empty subset of {list(allowed)}, found {list(chosen)}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{fmt}: splits must not repeat a split, found {list(chosen)}")
    return chosen


# ---------------------------------------------------------------------------------------------
# JSON records
# ---------------------------------------------------------------------------------------------


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path.name}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
            f"({path})"
        ) from exc


def load_json_list(path: Path) -> list[Any]:
    records = load_json(path)
    if not isinstance(records, list):
        raise AnnotationError(
            f"{path.name}: the top level must be a list of records, found {type(records).__name__}"
        )
    return records


def require(record: Any, key: str, where: str, name: str) -> Any:
    if not isinstance(record, dict):
        raise AnnotationError(f"{name}: {where} must be an object, found {type(record).__name__}")
    if key not in record:
        raise AnnotationError(
            f"{name}: {where} has no key {key!r} (keys found: {sorted(record)})"
        )
    return record[key]


def id_str(value: Any, where: str, name: str) -> str:
    """An id as a string: integers and non-empty strings only (a float or bool id is a bug)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise AnnotationError(
            f"{name}: {where} must be an integer or a non-empty string, found {value!r}"
        )
    return str(value)


def text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise AnnotationError(f"{name}: {where} must be a string, found {type(value).__name__}")
    return value


def nonempty_text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise AnnotationError(f"{name}: {where} must be a non-empty string, found {value!r}")
    return value


def relative_image(value: Any, where: str, name: str) -> str:
    """An image path from an annotation: a non-empty relative path, normalised."""
    value = nonempty_text(value, where, name)
    if os.path.isabs(value):
        raise AnnotationError(
            f"{name}: {where} must be a path relative to the dataset root, found {value!r}"
        )
    return posixpath.normpath(value)


# ---------------------------------------------------------------------------------------------
# Whitespace-separated text files
# ---------------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, line endings removed (a trailing newline adds no line)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            content = fh.read()
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{path.name}: not UTF-8 text at byte {exc.start} ({path})"
        ) from exc
    return content.splitlines()


def split_fields(
    line: str, fields: Sequence[str], where: str, name: str, *, last_may_have_spaces: bool = False
) -> list[str]:
    """Split a whitespace-separated record into exactly ``fields``; errors name a missing field."""
    parts = line.split(None, len(fields) - 1) if last_may_have_spaces else line.split()
    if len(parts) < len(fields):
        missing = fields[len(parts)]
        raise AnnotationError(
            f"{name}: {where} has no field {missing!r}: expected {len(fields)} fields "
            f"({' '.join(fields)}), found {len(parts)}: {line!r}"
        )
    if len(parts) > len(fields):
        raise AnnotationError(
            f"{name}: {where}: expected {len(fields)} fields ({' '.join(fields)}), "
            f"found {len(parts)}: {line!r}"
        )
    return parts


def int_field(value: str, field: str, where: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AnnotationError(
            f"{name}: {where}: field {field!r} must be an integer, found {value!r}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Checks shared by the adapters
# ---------------------------------------------------------------------------------------------


def check_duplicates(ids: Sequence[str], places: Sequence[str], what: str, name: str) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for i, place in zip(ids, places):
        seen[i].append(place)
    dups = {i: where for i, where in seen.items() if len(where) > 1}
    if dups:
        first = list(dups.items())[:SHOW]
        detail = "; ".join(f"{i!r} at {', '.join(where[:SHOW])}" for i, where in first)
        more = f" (and {len(dups) - SHOW} more)" if len(dups) > SHOW else ""
        raise AnnotationError(f"{name}: {len(dups)} duplicated {what}(s): {detail}{more}")


def check_disjoint_identities(
    rows: Sequence[tuple[str, ...]], places: Sequence[str], name: str, what: str = "identities",
    groups: Callable[[str], str] | None = None,
) -> None:
    """Identities (column 2 of image rows) must not appear in more than one split group.

    ``groups`` maps a split to its group (In-Shop: query and gallery share identities by design,
    so both map to ``test``).
    """
    group = groups or (lambda s: s)
    splits_of: dict[str, dict[str, str]] = defaultdict(dict)
    for row, place in zip(rows, places):
        splits_of[row[2]].setdefault(group(row[3]), place)
    crossing = {ident: s for ident, s in splits_of.items() if len(s) > 1}
    if crossing:
        first = list(crossing.items())[:SHOW]
        detail = "; ".join(
            f"{ident} in {', '.join(f'{sp} ({w})' for sp, w in s.items())}" for ident, s in first
        )
        raise AnnotationError(
            f"{name}: {len(crossing)} {what} appear in more than one split, expected disjoint "
            f"splits: {detail}"
        )


def frame(rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns), dtype=object)
