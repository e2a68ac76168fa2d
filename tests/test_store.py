"""FeatureStore: random access by id across shards, refusals, fork safety."""

from __future__ import annotations

import multiprocessing as mp
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
