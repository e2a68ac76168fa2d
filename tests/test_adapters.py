"""Tests for softref.data.adapters on fixtures written in the real annotation formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from softref.data.adapters import (
    FORMATS,
    AnnotationError,
    MissingImagesError,
    prepare,
)
from softref.data.manifest import (
    PAIR_COLUMNS,
    POSITIVE_COLUMNS,
    read_images,
    read_pairs,
    read_positives,
    read_texts,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def coco(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURES / "karpathy" / "coco", tmp_path / "coco"))


@pytest.fixture
def flickr(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURES / "karpathy" / "flickr30k", tmp_path / "flickr30k"))


@pytest.fixture
def cuhk(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURES / "cuhk-pedes", tmp_path / "cuhk-pedes"))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rows(df, *cols):
    return [tuple(r) for r in df[list(cols)].astype(object).values.tolist()]


# ---------------------------------------------------------------------------------------------
# Karpathy
# ---------------------------------------------------------------------------------------------


def test_karpathy_coco(coco, tmp_path):
    out = tmp_path / "out"
    result = prepare("karpathy", coco, out)
    images = read_images(out / "images.parquet")
    texts = read_texts(out / "texts.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("42", "val2014/COCO_val2014_000000000042.jpg", "42", "train"),  # restval -> train
        ("73", "val2014/COCO_val2014_000000000073.jpg", "73", "val"),
        ("74", "val2014/COCO_val2014_000000000074.jpg", "74", "test"),
        ("9", "train2014/COCO_train2014_000000000009.jpg", "9", "train"),
    ]
    assert texts["text_id"].tolist() == ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert rows(texts, "text_id", "image_id", "identity", "caption", "split")[2] == (
        "2", "42", "42", "A dog sitting on a bench.", "train"
    )
    assert result.images_per_split == {"test": 1, "train": 2, "val": 1}
    assert result.texts_per_split == {"test": 2, "train": 5, "val": 1}
    assert result.identities_per_split == {"test": 1, "train": 2, "val": 1}
    assert result.annotations == coco / "dataset_coco.json"
    assert result.paths == (
        out / "images.parquet", out / "texts.parquet", out / "positives.parquet", out / "pairs.parquet"
    )
    assert result.skipped_path is None and not (out / "skipped.json").exists()
    # Written for every format: empty, with their columns, when the format has none.
    assert result.positives_path == out / "positives.parquet" and result.num_positives == 0
    assert result.pairs_path == out / "pairs.parquet" and result.pairs_per_task == {}
    assert list(read_positives(result.positives_path).columns) == list(POSITIVE_COLUMNS)
    assert len(read_positives(result.positives_path)) == 0
    pairs = read_pairs(result.pairs_path)
    assert list(pairs.columns) == list(PAIR_COLUMNS) and len(pairs) == 0
    assert pairs["score"].dtype == "float64"


def test_karpathy_flickr_uses_imgid_and_image_dir(flickr, tmp_path):
    prepare("karpathy", flickr, tmp_path / "out")
    images = read_images(tmp_path / "out" / "images.parquet")
    assert rows(images, "image_id", "path", "split") == [
        ("0", "images/1000092795.jpg", "train"),
        ("1", "images/10002456.jpg", "train"),
        ("2", "images/1000268201.jpg", "val"),
        ("3", "images/1000344755.jpg", "test"),
    ]
    (flickr / "images").rename(flickr / "flickr30k-images")
    with pytest.raises(MissingImagesError):
        prepare("karpathy", flickr, tmp_path / "out2")
    prepare("karpathy", flickr, tmp_path / "out2", image_dir="flickr30k-images")
    paths = read_images(tmp_path / "out2" / "images.parquet")["path"].tolist()
    assert paths[0] == "flickr30k-images/1000092795.jpg"


def test_prepare_is_byte_identical(coco, tmp_path):
    prepare("karpathy", coco, tmp_path / "a")
    prepare("karpathy", coco, tmp_path / "b")
    for name in ("images.parquet", "texts.parquet", "positives.parquet", "pairs.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_karpathy_explicit_annotations(coco, tmp_path):
    (coco / "dataset_coco.json").rename(coco / "karpathy_coco.json")
    with pytest.raises(FileNotFoundError, match=r"dataset_coco.json.*dataset_flickr30k.json"):
        prepare("karpathy", coco, tmp_path / "out")
    result = prepare("karpathy", coco, tmp_path / "out", annotations="karpathy_coco.json")
    assert sum(result.images_per_split.values()) == 4
    with pytest.raises(FileNotFoundError, match="nope.json"):
        prepare("karpathy", coco, tmp_path / "out", annotations="nope.json")


def test_karpathy_two_default_files_is_ambiguous(coco, tmp_path):
    shutil.copy(coco / "dataset_coco.json", coco / "dataset_f8k.json")
    with pytest.raises(AnnotationError, match="several annotation files"):
        prepare("karpathy", coco, tmp_path / "out")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d["images"][2].pop("sentences"), r"dataset_coco.json: images\[2\] has no key 'sentences'"),
        (lambda d: d["images"][1].pop("filename"), r"images\[1\] has no key 'filename'"),
        (lambda d: d["images"][3]["sentences"][1].pop("raw"),
         r"images\[3\].sentences\[1\] has no key 'raw'"),
        (lambda d: d["images"][0].update(split="dev"), r"images\[0\].split is 'dev', expected one of"),
        (lambda d: d["images"][1].update(cocoid=9), r"1 duplicated image id\(s\): '9' at images\[0\], images\[1\]"),
        (lambda d: (d["images"][3]["sentences"][0].update(sentid=1),
                    d["images"][3].update(sentids=[1, 7])),
         r"duplicated sentid\(s\): '1' at images\[0\].sentences\[1\], images\[3\].sentences\[0\]"),
        (lambda d: d["images"][0].update(imgid=1.5), r"images\[0\].imgid must be an integer"),
        (lambda d: d["images"][0].update(sentids=[0]), r"images\[0\].sentids is \[0\], expected"),
        (lambda d: d.pop("images"), r"the top level has no key 'images'"),
    ],
)
def test_karpathy_malformed(coco, tmp_path, edit, pattern):
    edit_json(coco / "dataset_coco.json", edit)
    out = tmp_path / "out"
    with pytest.raises(AnnotationError, match=pattern):
        prepare("karpathy", coco, out)
    assert not out.exists()


def test_invalid_json(coco, tmp_path):
    (coco / "dataset_coco.json").write_text('{"images": [')
    with pytest.raises(AnnotationError, match=r"dataset_coco.json: not valid JSON at line 1"):
        prepare("karpathy", coco, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Person JSON lists
# ---------------------------------------------------------------------------------------------


def test_cuhk_pedes(cuhk, tmp_path):
    out = tmp_path / "out"
    result = prepare("cuhk-pedes", cuhk, out)
    images = read_images(out / "images.parquet")
    texts = read_texts(out / "texts.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("CUHK01/0107002.png", "imgs/CUHK01/0107002.png", "1", "train"),
        ("CUHK01/0107004.png", "imgs/CUHK01/0107004.png", "1", "train"),
        ("Market/0001_c1s1_001051_00.jpg", "imgs/Market/0001_c1s1_001051_00.jpg", "3", "val"),
        ("cam_a/000_45.bmp", "imgs/cam_a/000_45.bmp", "2", "train"),
        ("test_query/p10376_s14337.jpg", "imgs/test_query/p10376_s14337.jpg", "4", "test"),
        ("test_query/p10376_s14338.jpg", "imgs/test_query/p10376_s14338.jpg", "4", "test"),
    ]
    assert len(texts) == 13
    assert rows(texts[texts["image_id"] == "cam_a/000_45.bmp"], "text_id", "identity", "caption") == [
        ("cam_a/000_45.bmp#0", "2", "A man in a blue jacket and jeans."),
        ("cam_a/000_45.bmp#1", "2", "The man wears a blue coat."),
        ("cam_a/000_45.bmp#2", "2", "He has short hair and dark shoes."),
    ]
    assert result.images_per_split == {"test": 2, "train": 3, "val": 1}
    assert result.texts_per_split == {"test": 4, "train": 7, "val": 2}
    assert result.identities_per_split == {"test": 1, "train": 2, "val": 1}


@pytest.mark.parametrize(
    ("fmt", "filename", "field"),
    [("icfg-pedes", "ICFG-PEDES.json", "file_path"), ("rstpreid", "data_captions.json", "img_path")],
)
def test_other_person_formats(tmp_path, fmt, filename, field):
    root = tmp_path / fmt
    records = [
        {"id": 7, field: "train/0007/a.jpg", "captions": ["one", "two"], "split": "train"},
        {"id": 8, field: "test/0008/b.jpg", "captions": ["three"], "split": "test"},
    ]
    (root / "imgs" / "train" / "0007").mkdir(parents=True)
    (root / "imgs" / "test" / "0008").mkdir(parents=True)
    for rec in records:
        (root / "imgs" / rec[field]).write_bytes(b"x")
    (root / filename).write_text(json.dumps(records))
    result = prepare(fmt, root, tmp_path / "out")
    images = read_images(tmp_path / "out" / "images.parquet")
    assert images["path"].tolist() == ["imgs/test/0008/b.jpg", "imgs/train/0007/a.jpg"]
    assert result.texts_per_split == {"test": 1, "train": 2}


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d[1].pop("file_path"), r"reid_raw.json: record \[1\] has no key 'file_path'"),
        (lambda d: d[4].pop("captions"), r"record \[4\] has no key 'captions'"),
        (lambda d: d[3].update(split="trainval"), r"record \[3\].split is 'trainval'"),
        (lambda d: d[1].update(file_path="CUHK01/0107002.png"),
         r"1 duplicated file_path\(s\): 'CUHK01/0107002.png' at record \[0\], record \[1\]"),
        (lambda d: d[3].update(id=1), r"identities appear in more than one split.*id 1 in train \(record \[0\]\), val \(record \[3\]\)"),
        (lambda d: d[0].update(captions="a string"), r"record \[0\].captions must be a list"),
        (lambda d: d[0]["captions"].append(3), r"record \[0\].captions\[2\] must be a string"),
    ],
)
def test_cuhk_malformed(cuhk, tmp_path, edit, pattern):
    edit_json(cuhk / "reid_raw.json", edit)
    out = tmp_path / "out"
    with pytest.raises(AnnotationError, match=pattern):
        prepare("cuhk-pedes", cuhk, out)
    assert not out.exists()


def test_cuhk_missing_annotation(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"reid_raw.json"):
        prepare("cuhk-pedes", tmp_path / "empty", tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Missing images
# ---------------------------------------------------------------------------------------------


def test_missing_images_error(cuhk, tmp_path):
    (cuhk / "imgs" / "CUHK01" / "0107004.png").unlink()
    shutil.rmtree(cuhk / "imgs" / "test_query")
    out = tmp_path / "out"
    with pytest.raises(MissingImagesError, match=r"3 of 6 listed images are missing") as info:
        prepare("cuhk-pedes", cuhk, out)
    message = str(info.value)
    assert "imgs/CUHK01/0107004.png" in message and "imgs/test_query/p10376_s14337.jpg" in message
    assert "skip_missing" in message
    assert not out.exists()
    # Without the check the manifests are written as annotated.
    result = prepare("cuhk-pedes", cuhk, out, check_images=False)
    assert sum(result.images_per_split.values()) == 6


def test_skip_missing_writes_report(cuhk, tmp_path):
    (cuhk / "imgs" / "CUHK01" / "0107004.png").unlink()
    out = tmp_path / "out"
    result = prepare("cuhk-pedes", cuhk, out, skip_missing=True)
    images = read_images(out / "images.parquet")
    texts = read_texts(out / "texts.parquet")
    assert "CUHK01/0107004.png" not in set(images["image_id"])
    assert not texts["text_id"].str.startswith("CUHK01/0107004.png#").any()
    assert len(images) == 5 and len(texts) == 11
    assert (result.num_skipped_images, result.num_skipped_texts) == (1, 2)
    report = json.loads((out / "skipped.json").read_text())
    assert report["missing_images"] == [
        {"image_id": "CUHK01/0107004.png", "path": "imgs/CUHK01/0107004.png"}
    ]
    assert report["num_missing_images"] == 1 and report["num_dropped_texts"] == 2
    assert report["dropped_text_ids"] == ["CUHK01/0107004.png#0", "CUHK01/0107004.png#1"]
    assert result.skipped_path == out / "skipped.json"
    # A later run without skipping removes the stale report.
    (cuhk / "imgs" / "CUHK01" / "0107004.png").write_bytes(b"x")
    prepare("cuhk-pedes", cuhk, out)
    assert not (out / "skipped.json").exists()
    assert len(read_images(out / "images.parquet")) == 6


def test_skip_missing_needs_check(cuhk, tmp_path):
    with pytest.raises(ValueError, match="skip_missing=True needs check_images=True"):
        prepare("cuhk-pedes", cuhk, tmp_path / "out", skip_missing=True, check_images=False)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_names():
    assert {"karpathy", "cuhk-pedes", "icfg-pedes", "rstpreid"} <= set(FORMATS)


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset format 'foo'; available formats: .*cuhk-pedes.*karpathy"):
        prepare("foo", tmp_path, tmp_path / "out")


def test_unknown_option_and_missing_root(coco, tmp_path):
    with pytest.raises(ValueError, match=r"format 'cuhk-pedes' has no option\(s\) \['image_dir'\]"):
        prepare("cuhk-pedes", coco, tmp_path / "out", image_dir="x")
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        prepare("karpathy", tmp_path / "nowhere", tmp_path / "out")


def _icfg(tmp_path, n_train=20, n_test=3):
    root = tmp_path / "icfg"
    records = [
        {"id": i, "file_path": f"{split}/{i:04d}/{k}.jpg", "captions": [f"caption {i} {k}"], "split": split}
        for split, ids in (("train", range(n_train)), ("test", range(100, 100 + n_test)))
        for i in ids
        for k in range(2)
    ]
    for rec in records:
        path = root / "imgs" / rec["file_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (root / "ICFG-PEDES.json").write_text(json.dumps(records))
    return root


def test_icfg_pedes_carves_val_from_train_identities(tmp_path):
    root = _icfg(tmp_path)
    first = prepare("icfg-pedes", root, tmp_path / "a")
    assert first.identities_per_split == {"test": 3, "train": 18, "val": 2}
    images = read_images(tmp_path / "a" / "images.parquet")
    val_ids = set(images[images["split"] == "val"]["identity"])
    assert val_ids and all(int(i) < 100 for i in val_ids)  # never taken from test
    texts = pd.read_parquet(tmp_path / "a" / "texts.parquet")
    assert set(texts[texts["split"] == "val"]["identity"]) == val_ids
    # Deterministic: the same seed gives byte-identical manifests; another seed another choice.
    prepare("icfg-pedes", root, tmp_path / "b")
    assert (tmp_path / "a" / "images.parquet").read_bytes() == (tmp_path / "b" / "images.parquet").read_bytes()
    other = prepare("icfg-pedes", root, tmp_path / "c", val_fraction=0.25, val_seed=1)
    assert other.identities_per_split["val"] == 5
    kept = prepare("icfg-pedes", root, tmp_path / "d", val_fraction=0.0)
    assert "val" not in kept.identities_per_split
    with pytest.raises(ValueError, match="val_fraction"):
        prepare("rstpreid", root, tmp_path / "e", val_fraction=0.1)
