"""Manifest schema: the Parquet tables that list a dataset's images, captions and extra positives.

Every adapter turns a dataset's own annotation format into the same tables, and every
downstream step (feature extraction, references, training, evaluation) reads only these:

``images.parquet``
    ``image_id`` (unique), ``path`` (relative to the dataset root), ``identity`` (the person /
    class / object; for COCO and Flickr30K the image id itself), ``split``.
``texts.parquet``
    ``text_id`` (unique), ``image_id`` (the paired image), ``identity``, ``caption`` (as
    annotated), ``split``.
``positives.parquet`` (always written; empty unless the format has extra relevance)
    ``text_id``, ``image_id``: extra relevant pairs beyond the annotated one (ECCV Caption).
``pairs.parquet`` (always written; empty unless the format holds sentence pairs)
    ``pair_id`` (unique), ``sentence1``, ``sentence2`` (as annotated), ``score`` (the gold
    similarity, a finite float64), ``task`` (e.g. ``STS12/MSRpar``, ``STSBenchmark``,
    ``SICK-R``), ``split``. The images and texts manifests of such a dataset are empty.

All columns are strings except ``score``. Rows are sorted by id (positives by ``(text_id,
image_id)``), columns are in the fixed order above and the Parquet schema carries no pandas
metadata, so the same rows always give the same bytes; :func:`file_sha256` of a manifest can
then stand for its content in the feature shards' attributes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from softref.files import atomic_path, file_sha256
from softref.names import SPLITS

__all__ = [
    "IMAGE_COLUMNS",
    "TEXT_COLUMNS",
    "POSITIVE_COLUMNS",
    "PAIR_COLUMNS",
    "SPLITS",
    "ManifestError",
    "validate_images",
    "validate_texts",
    "validate_positives",
    "validate_pair",
    "validate_pairs",
    "write_manifest",
    "write_positives",
    "write_pairs",
    "read_images",
    "read_texts",
    "read_positives",
    "read_pairs",
    "file_sha256",
    "shard_rows",
]

IMAGE_COLUMNS: tuple[str, ...] = ("image_id", "path", "identity", "split")
TEXT_COLUMNS: tuple[str, ...] = ("text_id", "image_id", "identity", "caption", "split")
POSITIVE_COLUMNS: tuple[str, ...] = ("text_id", "image_id")
PAIR_COLUMNS: tuple[str, ...] = ("pair_id", "sentence1", "sentence2", "score", "task", "split")
_PAIR_TEXT_COLUMNS: tuple[str, ...] = ("pair_id", "sentence1", "sentence2", "task", "split")

# Columns that may hold an empty string: captions are kept exactly as annotated.
_MAY_BE_EMPTY = frozenset({"caption", "sentence1", "sentence2"})
# How many offending ids/rows an error message quotes.
_SHOW = 5

ManifestKind = Literal["images", "texts"]


class ManifestError(ValueError):
    """A manifest (file or frame about to be written) breaks the schema."""


def _columns_for(kind: str) -> tuple[tuple[str, ...], str]:
    if kind == "images":
        return IMAGE_COLUMNS, "image_id"
    if kind == "texts":
        return TEXT_COLUMNS, "text_id"
    raise ValueError(f"manifest kind must be 'images' or 'texts', got {kind!r}")


def _quote(values: Iterable[object]) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:_SHOW])
    more = f" (and {len(values) - _SHOW} more)" if len(values) > _SHOW else ""
    return shown + more


def _check_columns(
    found: Sequence[str], expected: tuple[str, ...], source: str | os.PathLike[str]
) -> None:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or extra:
        raise ManifestError(
            f"{source}: expected columns {list(expected)}, found {list(found)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _check_values(df: pd.DataFrame, columns: tuple[str, ...], source: str | os.PathLike[str]) -> None:
    """Every cell is a str (no nulls, no numbers); id-like columns are non-empty."""
    for col in columns:
        values = df[col].tolist()
        nulls = [i for i, v in enumerate(values) if _is_null(v)]
        if nulls:
            raise ManifestError(
                f"{source}: column {col!r} has {len(nulls)} null value(s), expected none; "
                f"first rows: {_quote(nulls)}"
            )
        wrong = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if wrong:
            found = sorted({type(values[i]).__name__ for i in wrong})
            raise ManifestError(
                f"{source}: column {col!r} must hold strings, found {found} in "
                f"{len(wrong)} row(s); first rows: {_quote(wrong)} "
                f"(values {_quote(values[i] for i in wrong)})"
            )
        if col not in _MAY_BE_EMPTY:
            empty = [i for i, v in enumerate(values) if v == ""]
            if empty:
                raise ManifestError(
                    f"{source}: column {col!r} has {len(empty)} empty string(s), expected "
                    f"non-empty values; first rows: {_quote(empty)}"
                )


def _check_unique(df: pd.DataFrame, col: str, source: str | os.PathLike[str]) -> None:
    dup = df[col][df[col].duplicated(keep=False)]
    if len(dup):
        ids = sorted(set(dup.tolist()))
        raise ManifestError(
            f"{source}: column {col!r} must be unique, found {len(ids)} duplicated id(s): "
            f"{_quote(ids)}"
        )


def _check_splits(df: pd.DataFrame, source: str | os.PathLike[str]) -> None:
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        rows = [int(i) for i in bad.to_numpy().nonzero()[0]]
        values = sorted(set(df["split"].iloc[rows].tolist()))
        raise ManifestError(
            f"{source}: column 'split' must be one of {list(SPLITS)}, found {_quote(values)} "
            f"in {len(rows)} row(s); first rows: {_quote(rows)}"
        )


def _canonical(df: pd.DataFrame, columns: tuple[str, ...], sort_by: Sequence[str]) -> pd.DataFrame:
    """Fixed column order, rows sorted by code point of the sort keys, fresh RangeIndex."""
    keys = list(zip(*(df[c].tolist() for c in sort_by)))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    out = df.loc[:, list(columns)].iloc[order].reset_index(drop=True)
    return out


def _validate(
    df: pd.DataFrame, kind: ManifestKind, source: str | os.PathLike[str]
) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    columns, id_col = _columns_for(kind)
    _check_columns(list(df.columns), columns, source)
    _check_values(df, columns, source)
    _check_unique(df, id_col, source)
    _check_splits(df, source)
    if kind == "images":
        absolute = [i for i, p in enumerate(df["path"].tolist()) if os.path.isabs(p)]
        if absolute:
            raise ManifestError(
                f"{source}: column 'path' must be relative to the dataset root, found "
                f"{len(absolute)} absolute path(s): {_quote(df['path'].iloc[absolute].tolist())}"
            )
    return _canonical(df, columns, [id_col])


def validate_images(df: pd.DataFrame, source: str | os.PathLike[str] = "images") -> pd.DataFrame:
    """Check an images frame against the schema; return it canonical (column order, sorted rows).

    ``source`` names the file the frame comes from or goes to, for error messages.
    """
    return _validate(df, "images", source)


def validate_texts(df: pd.DataFrame, source: str | os.PathLike[str] = "texts") -> pd.DataFrame:
    """Check a texts frame against the schema; return it canonical (column order, sorted rows)."""
    return _validate(df, "texts", source)


def validate_positives(
    df: pd.DataFrame, source: str | os.PathLike[str] = "positives"
) -> pd.DataFrame:
    """Check a positives frame (unique ``(text_id, image_id)`` pairs); return it canonical."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    _check_columns(list(df.columns), POSITIVE_COLUMNS, source)
    _check_values(df, POSITIVE_COLUMNS, source)
    dup = df.duplicated(list(POSITIVE_COLUMNS), keep=False)
    if dup.any():
        pairs = sorted(set(zip(df["text_id"][dup], df["image_id"][dup])))
        raise ManifestError(
            f"{source}: (text_id, image_id) pairs must be unique, found {len(pairs)} "
            f"duplicated: {_quote(pairs)}"
        )
    return _canonical(df, POSITIVE_COLUMNS, POSITIVE_COLUMNS)


