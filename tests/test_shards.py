"""ShardWriter / read_shard_attrs: round trips, atomic writes, refused batches; validate_shards."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from softref.data.manifest import file_sha256, write_manifest
from softref.features import ShardError, ShardWriter, read_shard_attrs, validate_shards
from softref.features.shards import SHARD_ATTRS, TMP_MARKER, chunk_rows, read_rows


def attrs_for(shard: int = 0, num_shards: int = 1, **over: object) -> dict:
    base = {
        "teacher": "toy",
        "weights_sha256": "a" * 64,
        "preprocess": "none",
        "normalized": False,
        "manifest_sha256": "b" * 64,
        "shard": shard,
        "num_shards": num_shards,
        "modality": "images",
    }
    base.update(over)
    return base


def write(path: Path, ids: list[str], feats: np.ndarray, *, dtype: str = "float16",
          tokens: np.ndarray | None = None, batch: int = 3, **attr_over: object) -> None:
    with ShardWriter(path, num_rows=len(ids), dim=feats.shape[1], dtype=dtype,
                     attrs=attrs_for(**attr_over),
                     token_shape=None if tokens is None else tokens.shape[1:]) as w:
        for a in range(0, len(ids), batch):
            w.write(a, ids[a:a + batch], feats[a:a + batch],
                    None if tokens is None else tokens[a:a + batch])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}" for i in range(10)]
    feats = rng.standard_normal((10, 7)).astype(np.float32)
    tokens = rng.standard_normal((10, 4, 3)).astype(np.float32)
    path = tmp_path / "images-0.h5"
    write(path, ids, feats, dtype=dtype, tokens=tokens)

    attrs = read_shard_attrs(path)
    assert set(SHARD_ATTRS) <= set(attrs)
    assert attrs["complete"] is True and attrs["dim"] == 7 and attrs["dtype"] == dtype
    assert attrs["teacher"] == "toy" and attrs["normalized"] is False and attrs["shard"] == 0
    with h5py.File(path, "r") as f:
        assert f["ids"].asstr()[:].tolist() == ids
        assert f["features"].dtype == np.dtype(dtype)
        assert f["features"].chunks[1] == 7 and f["tokens"].chunks == (1, 4, 3)
        tol = 1e-3 if dtype == "float16" else 0
        np.testing.assert_allclose(f["features"][:], feats, rtol=tol, atol=tol)
        np.testing.assert_allclose(f["tokens"][:], tokens, rtol=tol, atol=tol)
        rows = np.array([1, 2, 3, 7])
        np.testing.assert_array_equal(read_rows(f["features"], rows), f["features"][:][rows])
    assert not list(tmp_path.glob(f"*{TMP_MARKER}*"))


def test_empty_shard(tmp_path: Path) -> None:
    path = tmp_path / "texts-2.h5"
    write(path, [], np.zeros((0, 5), np.float32), shard=2, num_shards=3, modality="texts")
    assert read_shard_attrs(path)["complete"] is True
    with h5py.File(path, "r") as f:
        assert f["features"].shape == (0, 5)


def test_chunk_rows() -> None:
    assert chunk_rows(37632, 2, 4000) == 1
    assert 1 < chunk_rows(768, 2, 10_000) <= 16
    assert chunk_rows(768, 2, 3) == 3


def test_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "images-0.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(path, num_rows=4, dim=2, attrs=attrs_for()) as w:
            w.write(0, ["a", "b"], np.ones((2, 2)))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_missing_rows_refused(tmp_path: Path) -> None:
    path = tmp_path / "images-0.h5"
    with pytest.raises(ShardError, match=r"2 of 4 rows were never written; first missing rows: 2, 3"):
        with ShardWriter(path, num_rows=4, dim=2, attrs=attrs_for()) as w:
            w.write(0, ["a", "b"], np.ones((2, 2)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e6])
def test_non_finite_batch_refused(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "images-0.h5"
    feats = np.ones((3, 2), np.float32)
    feats[1, 0] = bad  # 1e6 overflows float16
    with pytest.raises(ShardError) as err:
        with ShardWriter(path, num_rows=3, dim=2, attrs=attrs_for()) as w:
            w.write(0, ["a", "b", "c"], feats)
    assert str(path) in str(err.value) and "id 'b'" in str(err.value) and "row 1" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_writer_refusals(tmp_path: Path) -> None:
    path = tmp_path / "images-0.h5"
    with pytest.raises(ShardError, match="lack required key"):
        ShardWriter(path, num_rows=1, dim=2, attrs={"teacher": "x"})
    with pytest.raises(ShardError, match="expected shape"):
        with ShardWriter(path, num_rows=2, dim=2, attrs=attrs_for()) as w:
            w.write(0, ["a", "b"], np.ones((2, 3)))
    with pytest.raises(ShardError, match="duplicates"):
        with ShardWriter(path, num_rows=2, dim=2, attrs=attrs_for()) as w:
            w.write(0, ["a", "a"], np.ones((2, 2)))
    with pytest.raises(ShardError, match="written twice"):
        with ShardWriter(path, num_rows=2, dim=2, attrs=attrs_for()) as w:
            w.write(0, ["a", "b"], np.ones((2, 2)))
            w.write(1, ["c"], np.ones((1, 2)))
    with pytest.raises(ShardError, match="shard=3, num_shards=2"):
        ShardWriter(path, num_rows=1, dim=2, attrs=attrs_for(shard=3, num_shards=2))
    assert list(tmp_path.iterdir()) == []


def test_tmp_name_and_rerun_replaces(tmp_path: Path) -> None:
    path = tmp_path / "images-0.h5"
    with ShardWriter(path, num_rows=1, dim=2, attrs=attrs_for()) as w:
        assert w.tmp_path == tmp_path / f"images-0.h5{TMP_MARKER}{os.getpid()}"
        assert w.tmp_path.exists() and not path.exists()
        w.write(0, ["a"], np.ones((1, 2)))
    write(path, ["z"], np.zeros((1, 2)))
    with h5py.File(path, "r") as f:
        assert f["ids"].asstr()[:].tolist() == ["z"]


def test_read_shard_attrs_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_shard_attrs(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="junk.h5"):
        read_shard_attrs(junk)


# ---------------------------------------------------------------------------------------------
# validate_shards
# ---------------------------------------------------------------------------------------------
def _manifest(tmp_path: Path, n: int) -> Path:
    df = pd.DataFrame({
        "image_id": [f"img{i:03d}" for i in range(n)],
        "path": [f"images/{i}.png" for i in range(n)],
        "identity": [f"p{i // 2}" for i in range(n)],
        "split": ["train"] * n,
    })
    path = tmp_path / "images.parquet"
    write_manifest(df, path, "images")
    return path


def _good_dir(tmp_path: Path, n: int = 7, num_shards: int = 2) -> tuple[Path, Path]:
    manifest = _manifest(tmp_path, n)
    sha = file_sha256(manifest)
    ids = [f"img{i:03d}" for i in range(n)]
    rng = np.random.default_rng(1)
    d = tmp_path / "feat"
    bounds = np.array_split(np.arange(n), num_shards)
    for s, rows in enumerate(bounds):
        write(d / f"images-{s}.h5", [ids[r] for r in rows], rng.standard_normal((len(rows), 4)),
              shard=s, num_shards=num_shards, manifest_sha256=sha)
    return d, manifest


def test_validate_ok(tmp_path: Path) -> None:
    d, manifest = _good_dir(tmp_path)
    report = validate_shards(d, images_manifest=manifest)
    assert report.ok, report.problems
    assert [f.rows for f in report.files] == [4, 3]
    assert all(f.nonfinite_rows == 0 and f.norm_mean is not None for f in report.files)
    assert "shard 0/2" in report.files[0].line()


def test_validate_catches_nan(tmp_path: Path) -> None:
    d, manifest = _good_dir(tmp_path)
    # A bad shard written with raw h5py: the writer itself refuses NaN.
    with h5py.File(d / "images-1.h5", "a") as f:
        f["features"][1] = np.nan
    report = validate_shards(d, images_manifest=manifest)
    assert not report.ok
    assert report.files[1].nonfinite_rows == 1
    assert any("images-1.h5" in p and "NaN/inf" in p and "row 1 id 'img005'" in p for p in report.problems)


def test_validate_catches_id_mismatch_and_sha(tmp_path: Path) -> None:
    d, manifest = _good_dir(tmp_path)
    with h5py.File(d / "images-0.h5", "a") as f:
        f["ids"][2] = "imgXXX"
        f.attrs["manifest_sha256"] = "c" * 64
    report = validate_shards(d, images_manifest=manifest)
    text = "\n".join(report.problems)
    assert "row 2: expected 'img002' (manifest row 2), found 'imgXXX'" in text
    assert "manifest_sha256 mismatch" in text and "c" * 64 in text


def test_validate_catches_dim_missing_shard_and_tmp(tmp_path: Path) -> None:
    d, _ = _good_dir(tmp_path, num_shards=3)
    with h5py.File(d / "images-0.h5", "a") as f:
        f.attrs["dim"] = 5
    (d / "images-2.h5").rename(d / f"images-2.h5{TMP_MARKER}123")
    report = validate_shards(d)
    text = "\n".join(report.problems)
    assert "dim mismatch: attr 'dim' is 5, 'features' has 4 columns" in text
    assert "missing images shard(s) [2] of 3" in text
    assert "images-2.h5 is missing" in text


def test_validate_incomplete(tmp_path: Path) -> None:
    d, _ = _good_dir(tmp_path)
    with h5py.File(d / "images-0.h5", "a") as f:
        del f.attrs["complete"]
    report = validate_shards(d)
    assert any("images-0.h5: incomplete" in p for p in report.problems)
