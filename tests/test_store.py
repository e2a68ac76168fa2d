"""FeatureStore: random access by id across shards, refusals, fork safety."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from softref.features import FeatureStore, ShardError, ShardWriter
from softref.features.shards import TMP_MARKER


def attrs_for(shard: int, num_shards: int, **over: object) -> dict:
    base = {
        "teacher": "toy",
        "weights_sha256": "a" * 64,
        "preprocess": "none",
        "normalized": True,
        "manifest_sha256": "b" * 64,
        "shard": shard,
        "num_shards": num_shards,
        "modality": "texts",
    }
    base.update(over)
    return base


def make_dir(tmp_path: Path, n: int = 50, dim: int = 6, num_shards: int = 3, dtype: str = "float32",
             tokens: bool = False, over: dict[int, dict] | None = None) -> tuple[Path, list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = [f"t{i:04d}" for i in range(n)]
    feats = rng.standard_normal((n, dim)).astype(np.float32)
    toks = rng.standard_normal((n, 3, 2)).astype(np.float32)
    d = tmp_path / "feat"
    for s, rows in enumerate(np.array_split(np.arange(n), num_shards)):
        with ShardWriter(d / f"texts-{s}.h5", num_rows=len(rows), dim=dim, dtype=dtype,
                         attrs=attrs_for(s, num_shards, **(over or {}).get(s, {})),
                         token_shape=(3, 2) if tokens else None) as w:
            w.write(0, [ids[r] for r in rows], feats[rows], toks[rows] if tokens else None)
    return d, ids, feats, toks


def test_random_access_across_shards(tmp_path: Path) -> None:
    d, ids, feats, toks = make_dir(tmp_path, tokens=True)
    rng = np.random.default_rng(3)
    with FeatureStore.from_dir(d, "texts", expect={"teacher": "toy", "dim": 6, "normalized": True}) as store:
        assert len(store) == 50 and store.dim == 6 and store.ids == ids
        assert "t0007" in store and "nope" not in store
        assert store.attrs["teacher"] == "toy" and "shard" not in store.attrs
        for _ in range(5):
            pick = rng.choice(50, 17, replace=True)  # random order, repeats, across all shards
            got = store.get([ids[i] for i in pick])
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, feats[pick])
            np.testing.assert_array_equal(store.get_tokens([ids[i] for i in pick]), toks[pick])
        contiguous = list(range(10, 30))
        np.testing.assert_array_equal(store.get([ids[i] for i in contiguous]), feats[contiguous])
        assert store.get([]).shape == (0, 6)
        assert store.get(ids[:2], dtype=np.float16).dtype == np.float16
        blocks = list(store.iter_blocks(block_rows=7))
        assert sum(len(b[0]) for b in blocks) == 50
        np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), feats)


def test_float16_store(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path, dtype="float16")
    with FeatureStore.from_dir(d, "texts") as store:
        np.testing.assert_allclose(store.get(ids[::-1]), feats[::-1], rtol=1e-3, atol=1e-3)


def test_unknown_id(tmp_path: Path) -> None:
    d, ids, _, _ = make_dir(tmp_path)
    store = FeatureStore.from_dir(d, "texts")
    with pytest.raises(KeyError, match="'ghost' not in the texts features of teacher 'toy'"):
        store.get([ids[0], "ghost"])


@pytest.mark.parametrize(
    "key, expected, found",
    [("teacher", "other", "toy"), ("manifest_sha256", "c" * 64, "b" * 64), ("dim", 8, 6)],
)
def test_refuses_expect_mismatch(tmp_path: Path, key: str, expected: object, found: object) -> None:
    d, _, _, _ = make_dir(tmp_path)
    with pytest.raises(ShardError) as err:
        FeatureStore.from_dir(d, "texts", expect={key: expected})
    msg = str(err.value)
    assert f"attr {key!r}" in msg and repr(expected) in msg and repr(found) in msg and "texts-0.h5" in msg


def test_refuses_shards_that_disagree(tmp_path: Path) -> None:
    d, _, _, _ = make_dir(tmp_path, over={2: {"teacher": "other"}})
    with pytest.raises(ShardError) as err:
        FeatureStore.from_dir(d, "texts")
    msg = str(err.value)
    assert "texts-2.h5" in msg and "'teacher'" in msg and "'toy'" in msg and "'other'" in msg


def test_refuses_incomplete(tmp_path: Path) -> None:
    d, _, _, _ = make_dir(tmp_path)
    with h5py.File(d / "texts-1.h5", "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(ShardError, match=r"texts-1.h5: incomplete shard: attr 'complete' expected True, found False"):
        FeatureStore.from_dir(d, "texts")


def test_tmp_file_refused_or_ignored(tmp_path: Path) -> None:
    d, _, _, _ = make_dir(tmp_path)
    tmp = d / f"texts-1.h5{TMP_MARKER}999"
    tmp.write_bytes((d / "texts-1.h5").read_bytes())
    # Named explicitly: refused. Next to its complete shard in a directory: ignored.
    with pytest.raises(ShardError, match="temporary file"):
        FeatureStore([d / "texts-0.h5", tmp, d / "texts-2.h5"])
    assert len(FeatureStore.from_dir(d, "texts")) == 50
    (d / "texts-1.h5").unlink()
    with pytest.raises(ShardError, match=r"missing shard\(s\) \[1\] of 3 .*unfinished extractions: \['texts-1.h5.tmp-999'\]"):
        FeatureStore.from_dir(d, "texts")


def test_refuses_missing_shard(tmp_path: Path) -> None:
    d, _, _, _ = make_dir(tmp_path)
    with pytest.raises(ShardError, match=r"missing shard\(s\) \[1\] of 3 .* found \[0, 2\]"):
        FeatureStore([d / "texts-0.h5", d / "texts-2.h5"])


def test_refuses_duplicate_ids(tmp_path: Path) -> None:
    d, _, _, _ = make_dir(tmp_path)
    with h5py.File(d / "texts-2.h5", "a") as f:
        f["ids"][0] = "t0003"
    with pytest.raises(ShardError, match=r"duplicate id 't0003': in .*texts-0.h5 and in .*texts-2.h5"):
        FeatureStore.from_dir(d, "texts")


def test_from_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        FeatureStore.from_dir(tmp_path / "absent", "texts")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no feature shards images-<shard>.h5"):
        FeatureStore.from_dir(tmp_path / "empty", "images")


def _child_read(store: FeatureStore, ids: list[str], queue: "mp.Queue[np.ndarray]") -> None:
    queue.put(store.get(ids))


def test_fork_and_pickle(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path)
    store = FeatureStore.from_dir(d, "texts")
    store.get(ids[:3])  # handles open in the parent before the fork
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(store, ids[40:45], queue))
    proc.start()
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(got, feats[40:45])
    np.testing.assert_array_equal(store.get(ids[5:8]), feats[5:8])
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get(ids[::7]), feats[::7])
    store.close()
    clone.close()


# -- the direct read path (rows as stored bytes, os.preadv) against h5py ------------------------
def _h5py_rows(paths: list[Path], ids: list[str], name: str = "features") -> np.ndarray:
    """The naive reference: every file read whole by h5py, rows picked by id."""
    rows, found = [], {}
    for path in paths:
        with h5py.File(path, "r") as f:
            for id_, row in zip(f["ids"].asstr()[:].tolist(), f[name][:]):
                found[id_] = row
    return np.stack([found[i] for i in ids]) if ids else np.empty((0,))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("dim", [6, 3000])  # 3000 x 4 B: 1 row a chunk; 6: many rows a chunk
def test_direct_rows_are_h5py_rows_bit_for_bit(tmp_path: Path, dtype: str, dim: int) -> None:
    d, ids, _, _ = make_dir(tmp_path, n=61, dim=dim, num_shards=4, dtype=dtype, tokens=True)
    paths = sorted(d.glob("texts-*.h5"))
    rng = np.random.default_rng(7)
    with FeatureStore(paths) as store:
        assert store._tables["features"] is not None  # the direct path, not h5py's
        assert store.dtype == np.dtype(dtype)
        picks = [rng.choice(61, 40, replace=True), np.arange(61)[::-1], np.arange(5, 37), np.array([60, 0, 60, 0]),
                 np.array([3])]
        for pick in picks:  # any order, repeats, runs of consecutive rows, ids across shards
            want = [ids[i] for i in pick]
            got = store.get(want, dtype=None)
            reference = _h5py_rows(paths, want)
            assert got.dtype == reference.dtype == np.dtype(dtype)
            assert np.array_equal(got.view(np.uint8), reference.view(np.uint8))
            assert np.array_equal(store.get(want), reference.astype(np.float32))  # the default float32
            tokens = store.get_tokens(want, dtype=None)
            assert np.array_equal(tokens.view(np.uint8), _h5py_rows(paths, want, "tokens").view(np.uint8))
            by_row = store.get_rows(store.rows(want), dtype=None)  # the collator's way: rows found once
            assert np.array_equal(by_row.view(np.uint8), reference.view(np.uint8))
        assert store.get([], dtype=None).shape == (0, dim)
        assert store.get_rows(np.empty(0, np.int64), dtype=None).shape == (0, dim)


def test_rows_name_the_shard_row_and_bad_rows_are_refused(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path, n=30, num_shards=3)  # 10 rows a shard, ids in shard order
    with FeatureStore.from_dir(d, "texts") as store:
        rows = store.rows([ids[29], ids[0], ids[15]])
        assert rows.dtype == np.int64 and rows.tolist() == [29, 0, 15]  # shard 2 row 9, shard 0 row 0, shard 1 row 5
        np.testing.assert_array_equal(store.get_rows(rows), feats[[29, 0, 15]])
        np.testing.assert_array_equal(store.get_rows([3, 3]), feats[[3, 3]])
        with pytest.raises(KeyError, match="id 'nope' not in the texts features"):
            store.rows([ids[0], "nope"])
        with pytest.raises(IndexError, match=r"row 30 is not a row of the texts features .*30 rows"):
            store.get_rows([0, 30])
        with pytest.raises(IndexError, match="row -1 is not a row"):
            store.get_rows(np.array([-1]))
        with pytest.raises(TypeError, match="expected a 1-d array of integer store rows"):
            store.get_rows(np.array([1.0]))
        with pytest.raises(TypeError, match="expected a 1-d array of integer store rows"):
            store.get_rows(np.array([[1]]))
    with h5py.File(d / "texts-1.h5", "a") as f:  # compressed: read through h5py, by row all the same
        data = f["features"][:]
        del f["features"]
        f.create_dataset("features", data=data, chunks=(2, data.shape[1]), compression="gzip")
    with FeatureStore.from_dir(d, "texts") as store:
        assert store._tables["features"] is None
        np.testing.assert_array_equal(store.get_rows(store.rows([ids[12], ids[29], ids[12]])), feats[[12, 29, 12]])


def test_filtered_or_mixed_shards_are_read_through_h5py(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path, n=30, num_shards=3)
    with h5py.File(d / "texts-1.h5", "a") as f:  # compressed: its rows are not plain bytes in the file
        data = f["features"][:]
        del f["features"]
        f.create_dataset("features", data=data, chunks=(2, data.shape[1]), compression="gzip")
    with FeatureStore.from_dir(d, "texts") as store:
        assert store._tables["features"] is None
        pick = [ids[i] for i in (29, 12, 0, 12, 15)]
        np.testing.assert_array_equal(store.get(pick), feats[[29, 12, 0, 12, 15]])
    d2, ids2, feats2, _ = make_dir(tmp_path / "mixed", n=20, num_shards=2)
    with h5py.File(d2 / "texts-0.h5", "a") as f:  # float16 in one shard, float32 in the other
        data = f["features"][:]
        del f["features"]
        f.create_dataset("features", data=data.astype(np.float16))
    with FeatureStore.from_dir(d2, "texts") as store:
        assert store._tables["features"] is None and store.dtype == np.float32
        got = store.get([ids2[i] for i in (19, 0, 5)], dtype=None)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.concatenate([feats2[:10].astype(np.float16), feats2[10:]])[[19, 0, 5]])


def test_contiguous_and_empty_shards_are_read_directly(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path, n=2, num_shards=3)  # shard 2 holds no row
    with h5py.File(d / "texts-0.h5", "a") as f:  # an unchunked dataset: one block of rows
        data = f["features"][:]
        del f["features"]
        f.create_dataset("features", data=data)
        assert f["features"].chunks is None
    with FeatureStore.from_dir(d, "texts") as store:
        assert store._tables["features"] is not None and len(store) == 2
        np.testing.assert_array_equal(store.get([ids[1], ids[0], ids[1]]), feats[[1, 0, 1]])


def test_truncated_rows_are_an_error(tmp_path: Path) -> None:
    from softref.features.shards import RowLayout, RowTable

    path = tmp_path / "short.bin"
    path.write_bytes(b"\0" * 100)
    layout = RowLayout(str(path), np.dtype(np.float32), (8,), 4, np.array([64], dtype=np.int64))
    table = RowTable([layout], [0, 4])
    fd = os.open(path, os.O_RDONLY)
    try:
        out = np.empty((1, 8), np.float32)
        table.read([fd], table.places([0]), out)  # bytes 64..96 exist
        with pytest.raises(ShardError, match=r"short.bin: rows at byte 96: expected 32 bytes, read fewer; the file is truncated"):
            table.read([fd], table.places([1]), out)
    finally:
        os.close(fd)


def test_contains_many_and_stored_dtype(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path, dtype="float16")
    with FeatureStore.from_dir(d, "texts") as store:
        assert store.contains([ids[3], "ghost", ids[49], ""]).tolist() == [True, False, True, False]
        got = store.get(ids[::-3], dtype=None)
        assert got.dtype == np.float16 == store.dtype
        np.testing.assert_array_equal(got, feats[::-3].astype(np.float16))


def test_get_into_out(tmp_path: Path) -> None:
    d, ids, feats, _ = make_dir(tmp_path, dtype="float16")
    pick = [ids[i] for i in (4, 40, 4, 17)]
    with FeatureStore.from_dir(d, "texts") as store:
        out = np.full((4, 6), 7, dtype=np.float16)
        assert store.get(pick, dtype=None, out=out) is out
        np.testing.assert_array_equal(out, feats[[4, 40, 4, 17]].astype(np.float16))
        wide = np.zeros((4, 6), dtype=np.float32)  # another dtype: read, then cast into out
        assert store.get(pick, out=wide) is wide
        np.testing.assert_array_equal(wide, out.astype(np.float32))
        with pytest.raises(ValueError, match=r"out: expected a C-contiguous float16 array of shape \(4, 6\), found float32"):
            store.get(pick, dtype=None, out=wide)
        with pytest.raises(ValueError, match="not C-contiguous"):
            store.get(pick, dtype=None, out=np.zeros((6, 4), np.float16).T)


def test_long_runs_are_read_in_pieces(tmp_path: Path) -> None:
    # 2,600 consecutive rows: one run, more buffers than one preadv takes (IOV_MAX, 1024).
    d, ids, feats, _ = make_dir(tmp_path, n=2600, dim=2, num_shards=1)
    with FeatureStore.from_dir(d, "texts") as store:
        np.testing.assert_array_equal(store.get(ids), feats)
        pick = list(range(100, 2500)) + [7, 2599, 7]
        np.testing.assert_array_equal(store.get([ids[i] for i in pick]), feats[pick])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_exponent_bit_check_agrees_with_isfinite(dtype) -> None:
    """The read path's finiteness check (exponent bits) says what np.isfinite says, on normal,
    subnormal, largest, NaN and +-inf values, in every float width the shards may hold."""
    from softref.features.store import _all_finite

    info = np.finfo(dtype)
    specials = np.array([0.0, -0.0, info.tiny, info.tiny / 4, info.max, -info.max, 1.0], dtype=dtype)
    rng = np.random.default_rng(0)
    for bad in (None, np.nan, np.inf, -np.inf):
        rows = np.concatenate([rng.standard_normal(60).astype(dtype), specials]).reshape(-1, 1)
        if bad is not None:
            rows[rng.integers(len(rows))] = bad
        assert _all_finite(rows) == bool(np.isfinite(rows).all()), (dtype, bad)
    assert _all_finite(rows[::2]) == bool(np.isfinite(rows[::2]).all())  # a strided view takes np.isfinite


def test_exponent_bit_check_finds_a_bad_value_in_any_block() -> None:
    """The check runs in blocks of _FINITE_BLOCK values: a NaN or inf in the first, a middle or
    the last (partial) block is found, and an all-finite array of several blocks passes."""
    from softref.features.store import _FINITE_BLOCK, _all_finite

    size = 2 * _FINITE_BLOCK + 123
    rows = np.random.default_rng(1).standard_normal(size).astype(np.float16).reshape(-1, 1)
    assert _all_finite(rows)
    for at in (0, _FINITE_BLOCK - 1, _FINITE_BLOCK, size - 1):
        for bad in (np.nan, np.inf, -np.inf):
            broken = rows.copy()
            broken[at] = bad
            assert not _all_finite(broken), (at, bad)


def test_each_row_is_checked_for_nan_the_first_time_this_process_reads_it(tmp_path, monkeypatch) -> None:
    """The NaN/inf check runs on a batch holding a row this process has not read before, and not on a
    batch of rows all checked already (a complete shard never changes): later epochs skip it, until
    close(). A row found non-finite is never marked checked, so asking for it again raises again."""
    from softref.features import store as store_module

    d, ids, feats, _ = make_dir(tmp_path, n=30, dim=4, num_shards=2)
    calls = []
    real = store_module._all_finite
    monkeypatch.setattr(store_module, "_all_finite", lambda rows: calls.append(len(rows)) or real(rows))
    with FeatureStore.from_dir(d, "texts") as store:
        np.testing.assert_array_equal(store.get(ids[:5]), feats[:5])
        np.testing.assert_array_equal(store.get(ids[4::-1]), feats[4::-1])  # the same rows: not checked again
        assert calls == [5]
        np.testing.assert_array_equal(store.get(ids[3:7]), feats[3:7])  # two rows new: the batch is checked
        assert calls == [5, 4]
        store.get(ids[3:7], dtype=np.float16)
        assert calls == [5, 4]
        store.close()  # reopened by path on next use: the rows are checked again
        store.get(ids[3:7])
        assert calls == [5, 4, 4]

    paths = sorted(d.glob("texts-*.h5"))
    with h5py.File(paths[1], "r+") as f:
        f["features"][0, 1] = np.nan
    bad = store_module.shard_paths(d, "texts")[1]
    with FeatureStore.from_dir(d, "texts") as store:
        first = store._row_ids(int(store._offsets[1]), int(store._offsets[1]) + 1)[0]
        for _ in range(2):
            with pytest.raises(ShardError, match=rf"{bad.name}: row 0 \(id '{first}'\) holds non-finite"):
                store.get([ids[0], first])
        np.testing.assert_array_equal(store.get(ids[:1]), feats[:1])