def validate_pairs(df: pd.DataFrame, source: str | os.PathLike[str] = "pairs") -> pd.DataFrame:
    """Check a sentence-pairs frame (see the module docstring); return it canonical.

    ``score`` must hold finite numbers (they are stored as float64); the other columns strings.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    _check_columns(list(df.columns), PAIR_COLUMNS, source)
    _check_values(df, _PAIR_TEXT_COLUMNS, source)
    _check_unique(df, "pair_id", source)
    _check_splits(df, source)
    scores = df["score"].tolist()
    bad = [
        i for i, v in enumerate(scores)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v
        or v in (float("inf"), float("-inf"))
    ]
    if bad:
        raise ManifestError(
            f"{source}: column 'score' must hold finite numbers, found {len(bad)} other "
            f"value(s); first rows: {_quote(bad)} (values {_quote(scores[i] for i in bad)})"
        )
    out = _canonical(df, PAIR_COLUMNS, ["pair_id"])
    out["score"] = out["score"].astype("float64")
    return out


def validate_pair(
    images: pd.DataFrame,
    texts: pd.DataFrame,
    path: str | os.PathLike[str] = "texts",
    positives: pd.DataFrame | None = None,
) -> None:
    """Check that texts (and positives) point at listed images and agree with them.

    Every text's ``image_id`` must exist in ``images``, and its ``identity`` and ``split`` must
    be those of its image; every positive must name a listed text and a listed image. ``path``
    names the texts (or positives) file in the error.
    """
    by_id = images.set_index("image_id")
    known = texts["image_id"].isin(by_id.index)
    if not known.all():
        rows = [int(i) for i in (~known).to_numpy().nonzero()[0]]
        ids = texts["image_id"].iloc[rows].tolist()
        raise ManifestError(
            f"{path}: {len(rows)} text(s) name an image_id absent from the images manifest; "
            f"first text_ids {_quote(texts['text_id'].iloc[rows].tolist())} "
            f"-> image_ids {_quote(ids)}"
        )
    for col in ("identity", "split"):
        expected = by_id[col].reindex(texts["image_id"]).to_numpy()
        differ = texts[col].to_numpy() != expected
        if differ.any():
            rows = [int(i) for i in differ.nonzero()[0]]
            first = rows[0]
            raise ManifestError(
                f"{path}: column {col!r} of {len(rows)} text(s) differs from their image's; "
                f"first text_ids {_quote(texts['text_id'].iloc[rows].tolist())}; e.g. text "
                f"{texts['text_id'].iloc[first]!r}: expected {expected[first]!r} (image "
                f"{texts['image_id'].iloc[first]!r}), found {texts[col].iloc[first]!r}"
            )
    if positives is not None:
        for col, table, name in (("text_id", texts, "texts"), ("image_id", images, "images")):
            bad = ~positives[col].isin(table[col])
            if bad.any():
                ids = sorted(set(positives[col][bad].tolist()))
                raise ManifestError(
                    f"{path}: positives name {len(ids)} {col}(s) absent from the {name} "
                    f"manifest: {_quote(ids)}"
                )


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        # Explicit options so the bytes do not drift with library defaults.
        pq.write_table(
            table,
            tmp,
            compression="snappy",
            version="2.6",
            use_dictionary=True,
            write_statistics=True,
        )


def _column_type(column: str) -> pa.DataType:
    return pa.float64() if column == "score" else pa.string()


def _to_table(df: pd.DataFrame, columns: tuple[str, ...]) -> pa.Table:
    # Built column by column from plain lists: no pandas schema metadata, always `string`
    # (pandas would give `large_string` for its own str dtype).
    schema = pa.schema([(c, _column_type(c)) for c in columns])
    arrays = [pa.array(df[c].tolist(), type=_column_type(c)) for c in columns]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_manifest(df: pd.DataFrame, path: Path, kind: ManifestKind) -> None:
    """Validate ``df`` as an ``images`` or ``texts`` manifest, sort it and write it atomically.

    Raises :class:`ManifestError` (naming ``path``) when the frame breaks the schema; nothing
    is written then.
    """
    columns, _ = _columns_for(kind)
    canonical = _validate(df, kind, path)
    _atomic_write_table(_to_table(canonical, columns), Path(path))


def write_positives(df: pd.DataFrame, path: Path) -> None:
    """Validate, sort and atomically write a ``positives.parquet`` (text_id, image_id)."""
    canonical = validate_positives(df, path)
    _atomic_write_table(_to_table(canonical, POSITIVE_COLUMNS), Path(path))


def write_pairs(df: pd.DataFrame, path: Path) -> None:
    """Validate, sort and atomically write a ``pairs.parquet`` (scored sentence pairs)."""
    canonical = validate_pairs(df, path)
    _atomic_write_table(_to_table(canonical, PAIR_COLUMNS), Path(path))


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{path}: not a readable Parquet file ({exc})") from exc
    _check_columns(table.schema.names, columns, path)
    for col in columns:
        typ = table.schema.field(col).type
        if col == "score":
            if not pa.types.is_floating(typ):
                raise ManifestError(f"{path}: column {col!r} has type {typ}, expected float64")
            continue
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)
                or pa.types.is_string_view(typ)):
            raise ManifestError(f"{path}: column {col!r} has type {typ}, expected string")
    return table.select(list(columns)).to_pandas()


def read_images(path: Path) -> pd.DataFrame:
    """Read and validate an ``images.parquet``; rows in file order, columns :data:`IMAGE_COLUMNS`."""
    df = _read_table(path, IMAGE_COLUMNS)
    _validate(df, "images", path)
    return df


def read_texts(path: Path) -> pd.DataFrame:
    """Read and validate a ``texts.parquet``; rows in file order, columns :data:`TEXT_COLUMNS`."""
    df = _read_table(path, TEXT_COLUMNS)
    _validate(df, "texts", path)
    return df


def read_positives(path: Path) -> pd.DataFrame:
    """Read and validate a ``positives.parquet``; columns :data:`POSITIVE_COLUMNS`."""
    df = _read_table(path, POSITIVE_COLUMNS)
    validate_positives(df, path)
    return df


def read_pairs(path: Path) -> pd.DataFrame:
    """Read and validate a ``pairs.parquet``; columns :data:`PAIR_COLUMNS`, ``score`` float64."""
    df = _read_table(path, PAIR_COLUMNS)
    validate_pairs(df, path)
    return df


def shard_rows(num_rows: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``shard`` when ``num_rows`` rows are cut into contiguous blocks.

    Same convention as ``numpy.array_split``: the first ``num_rows % num_shards`` shards hold
    one row more than the others.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    base, extra = divmod(num_rows, num_shards)
    start = shard * base + min(shard, extra)
    stop = start + base + (1 if shard < extra else 0)
    return start, stop
