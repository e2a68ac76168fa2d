"""Teacher references and the FAISS neighbour index: against naive numpy, refusals, file formats."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from softref.data.manifest import file_sha256, shard_rows, write_manifest
from softref.features import ShardError, ShardWriter
from softref.references import (
    NeighbourIndex,
    References,
    ReferencesError,
    build_neighbour_index,
    build_references,
    read_neighbours,
)
from softref.references.index import NEIGHBOUR_SCHEMA

IMAGE_DIM, TEXT_DIM = 6, 5


def write_shards(directory: Path, modality: str, manifest: Path, ids: list[str], feats: np.ndarray,
                 teacher: str, num_shards: int = 2, dtype: str = "float32") -> list[Path]:
    paths = []
    for shard in range(num_shards):
        start, stop = shard_rows(len(ids), shard, num_shards)
        path = directory / f"{modality}-{shard}.h5"
        attrs = {
            "teacher": teacher, "weights_sha256": f"sha-{teacher}", "preprocess": "none",
            "normalized": False, "manifest_sha256": file_sha256(manifest), "shard": shard,
            "num_shards": num_shards, "modality": modality,
        }
        with ShardWriter(path, num_rows=stop - start, dim=feats.shape[1], dtype=dtype, attrs=attrs) as w:
            w.write(0, ids[start:stop], feats[start:stop])
        paths.append(path)
    return paths


def make_dataset(root: Path, num_train: int = 12, num_test: int = 3, seed: int = 0, dtype: str = "float32",
                 captionless: str | None = None) -> dict:
    """Random manifests and shards; ``captionless`` names a train identity whose captions are dropped."""
    rng = np.random.default_rng(seed)
    images, texts = [], []
    for p in range(num_train + num_test):
        identity = f"p{p:03d}"
        split = "train" if p < num_train else "test"
        for i in range(int(rng.integers(1, 4))):
            image_id = f"{identity}_{i}"
            images.append((image_id, f"imgs/{image_id}.jpg", identity, split))
            if identity == captionless:
                continue
            for t in range(int(rng.integers(1, 3))):
                texts.append((f"{image_id}_{t}", image_id, identity, f"caption {t}", split))
    images_df = pd.DataFrame(images, columns=["image_id", "path", "identity", "split"])
    texts_df = pd.DataFrame(texts, columns=["text_id", "image_id", "identity", "caption", "split"])
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(images_df, root / "images.parquet", "images")
    write_manifest(texts_df, root / "texts.parquet", "texts")
    images_df = images_df.sort_values("image_id").reset_index(drop=True)
    texts_df = texts_df.sort_values("text_id").reset_index(drop=True)
    # Rows of one identity share a direction, so neighbours have a structure; norms vary.
    centre_i = rng.standard_normal((num_train + num_test, IMAGE_DIM))
    centre_t = rng.standard_normal((num_train + num_test, TEXT_DIM))
    code = {f"p{p:03d}": p for p in range(num_train + num_test)}
    img_feats = (centre_i[[code[c] for c in images_df["identity"]]] + 0.5 * rng.standard_normal((len(images_df), IMAGE_DIM)))
    img_feats *= rng.uniform(0.5, 3.0, (len(images_df), 1))
    txt_feats = (centre_t[[code[c] for c in texts_df["identity"]]] + 0.5 * rng.standard_normal((len(texts_df), TEXT_DIM)))
    txt_feats *= rng.uniform(0.5, 3.0, (len(texts_df), 1))
    image_shards = write_shards(root / "img", "images", root / "images.parquet", images_df["image_id"].tolist(),
                                img_feats.astype(np.float32), "imgteacher", dtype=dtype)
    text_shards = write_shards(root / "txt", "texts", root / "texts.parquet", texts_df["text_id"].tolist(),
                               txt_feats.astype(np.float32), "txtteacher", num_shards=3, dtype=dtype)
    return {
        "images": root / "images.parquet", "texts": root / "texts.parquet",
        "image_shards": image_shards, "text_shards": text_shards,
        "images_df": images_df, "texts_df": texts_df,
        "img_feats": img_feats.astype(np.float32), "txt_feats": txt_feats.astype(np.float32),
    }


def naive_references(ds: dict, split: str = "train") -> dict:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    images, texts = ds["images_df"], ds["texts_df"]
    identities = sorted(set(images.loc[images.split == split, "identity"]) & set(texts.loc[texts.split == split, "identity"]))
    out = {"identities": identities, "image": [], "text": [], "image_count": [], "text_count": []}
    for c in identities:
        rows_i = np.flatnonzero((images.identity == c).to_numpy() & (images.split == split).to_numpy())
        rows_t = np.flatnonzero((texts.identity == c).to_numpy() & (texts.split == split).to_numpy())
        out["image"].append(unit(unit(ds["img_feats"][rows_i].astype(np.float64)).mean(0)))
        out["text"].append(unit(unit(ds["txt_feats"][rows_t].astype(np.float64)).mean(0)))
        out["image_count"].append(len(rows_i))
        out["text_count"].append(len(rows_t))
    out["image"], out["text"] = np.stack(out["image"]), np.stack(out["text"])
    out["multimodal"] = np.concatenate([out["image"], out["text"]], 1) / math.sqrt(2)
    return out


def build(ds: dict, out: Path, **kwargs) -> Path:
    return build_references(ds["images"], ds["texts"], ds["image_shards"], ds["text_shards"], out, **kwargs)


@pytest.fixture()
def dataset(tmp_path: Path) -> dict:
    return make_dataset(tmp_path / "ds")


@pytest.fixture()
def references(dataset: dict, tmp_path: Path) -> Path:
    return build(dataset, tmp_path / "refs" / "imgteacher+txtteacher.h5", block_rows=5)


# -- references -----------------------------------------------------------------------------
def test_references_equal_naive_numpy(dataset: dict, references: Path) -> None:
    refs = References.open(references, expect={"image_teacher": "imgteacher", "split": "train"})
    naive = naive_references(dataset)
    assert refs.identities == tuple(naive["identities"]) and len(refs) == 12
    for name in ("image", "text", "multimodal"):
        got = getattr(refs, name)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, naive[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(refs.image_count, naive["image_count"])
    np.testing.assert_array_equal(refs.text_count, naive["text_count"])
    np.testing.assert_allclose(np.linalg.norm(refs.multimodal, axis=1), 1.0, atol=1e-6)
    assert refs.dim == IMAGE_DIM + TEXT_DIM
    assert refs.index("p003") == 3
    with pytest.raises(KeyError, match="'p013' has no reference"):
        refs.index("p013")  # a test identity
    attrs = refs.attrs
    assert attrs["complete"] is True and attrs["text_teacher"] == "txtteacher"
    assert attrs["image_weights_sha256"] == "sha-imgteacher" and attrs["text_weights_sha256"] == "sha-txtteacher"
    assert attrs["images_manifest_sha256"] == file_sha256(dataset["images"])
    assert attrs["texts_manifest_sha256"] == file_sha256(dataset["texts"])
    assert (attrs["image_dim"], attrs["text_dim"], attrs["dim"]) == (IMAGE_DIM, TEXT_DIM, IMAGE_DIM + TEXT_DIM)
    assert attrs["num_identities"] == 12 and attrs["skipped_identities"] == 0
    assert not list(references.parent.glob("*.tmp-*"))
    with h5py.File(references) as f:
        assert sorted(f) == ["identities", "image", "image_count", "multimodal", "text", "text_count"]


def test_block_size_and_split_and_float16(dataset: dict, tmp_path: Path) -> None:
    a = References.open(build(dataset, tmp_path / "a.h5", block_rows=1))
    b = References.open(build(dataset, tmp_path / "b.h5", block_rows=4096))
    np.testing.assert_allclose(a.multimodal, b.multimodal, rtol=1e-6, atol=1e-7)
    test = References.open(build(dataset, tmp_path / "t.h5", split="test"), expect={"split": "test"})
    assert test.identities == ("p012", "p013", "p014")
    np.testing.assert_allclose(test.multimodal, naive_references(dataset, "test")["multimodal"], rtol=1e-5, atol=1e-6)
    half = make_dataset(tmp_path / "half", dtype="float16")
    refs = References.open(build(half, tmp_path / "h.h5"))
    naive = naive_references(half)  # from the float32 features: float16 storage costs ~1e-3
    np.testing.assert_allclose(refs.multimodal, naive["multimodal"], atol=2e-3)


def test_attribute_refusals(references: Path, tmp_path: Path) -> None:
    with pytest.raises(ReferencesError) as err:
        References.open(references, expect={"image_teacher": "unicom"})
    message = str(err.value)
    assert "'image_teacher'" in message and "'unicom'" in message and "'imgteacher'" in message
    assert str(references) in message
    with pytest.raises(ReferencesError, match="attr 'split' expected 'test', found 'train'"):
        References.open(references, expect={"split": "test"})
    with pytest.raises(ReferencesError, match="attr 'dim' expected 12, found 11"):
        References.open(references, expect={"dim": 12})

    incomplete = tmp_path / "incomplete.h5"
    incomplete.write_bytes(references.read_bytes())
    with h5py.File(incomplete, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(ReferencesError, match="incomplete references file: attr 'complete' expected True, found False"):
        References.open(incomplete)
    tmp = tmp_path / "refs.h5.tmp-123"
    tmp.write_bytes(references.read_bytes())
    with pytest.raises(ReferencesError, match="temporary file"):
        References.open(tmp)
    with pytest.raises(FileNotFoundError, match="references file not found"):
        References.open(tmp_path / "absent.h5")


def test_shards_of_another_manifest_are_refused(dataset: dict, tmp_path: Path) -> None:
    other = make_dataset(tmp_path / "other", seed=1)
    with pytest.raises(ShardError, match="attr 'manifest_sha256' expected"):
        build_references(dataset["images"], dataset["texts"], other["image_shards"], dataset["text_shards"],
                         tmp_path / "x.h5")
    with pytest.raises(ShardError, match="attr 'modality' expected 'texts', found 'images'"):
        build_references(dataset["images"], dataset["texts"], dataset["image_shards"], dataset["image_shards"],
                         tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_identity_without_captions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = make_dataset(tmp_path / "ds", captionless="p004")
    with pytest.raises(ReferencesError, match=r"1 with images but no caption: 'p004'.*on_missing='skip'"):
        build(ds, tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()
    with caplog.at_level(logging.WARNING, logger="softref.references"):
        refs = References.open(build(ds, tmp_path / "r.h5", on_missing="skip"))
    assert "p004" in caplog.text
    assert "p004" not in refs.identities and len(refs) == 11 and refs.attrs["skipped_identities"] == 1
    np.testing.assert_allclose(refs.multimodal, naive_references(ds)["multimodal"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ReferencesError, match="no rows of split 'val'"):
        build(ds, tmp_path / "v.h5", split="val")


# -- neighbour index ------------------------------------------------------------------------
def brute_force(multimodal: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = multimodal.astype(np.float64) @ multimodal.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def test_flat_index_equals_brute_force(references: Path, tmp_path: Path) -> None:
    index_path, table_path = build_neighbour_index(
        references, tmp_path / "r.faiss", tmp_path / "r.neighbours.parquet", k=4, use_gpu=False
    )
    refs = References.open(references)
    order, sims = brute_force(refs.multimodal, 4)
    table = read_neighbours(table_path)
    assert len(table) == 12 * 4
    names = np.asarray(refs.identities)
    for row, identity in enumerate(refs.identities):
        mine = table[table.identity == identity]
        assert mine["rank"].tolist() == [1, 2, 3, 4]
        assert mine["neighbour"].tolist() == names[order[row]].tolist()
        np.testing.assert_allclose(mine["score"].to_numpy(), sims[row], rtol=1e-6, atol=1e-6)

    index = NeighbourIndex.open(index_path, references)
    assert len(index) == 12 and index.dim == refs.dim
    scores, ids = index.search(refs.multimodal[:3] * 5.0, 3)  # any norm: rows are normalised
    assert scores.shape == ids.shape == (3, 3) and scores.dtype == np.float32
    assert ids[:, 0].tolist() == list(refs.identities[:3])  # each finds itself first
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)
    assert ids[:, 1:].tolist() == names[order[:3, :2]].tolist()


def test_neighbours_parquet_schema_and_order(references: Path, tmp_path: Path) -> None:
    _, table_path = build_neighbour_index(references, tmp_path / "r.faiss", tmp_path / "n.parquet", k=5,
                                          use_gpu=False)
    table = pq.read_table(table_path)
    assert table.schema.remove_metadata().equals(NEIGHBOUR_SCHEMA)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["index_kind"] == "flat" and meta["k"] == "5" and meta["references_sha256"] == file_sha256(references)
    assert "pandas" not in meta
    df = table.to_pandas()
    assert (df.identity != df.neighbour).all()
    assert df.equals(df.sort_values(["identity", "rank"]).reset_index(drop=True))
    assert (df.groupby("identity")["score"].apply(lambda s: bool((s.diff().dropna() <= 0).all()))).all()
    assert not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_are_valid(kind: str, tmp_path: Path, record_property) -> None:
    ds = make_dataset(tmp_path / "ds", num_train=160, num_test=0, seed=3)
    references = build(ds, tmp_path / "refs.h5")
    k = 5
    _, table_path = build_neighbour_index(references, tmp_path / f"{kind}.faiss", tmp_path / f"{kind}.parquet",
                                          kind=kind, k=k, nlist=4, nprobe=2, m=8, use_gpu="auto")
    refs = References.open(references)
    table = read_neighbours(table_path)
    assert set(table.identity) <= set(refs.identities) and set(table.neighbour) <= set(refs.identities)
    assert (table.identity != table.neighbour).all()
    assert table["rank"].between(1, k).all()
    assert not table.duplicated(["identity", "neighbour"]).any()
    assert np.isfinite(table.score).all() and (table.score <= 1.0 + 1e-5).all()
    order, _ = brute_force(refs.multimodal, k)
    names = np.asarray(refs.identities)
    exact = {(names[i], names[j]) for i in range(len(names)) for j in order[i]}
    found = set(zip(table.identity, table.neighbour))
    recall = len(exact & found) / len(exact)
    record_property(f"{kind}_recall_at_{k}", recall)
    logging.getLogger(__name__).info("%s recall@%d vs flat: %.3f", kind, k, recall)
    assert 0.0 < recall <= 1.0

    index = NeighbourIndex.open(tmp_path / f"{kind}.faiss", references)
    scores, ids = index.search(refs.multimodal[:4], 2)
    assert ids.shape == (4, 2) and all(i is None or i in refs.identities for i in ids.ravel())


def test_index_arguments_and_mismatch(references: Path, tmp_path: Path, dataset: dict) -> None:
    with pytest.raises(ValueError, match=r"k must be in \[1, 11\]"):
        build_neighbour_index(references, tmp_path / "a.faiss", tmp_path / "a.parquet", k=12)
    with pytest.raises(ValueError, match="index kind must be one of"):
        build_neighbour_index(references, tmp_path / "a.faiss", tmp_path / "a.parquet", kind="lsh")
    with pytest.raises(ValueError, match="nlist must be in"):
        build_neighbour_index(references, tmp_path / "a.faiss", tmp_path / "a.parquet", kind="ivf", nlist=50)
    with pytest.raises(ValueError, match="FAISS has no GPU HNSW"):
        build_neighbour_index(references, tmp_path / "a.faiss", tmp_path / "a.parquet", kind="hnsw", use_gpu=True)
    import faiss

    if not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        with pytest.raises(RuntimeError, match="use_gpu=true but FAISS"):
            build_neighbour_index(references, tmp_path / "a.faiss", tmp_path / "a.parquet", use_gpu=True)
    assert not (tmp_path / "a.faiss").exists() and not (tmp_path / "a.parquet").exists()

    index_path, _ = build_neighbour_index(references, tmp_path / "r.faiss", tmp_path / "r.parquet", k=3)
    other_refs = build(make_dataset(tmp_path / "other", seed=5), tmp_path / "other.h5")
    with pytest.raises(ReferencesError, match="vectors differ from the multi-modal references"):
        NeighbourIndex.open(index_path, other_refs)
    fewer = build(make_dataset(tmp_path / "fewer", num_train=9, seed=5), tmp_path / "fewer.h5")
    with pytest.raises(ReferencesError, match="rows expected 9 .* found 12"):
        NeighbourIndex.open(index_path, fewer)
    index = NeighbourIndex.open(index_path, references)
    with pytest.raises(ValueError, match="expected dim 11"):
        index.search(np.ones((2, 4)), 2)
    with pytest.raises(ValueError, match="nprobe given but the index is not an IVF index"):
        NeighbourIndex.open(index_path, references, nprobe=3)
