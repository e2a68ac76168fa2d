"""Tests for softref.data.manifest: schema checks, deterministic bytes, sharding."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from softref.data.manifest import (
    IMAGE_COLUMNS,
    POSITIVE_COLUMNS,
    TEXT_COLUMNS,
    ManifestError,
    file_sha256,
    read_images,
    read_positives,
    read_texts,
    shard_rows,
    validate_pair,
    write_manifest,
    write_positives,
)


def images_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["b", "a", "c", "10", "2"],
            "path": ["imgs/b.jpg", "imgs/a.jpg", "imgs/c.jpg", "imgs/10.jpg", "imgs/2.jpg"],
            "identity": ["p1", "p1", "p2", "p3", "p3"],
            "split": ["train", "train", "val", "test", "test"],
        }
    )


def texts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text_id": ["b#0", "a#0", "a#1", "c#0", "10#0", "2#0"],
            "image_id": ["b", "a", "a", "c", "10", "2"],
            "identity": ["p1", "p1", "p1", "p2", "p3", "p3"],
            "caption": ["a red coat", "blue jeans", "", "a hat, ünïcode", "x\ty", "z"],
            "split": ["train", "train", "train", "val", "test", "test"],
        }
    )


def sorted_by(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df.sort_values(col).reset_index(drop=True)


def assert_same_values(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.astype(object).values.tolist() == b.astype(object).values.tolist()


# ---------------------------------------------------------------------------------------------
# Round trip and determinism
# ---------------------------------------------------------------------------------------------


def test_round_trip_images_and_texts(tmp_path):
    write_manifest(images_frame(), tmp_path / "images.parquet", "images")
    write_manifest(texts_frame(), tmp_path / "texts.parquet", "texts")
    images = read_images(tmp_path / "images.parquet")
    texts = read_texts(tmp_path / "texts.parquet")
    assert tuple(images.columns) == IMAGE_COLUMNS
    assert tuple(texts.columns) == TEXT_COLUMNS
    assert_same_values(images, sorted_by(images_frame(), "image_id"))
    assert_same_values(texts, sorted_by(texts_frame(), "text_id"))
    # Code-point order, not numeric.
    assert images["image_id"].tolist() == ["10", "2", "a", "b", "c"]
    validate_pair(images, texts, tmp_path / "texts.parquet")


def test_rewrite_is_byte_identical(tmp_path):
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    write_manifest(texts_frame(), a, "texts")
    write_manifest(texts_frame(), b, "texts")
    # Other row order, other column order, object dtype: same bytes.
    shuffled = texts_frame().iloc[[3, 0, 5, 1, 4, 2]][list(reversed(TEXT_COLUMNS))]
    write_manifest(shuffled.astype(object), c, "texts")
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    assert file_sha256(a) == file_sha256(c)


def test_schema_is_plain_strings_without_pandas_metadata(tmp_path):
    path = tmp_path / "images.parquet"
    write_manifest(images_frame(), path, "images")
    schema = pq.read_schema(path)
    assert schema.names == list(IMAGE_COLUMNS)
    assert all(str(t) == "string" for t in schema.types)
    assert b"pandas" not in (schema.metadata or {})
    assert not list(tmp_path.glob("*.tmp"))


def test_positives_round_trip(tmp_path):
    pos = pd.DataFrame({"text_id": ["b#0", "a#0", "a#0"], "image_id": ["c", "c", "a"]})
    write_positives(pos, tmp_path / "positives.parquet")
    back = read_positives(tmp_path / "positives.parquet")
    assert tuple(back.columns) == POSITIVE_COLUMNS
    assert back.values.tolist() == [["a#0", "a"], ["a#0", "c"], ["b#0", "c"]]
    validate_pair(images_frame(), texts_frame(), "texts", positives=back)
    bad = pd.DataFrame({"text_id": ["zz"], "image_id": ["a"]})
    with pytest.raises(ManifestError, match="'zz'"):
        validate_pair(images_frame(), texts_frame(), "positives.parquet", positives=bad)


def test_positives_duplicates_rejected(tmp_path):
    pos = pd.DataFrame({"text_id": ["a#0", "a#0"], "image_id": ["c", "c"]})
    with pytest.raises(ManifestError, match="duplicated"):
        write_positives(pos, tmp_path / "positives.parquet")
    assert not (tmp_path / "positives.parquet").exists()


def test_file_sha256(tmp_path):
    path = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Validation errors (write side: nothing written)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda df: df.drop(columns="split"), r"missing \['split'\]"),
        (lambda df: df.assign(extra="x"), r"unexpected \['extra'\]"),
        (lambda df: df.assign(identity=[1, 1, 2, 3, 3]), r"column 'identity' must hold strings"),
        (lambda df: df.assign(path=["p", None, "q", "r", "s"]), r"column 'path' has 1 null.*rows: 1"),
        (lambda df: df.assign(image_id=["a", "a", "c", "d", "c"]), r"duplicated id\(s\): 'a', 'c'"),
        (lambda df: df.assign(split=["train", "dev", "val", "test", "test"]),
         r"column 'split' must be one of .*'dev'.*rows: 1"),
        (lambda df: df.assign(path=["/abs/b.jpg", "a", "c", "d", "e"]), r"absolute path"),
        (lambda df: df.assign(identity=["", "p", "p", "p", "p"]), r"column 'identity' has 1 empty"),
    ],
)
def test_write_images_rejects(tmp_path, mutate, pattern):
    path = tmp_path / "images.parquet"
    with pytest.raises(ManifestError, match=pattern) as info:
        write_manifest(mutate(images_frame()), path, "images")
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="'images' or 'texts'"):
        write_manifest(images_frame(), tmp_path / "x.parquet", "captions")  # type: ignore[arg-type]


def test_split_query_gallery_allowed(tmp_path):
    df = images_frame().assign(split=["query", "gallery", "train", "val", "test"])
    write_manifest(df, tmp_path / "images.parquet", "images")
    assert sorted(read_images(tmp_path / "images.parquet")["split"]) == sorted(df["split"])


def test_validate_pair_unknown_image(tmp_path):
    texts = texts_frame()
    texts.loc[2, "image_id"] = "nope"
    with pytest.raises(ManifestError, match=r"texts.parquet: 1 text\(s\) name an image_id absent.*'a#1'.*'nope'"):
        validate_pair(images_frame(), texts, "texts.parquet")


@pytest.mark.parametrize("col", ["identity", "split"])
def test_validate_pair_disagreeing_text(col):
    texts = texts_frame()
    texts.loc[3, col] = "test" if col == "split" else "p9"
    with pytest.raises(ManifestError, match=rf"column '{col}' of 1 text\(s\).*'c#0'.*expected"):
        validate_pair(images_frame(), texts, "texts.parquet")


# ---------------------------------------------------------------------------------------------
# Read side
# ---------------------------------------------------------------------------------------------


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="images.parquet"):
        read_images(tmp_path / "images.parquet")


def test_read_not_parquet(tmp_path):
    path = tmp_path / "images.parquet"
    path.write_text("not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        read_images(path)


def test_read_rejects_wrong_type_and_columns(tmp_path):
    path = tmp_path / "images.parquet"
    images_frame().assign(identity=[1, 1, 2, 3, 3]).to_parquet(path)
    with pytest.raises(ManifestError, match=r"column 'identity' has type int64, expected string"):
        read_images(path)
    with pytest.raises(ManifestError, match=r"expected columns .*missing \['text_id'"):
        read_texts(path)


def test_read_rejects_duplicates_and_nulls(tmp_path):
    path = tmp_path / "texts.parquet"
    texts_frame().assign(text_id=["x", "y", "x", "z", "w", "v"]).to_parquet(path)
    with pytest.raises(ManifestError, match=rf"{path}: column 'text_id' must be unique.*'x'"):
        read_texts(path)
    texts_frame().assign(caption=["a", None, "c", "d", "e", "f"]).to_parquet(path)
    with pytest.raises(ManifestError, match=r"column 'caption' has 1 null"):
        read_texts(path)


# ---------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_rows", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("num_shards", [1, 3, 4, 12])
def test_shard_rows_matches_array_split(num_rows, num_shards):
    parts = np.array_split(np.arange(num_rows), num_shards)
    for shard, part in enumerate(parts):
        start, stop = shard_rows(num_rows, shard, num_shards)
        assert list(range(start, stop)) == part.tolist()


@pytest.mark.parametrize(("args", "pattern"), [((5, 0, 0), "num_shards"), ((5, 3, 3), "shard"),
                                               ((5, -1, 2), "shard"), ((-1, 0, 1), "num_rows")])
def test_shard_rows_rejects(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        shard_rows(*args)
