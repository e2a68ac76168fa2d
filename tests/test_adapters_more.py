"""Tests of the adapters beyond Karpathy and the person sets, on fixtures in the real formats:
ALBEF, CUSA JSON, ECCV Caption, CUB, SOP, In-Shop, iNaturalist, SentEval STS, Reed et al."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from softref.data.adapters import (
    FORMATS,
    AnnotationError,
    MissingImagesError,
    adapter_options,
    load_dataset,
    prepare,
)
from softref.data.imagetext import eccv_data_dir, eccv_summary, load_eccv_annotations
from softref.data.manifest import read_images, read_pairs, read_positives, read_texts

FIXTURES = Path(__file__).parent / "fixtures"
ECCV = {"eccv_dir": "eccv_caption_data"}


def fixture(fmt: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / fmt, tmp_path / fmt))


def rows(df, *cols):
    return [tuple(r) for r in df[list(cols)].astype(object).values.tolist()]


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def edit_lines(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("".join(line + "\n" for line in lines))


def fails(fmt: str, root: Path, tmp_path: Path, error: type[Exception], pattern: str, **kw) -> None:
    """prepare fails with ``error`` matching ``pattern`` and writes nothing."""
    out = tmp_path / "out"
    with pytest.raises(error, match=pattern):
        prepare(fmt, root, out, **kw)
    assert not out.exists()


def test_every_format_is_registered():
    assert set(FORMATS) == {
        "karpathy", "albef", "cusa-json", "eccv", "cuhk-pedes", "icfg-pedes", "rstpreid", "cub",
        "sop", "inshop", "inaturalist", "senteval-sts", "reed-cub", "reed-flowers",
        "image-folders", "sts-pairs",
    }
    assert adapter_options("reed-cub") == {
        "image_dir": "images", "image_ext": ".jpg", "captions_per_image": 10, "val_fraction": 0.1, "val_seed": 0,
        "val_classes": "carved",
    }
    assert adapter_options("reed-flowers")["image_dir"] == "jpg"


# ---------------------------------------------------------------------------------------------
# ALBEF
# ---------------------------------------------------------------------------------------------


def test_albef(tmp_path):
    root = fixture("albef", tmp_path)
    out = tmp_path / "out"
    result = prepare("albef", root, out)
    images = read_images(out / "images.parquet")
    texts = read_texts(out / "texts.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("train2014/COCO_train2014_000000000009.jpg",) * 3 + ("train",),
        ("train2014/COCO_train2014_000000000025.jpg",) * 3 + ("train",),
        ("val2014/COCO_val2014_000000000042.jpg",) * 3 + ("test",),
        ("val2014/COCO_val2014_000000000073.jpg",) * 3 + ("val",),
        ("val2014/COCO_val2014_000000000074.jpg",) * 3 + ("test",),
    ]
    nine = "train2014/COCO_train2014_000000000009.jpg"
    assert rows(texts[texts["image_id"] == nine], "text_id", "caption") == [
        (f"{nine}#0", "A woman wearing a net on her head cutting a cake. "),
        (f"{nine}#1", "A woman cutting a large white sheet cake."),
    ]
    assert result.images_per_split == {"test": 2, "train": 2, "val": 1}
    assert result.texts_per_split == {"test": 5, "train": 3, "val": 2}
    assert result.annotations == root / "coco_test.json"


def test_albef_locations_and_options(tmp_path):
    root = fixture("albef", tmp_path)
    by_file = load_dataset("albef", root, annotations="coco_val.json")
    assert len(by_file.images) == 5
    only_test = load_dataset("albef", root, splits=["test"])
    assert set(only_test.images["split"]) == {"test"}
    with pytest.raises(FileNotFoundError, match=r"flickr30k_train.json"):
        load_dataset("albef", root, prefix="flickr30k")
    with pytest.raises(ValueError, match=r"splits must be a non-empty subset of \['train', 'val', 'test'\]"):
        load_dataset("albef", root, splits=["train", "dev"])
    (root / "data").mkdir()
    for f in root.glob("coco_*.json"):
        f.rename(root / "data" / f.name)
    assert len(load_dataset("albef", root, annotations="data").texts) == 10
    with pytest.raises(FileNotFoundError, match=r"no annotation file in .*coco_train.json"):
        load_dataset("albef", root)
    with pytest.raises(FileNotFoundError, match="annotations not found"):
        load_dataset("albef", root, annotations="nowhere")


def test_albef_ambiguous_prefix(tmp_path):
    root = fixture("albef", tmp_path)
    shutil.copy(root / "coco_test.json", root / "flickr30k_test.json")
    fails("albef", root, tmp_path, AnnotationError, r"files of several datasets .*\['coco', 'flickr30k'\]")


@pytest.mark.parametrize(
    ("fname", "edit", "error", "pattern"),
    [
        ("coco_val.json", None, FileNotFoundError, r"albef: val file not found: .*coco_val.json"),
        ("coco_train.json", lambda d: d[1].pop("image"),
         AnnotationError, r"coco_train.json: record \[1\] has no key 'image'"),
        ("coco_train.json", lambda d: d[2].pop("image_id"),
         AnnotationError, r"coco_train.json: record \[2\] has no key 'image_id'"),
        ("coco_test.json", lambda d: d[1].update(caption="one string"),
         AnnotationError, r"coco_test.json: record \[1\].caption must be a list"),
        ("coco_test.json", lambda d: d.append(dict(d[0])),
         AnnotationError, r"coco_test.json: 1 duplicated image\(s\): 'val2014/COCO_val2014_000000000074.jpg' at record \[0\], record \[2\]"),
        ("coco_train.json", lambda d: d[2].update(image_id="coco_25"),
         AnnotationError, r"image_id 'coco_25' names two images"),
        ("coco_train.json", lambda d: d[2].update(image_id="coco_99"),
         AnnotationError, r"1 image\(s\) carry several image_ids, expected one each: "
                          r"'train2014/COCO_train2014_000000000009.jpg' has 'coco_9', 'coco_99'"),
        ("coco_val.json", lambda d: d[0].update(image="val2014/COCO_val2014_000000000042.jpg"),
         AnnotationError, r"appears in two splits: val .* and test"),
    ],
)
def test_albef_malformed(tmp_path, fname, edit, error, pattern):
    root = fixture("albef", tmp_path)
    if edit is None:
        (root / fname).unlink()
    else:
        edit_json(root / fname, edit)
    fails("albef", root, tmp_path, error, pattern)


# ---------------------------------------------------------------------------------------------
# CUSA JSON
# ---------------------------------------------------------------------------------------------


def test_cusa_json(tmp_path):
    root = fixture("cusa-json", tmp_path)
    result = prepare("cusa-json", root, tmp_path / "out")
    images = read_images(tmp_path / "out" / "images.parquet")
    texts = read_texts(tmp_path / "out" / "texts.parquet")
    assert rows(images, "image_id", "path", "split")[:3] == [
        ("COCO_train2014_000000003264.jpg", "pics/COCO_train2014_000000003264.jpg", "train"),
        ("COCO_train2014_000000003398.jpg", "pics/COCO_train2014_000000003398.jpg", "train"),
        ("COCO_val2014_000000146503.jpg", "pics/COCO_val2014_000000146503.jpg", "test"),
    ]
    assert (images["identity"] == images["image_id"]).all()
    assert rows(texts[texts["image_id"] == "COCO_val2014_000000360181.jpg"], "text_id", "caption") == [
        ("COCO_val2014_000000360181.jpg#0", "a man that is jumping his skateboard on some concrete"),
        ("COCO_val2014_000000360181.jpg#1", "A person on a skateboard doing a trick in mid-air. "),
    ]
    assert result.images_per_split == {"test": 2, "train": 2, "val": 1}
    assert result.texts_per_split == {"test": 4, "train": 3, "val": 1}


def test_cusa_json_in_a_subfolder(tmp_path):
    root = fixture("cusa-json", tmp_path)
    (root / "data").mkdir()
    for name in ("pics", "new_train.json", "new_val.json", "new_test.json"):
        (root / name).rename(root / "data" / name)
    loaded = load_dataset("cusa-json", root, annotations="data")
    assert loaded.images["path"].iloc[0] == "data/pics/COCO_train2014_000000003264.jpg"
    assert len(loaded.missing) == 0


@pytest.mark.parametrize(
    ("fname", "edit", "error", "pattern"),
    [
        ("new_val.json", None, FileNotFoundError, r"cusa-json: val file not found: .*new_val.json"),
        ("new_train.json", lambda d: d[2].pop("image_path"),
         AnnotationError, r"new_train.json: record \[2\] has no key 'image_path'"),
        ("new_test.json", lambda d: d[1].pop("caption"),
         AnnotationError, r"new_test.json: record \[1\] has no key 'caption'"),
        ("new_test.json", lambda d: d[1].update(image_path="./pics/other.jpg"),
         AnnotationError, r"image id 'COCO_val2014_000000146503.jpg' names two images"),
        ("new_val.json", lambda d: d[0].update(image_id="COCO_val2014_000000146503.jpg",
                                               image_path="./pics/COCO_val2014_000000146503.jpg"),
         AnnotationError, r"appears in two splits"),
        ("new_test.json", lambda d: d[0].update(image_path="/abs/x.jpg"),
         AnnotationError, r"record \[0\].image_path must be a path relative to the dataset root"),
        ("new_test.json", lambda d: d[0].update(image_id=1.5),
         AnnotationError, r"record \[0\].image_id must be an integer or a non-empty string"),
    ],
)
def test_cusa_json_malformed(tmp_path, fname, edit, error, pattern):
    root = fixture("cusa-json", tmp_path)
    if edit is None:
        (root / fname).unlink()
    else:
        edit_json(root / fname, edit)
    fails("cusa-json", root, tmp_path, error, pattern)


# ---------------------------------------------------------------------------------------------
# ECCV Caption
# ---------------------------------------------------------------------------------------------


def test_eccv_fixture(tmp_path, caplog):
    root = fixture("eccv", tmp_path)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="softref.data.adapters"):
        result = prepare("eccv", root, out, **ECCV)
    images = read_images(out / "images.parquet")
    texts = read_texts(out / "texts.parquet")
    assert rows(images, "image_id", "path", "split") == [
        ("101", "val2014/COCO_val2014_000000000101.jpg", "test"),
        ("102", "val2014/COCO_val2014_000000000102.jpg", "test"),
        ("103", "val2014/COCO_val2014_000000000103.jpg", "test"),
    ]
    # The train image is left out; so is caption 1007, which ECCV Caption does not evaluate.
    assert texts["text_id"].tolist() == ["1001", "1002", "1003", "1004", "1005", "1006"]
    assert texts.set_index("text_id").loc["1003", "image_id"] == "102"
    positives = read_positives(out / "positives.parquet")
    assert rows(positives, "text_id", "image_id") == [("1003", "101"), ("1005", "101")]
    assert result.positives_path == out / "positives.parquet" and result.num_positives == 2
    assert out / "positives.parquet" in result.paths
    assert len(read_pairs(out / "pairs.parquet")) == 0  # written, empty: eccv has no pairs
    assert "leaving out 1 further test caption(s) (sentids '1007')" in caplog.text
    assert "1 pair(s) name a caption or image outside" in caplog.text and "('9999', '102')" in caplog.text


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: (d["images"][2]["sentences"].pop(1), d["images"][2].update(sentids=[1003])),
         r"1 of ECCV Caption's 6 caption ids are not sentids of the test split: '1004'"),
        (lambda d: d["images"][3].update(cocoid=104),
         r"must hold ECCV Caption's 3 COCO images .*1 are missing \(first '103'\)"),
        (lambda d: d["images"][0].update(split="test"),
         r"1 are not ECCV images \(first '9'\)"),
        (lambda d: (d["images"][1]["sentences"].append(d["images"][2]["sentences"].pop(0)),
                    d["images"][1]["sentences"][-1].update(imgid=1),
                    d["images"][1].pop("sentids"), d["images"][2].pop("sentids")),
         r"1 caption\(s\) belong to another image .*sentid 1003 is on image 101, ECCV Caption says 102"),
    ],
)
def test_eccv_mismatch(tmp_path, edit, pattern):
    root = fixture("eccv", tmp_path)
    edit_json(root / "dataset_coco.json", edit)
    fails("eccv", root, tmp_path, AnnotationError, pattern, **ECCV)


def test_eccv_missing_files(tmp_path):
    root = fixture("eccv", tmp_path)
    (root / "eccv_caption_data" / "eccv_caption_to_image.json").unlink()
    fails("eccv", root, tmp_path, FileNotFoundError, r"eccv_caption_to_image.json", **ECCV)
    (root / "dataset_coco.json").unlink()
    fails("eccv", root, tmp_path, FileNotFoundError, r"looked for \['dataset_coco.json'\]", **ECCV)


def test_eccv_bad_annotation_files(tmp_path):
    root = fixture("eccv", tmp_path)
    data = root / "eccv_caption_data"
    np.save(data / "coco_test_ids.npy", np.array([1001, 1002, 1003, 1004, 1005], dtype=np.int64))
    fails("eccv", root, tmp_path, AnnotationError, r"must list the same caption ids; 1 are in only one of them: 1006", **ECCV)
    np.save(data / "coco_test_ids.npy", np.array([1.5]))
    fails("eccv", root, tmp_path, AnnotationError, r"expected a 1-d integer array", **ECCV)


def test_eccv_installed_package_annotations():
    """The eccv_caption package bundles every file the adapter reads: nothing to download."""
    assert all((eccv_data_dir() / name).is_file() for name in (
        "coco_test_ids.npy", "original_caption_to_image.json", "eccv_image_to_caption.json",
        "eccv_caption_to_image.json",
    ))
    ann = load_eccv_annotations()
    assert eccv_summary(ann) == {
        "caption_ids": 25_000, "images": 5_000, "image_queries": 1_261, "caption_queries": 1_332,
    }


def test_eccv_installed_package_on_a_full_karpathy_test(tmp_path):
    """The real ECCV annotations map onto a Karpathy COCO test whose sentids are COCO caption ids."""
    ann = load_eccv_annotations()
    by_image: dict[int, list[int]] = {}
    for cid in ann.caption_ids:
        by_image.setdefault(ann.caption_image[cid], []).append(cid)
    records = [
        {"filepath": "val2014", "filename": f"COCO_val2014_{cocoid:012d}.jpg", "imgid": i,
         "cocoid": cocoid, "split": "test",
         "sentences": [{"raw": f"caption {c}", "sentid": c} for c in caps]}
        for i, (cocoid, caps) in enumerate(sorted(by_image.items()))
    ]
    root = tmp_path / "coco"
    root.mkdir()
    (root / "dataset_coco.json").write_text(json.dumps({"images": records, "dataset": "coco"}))
    loaded = load_dataset("eccv", root, check_images=False)
    assert len(loaded.images) == 5_000 and len(loaded.texts) == 25_000
    positives = loaded.positives
    assert len(positives) > 20_000
    assert positives["text_id"].isin(loaded.texts["text_id"]).all()
    own = dict(zip(loaded.texts["text_id"], loaded.texts["image_id"]))
    assert not any(own[t] == i for t, i in zip(positives["text_id"], positives["image_id"]))


# ---------------------------------------------------------------------------------------------
# CUB-200-2011
# ---------------------------------------------------------------------------------------------


def test_cub(tmp_path):
    root = fixture("cub", tmp_path)
    out = tmp_path / "out"
    result = prepare("cub", root, out)
    images = read_images(out / "images.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("1", "images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", "1", "train"),
        ("2", "images/001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", "1", "train"),
        ("3", "images/002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", "2", "train"),
        ("4", "images/101.White_Pelican/White_Pelican_0025_97604.jpg", "101", "test"),
        ("5", "images/101.White_Pelican/White_Pelican_0012_97446.jpg", "101", "test"),
        ("6", "images/200.Common_Yellowthroat/Common_Yellowthroat_0055_190967.jpg", "200", "test"),
    ]
    assert len(read_texts(out / "texts.parquet")) == 0  # image-only: empty but valid
    assert result.identities_per_split == {"test": 2, "train": 2}
    assert result.texts_per_split == {}


@pytest.mark.parametrize(
    ("fname", "edit", "error", "pattern"),
    [
        ("image_class_labels.txt", None, FileNotFoundError, r"cub: image_class_labels.txt not found"),
        ("image_class_labels.txt", lambda ls: ls.__setitem__(5, "6 201"),
         AnnotationError, r"image_class_labels.txt: line 6: class_id 201 is outside 1..200"),
        ("images.txt", lambda ls: ls.append("7"),
         AnnotationError, r"images.txt: line 7 has no field 'path'"),
        ("image_class_labels.txt", lambda ls: ls.__setitem__(2, "3 two"),
         AnnotationError, r"line 3: field 'class_id' must be an integer, found 'two'"),
        ("images.txt", lambda ls: ls.__setitem__(1, ls[0]),
         AnnotationError, r"images.txt: 1 duplicated image_id\(s\): '1' at line 1, line 2"),
        ("image_class_labels.txt", lambda ls: ls.pop(),
         AnnotationError, r"1 have no class \(first '6'\)"),
    ],
)
def test_cub_malformed(tmp_path, fname, edit, error, pattern):
    root = fixture("cub", tmp_path)
    if edit is None:
        (root / fname).unlink()
    else:
        edit_lines(root / fname, edit)
    fails("cub", root, tmp_path, error, pattern)


# ---------------------------------------------------------------------------------------------
# Stanford Online Products
# ---------------------------------------------------------------------------------------------


def test_sop(tmp_path):
    root = fixture("sop", tmp_path)
    result = prepare("sop", root, tmp_path / "out")
    images = read_images(tmp_path / "out" / "images.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("1", "bicycle_final/111085122871_0.JPG", "1", "train"),
        ("2", "bicycle_final/111085122871_1.JPG", "1", "train"),
        ("3", "cabinet_final/111102111468_0.JPG", "2", "train"),
        ("4", "bicycle_final/251952414262_0.JPG", "11319", "test"),
        ("5", "bicycle_final/251952414262_2.JPG", "11319", "test"),
        ("6", "chair_final/271137497470_0.JPG", "11320", "test"),
    ]
    assert result.identities_per_split == {"test": 2, "train": 2}
    assert len(load_dataset("sop", root, splits=["test"]).images) == 3


@pytest.mark.parametrize(
    ("fname", "edit", "error", "pattern"),
    [
        ("Ebay_test.txt", None, FileNotFoundError, r"sop: test list not found: .*Ebay_test.txt"),
        ("Ebay_train.txt", lambda ls: ls.pop(0),
         AnnotationError, r"Ebay_train.txt: line 1 must be the header 'image_id class_id super_class_id path'"),
        ("Ebay_test.txt", lambda ls: ls.__setitem__(2, "5 11319 1"),
         AnnotationError, r"Ebay_test.txt: line 3 has no field 'path'"),
        ("Ebay_test.txt", lambda ls: ls.__setitem__(1, "3 11319 1 bicycle_final/251952414262_0.JPG"),
         AnnotationError, r"sop: 1 duplicated image_id\(s\): '3' at Ebay_train.txt line 4, Ebay_test.txt line 2"),
        ("Ebay_test.txt", lambda ls: ls.__setitem__(3, "6 2 3 chair_final/271137497470_0.JPG"),
         AnnotationError, r"sop: 1 classes appear in more than one split"),
    ],
)
def test_sop_malformed(tmp_path, fname, edit, error, pattern):
    root = fixture("sop", tmp_path)
    if edit is None:
        (root / fname).unlink()
    else:
        edit_lines(root / fname, edit)
    fails("sop", root, tmp_path, error, pattern)


def test_sop_unknown_split(tmp_path):
    fails("sop", fixture("sop", tmp_path), tmp_path, ValueError, r"splits must be a non-empty subset of \['train', 'test'\]", splits=["val"])


# ---------------------------------------------------------------------------------------------
# In-Shop Clothes
# ---------------------------------------------------------------------------------------------


def test_inshop(tmp_path):
    root = fixture("inshop", tmp_path)
    result = prepare("inshop", root, tmp_path / "out")
    images = read_images(tmp_path / "out" / "images.parquet")
    assert rows(images, "image_id", "path", "identity", "split")[:2] == [
        ("img/MEN/Denim/id_00000080/01_1_front.jpg", "Img/img/MEN/Denim/id_00000080/01_1_front.jpg",
         "id_00000080", "query"),
        ("img/MEN/Denim/id_00000080/01_2_side.jpg", "Img/img/MEN/Denim/id_00000080/01_2_side.jpg",
         "id_00000080", "gallery"),
    ]
    assert result.images_per_split == {"gallery": 2, "query": 2, "train": 2}
    assert result.identities_per_split == {"gallery": 2, "query": 2, "train": 1}


def test_inshop_list_in_root(tmp_path):
    root = fixture("inshop", tmp_path)
    (root / "Eval" / "list_eval_partition.txt").rename(root / "list_eval_partition.txt")
    (root / "Img" / "img").rename(root / "img")
    loaded = load_dataset("inshop", root)
    assert loaded.images["path"].iloc[0] == "img/MEN/Denim/id_00000080/01_1_front.jpg"
    assert len(loaded.missing) == 0
    shutil.copy(root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt")
    with pytest.raises(AnnotationError, match="several annotation files"):
        load_dataset("inshop", root)


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (None, FileNotFoundError, r"looked for \['list_eval_partition.txt', 'Eval/list_eval_partition.txt'\]"),
        (lambda ls: ls.__setitem__(4, ls[4].replace("query", "test")),
         AnnotationError, r"line 5: evaluation_status is 'test', expected one of \['train', 'query', 'gallery'\]"),
        (lambda ls: ls.__setitem__(0, "7"), AnnotationError, r"line 1 announces 7 images, the file lists 6"),
        (lambda ls: ls.__setitem__(1, "image_name item_id"), AnnotationError, r"line 2 must be the header"),
        (lambda ls: ls.__setitem__(3, "img/WOMEN/Dresses/id_00000002/02_2_side.jpg id_00000002"),
         AnnotationError, r"line 4 has no field 'evaluation_status'"),
        (lambda ls: ls.__setitem__(3, ls[2]), AnnotationError, r"1 duplicated image_name\(s\)"),
        (lambda ls: ls.__setitem__(4, ls[4].replace("id_00000080  query", "id_00000002  query")),
         AnnotationError, r"1 items appear in more than one split.*id_00000002 in train \(line 3\), query/gallery \(line 5\)"),
    ],
)
def test_inshop_malformed(tmp_path, edit, error, pattern):
    root = fixture("inshop", tmp_path)
    path = root / "Eval" / "list_eval_partition.txt"
    if edit is None:
        path.unlink()
    else:
        edit_lines(path, edit)
    fails("inshop", root, tmp_path, error, pattern)


# ---------------------------------------------------------------------------------------------
# iNaturalist 2018
# ---------------------------------------------------------------------------------------------


def test_inaturalist(tmp_path):
    root = fixture("inaturalist", tmp_path)
    result = prepare("inaturalist", root, tmp_path / "out")
    images = read_images(tmp_path / "out" / "images.parquet")
    path = "train_val2018/Aves/3421/1d6943751c8f4dc0d7454320640cf443.jpg"
    assert rows(images[images["image_id"] == path], "path", "identity", "split") == [(path, "3421", "test")]
    assert result.images_per_split == {"test": 3, "train": 3}
    assert result.identities_per_split == {"test": 2, "train": 2}
    assert result.annotations == root / "Inat_dataset_splits" / "Inaturalist_test_set1.txt"


def test_inaturalist_lists_in_root(tmp_path):
    root = fixture("inaturalist", tmp_path)
    for f in (root / "Inat_dataset_splits").iterdir():
        shutil.copy(f, root / f.name)
    with pytest.raises(AnnotationError, match=r"split lists in several folders"):
        load_dataset("inaturalist", root)
    shutil.rmtree(root / "Inat_dataset_splits")
    assert len(load_dataset("inaturalist", root).images) == 6


@pytest.mark.parametrize(
    ("fname", "edit", "error", "pattern"),
    [
        ("Inaturalist_test_set1.txt", None, FileNotFoundError, r"inaturalist: test list not found"),
        ("Inaturalist_test_set1.txt", lambda ls: ls.append("flat.jpg"),
         AnnotationError, r"Inaturalist_test_set1.txt: line 4: expected a path .* found 'flat.jpg'"),
        ("Inaturalist_test_set1.txt", lambda ls: ls.append(ls[0]),
         AnnotationError, r"1 duplicated path\(s\)"),
        ("Inaturalist_test_set1.txt", lambda ls: ls.append("train_val2018/Plantae/7172/ffff.jpg"),
         AnnotationError, r"1 categories appear in more than one split"),
    ],
)
def test_inaturalist_malformed(tmp_path, fname, edit, error, pattern):
    root = fixture("inaturalist", tmp_path)
    path = root / "Inat_dataset_splits" / fname
    if edit is None:
        path.unlink()
    else:
        edit_lines(path, edit)
    fails("inaturalist", root, tmp_path, error, pattern)


# ---------------------------------------------------------------------------------------------
# SentEval STS
# ---------------------------------------------------------------------------------------------


def test_senteval_sts(tmp_path):
    root = fixture("senteval-sts", tmp_path)
    out = tmp_path / "out"
    result = prepare("senteval-sts", root, out)
    pairs = read_pairs(out / "pairs.parquet")
    assert len(pairs) == 77 and (pairs["split"] == "test").all()
    assert result.pairs_per_task["STS16/headlines"] == 2  # an empty gold line is skipped
    assert result.pairs_per_task["STS12/MSRpar"] == 3 and result.pairs_per_task["SICK-R"] == 3
    by_id = pairs.set_index("pair_id")
    assert tuple(by_id.loc["STS12/MSRpar#0000", ["sentence1", "sentence2", "score", "task"]]) == (
        "A man is playing a guitar (STS12 MSRpar).", "A man plays the guitar.", 4.8, "STS12/MSRpar"
    )
    assert "STS16/headlines#0001" not in by_id.index
    assert by_id.loc["STS16/answer-answer#0000", "sentence2"] == "A man plays the guitar."
    assert tuple(by_id.loc["STSBenchmark#0000", ["sentence1", "score"]]) == ("A girl is styling her hair.", 2.5)
    assert by_id.loc["STSBenchmark#0002", "sentence2"] == "Stocks rise in early trading."
    assert by_id.loc["SICK-R#7", "score"] == 3.7
    assert pairs["score"].dtype == np.float64
    assert len(read_images(out / "images.parquet")) == 0 and len(read_texts(out / "texts.parquet")) == 0
    assert result.pairs_path == out / "pairs.parquet"
    assert len(read_positives(out / "positives.parquet")) == 0  # written, empty
    assert result.paths == tuple(out / n for n in (
        "images.parquet", "texts.parquet", "positives.parquet", "pairs.parquet"))


def test_senteval_sts_tasks_option(tmp_path):
    root = fixture("senteval-sts", tmp_path)
    shutil.rmtree(root / "STS" / "STS13-en-test")
    assert set(load_dataset("senteval-sts", root, tasks=["SICK-R", "STS12"]).pairs["task"].str[:5]) == {"SICK-", "STS12"}
    fails("senteval-sts", root, tmp_path, FileNotFoundError, r"STS13 input not found: .*STS.input.FNWN.txt")
    fails("senteval-sts", root, tmp_path, ValueError, r"unknown: 'STS17'", tasks=["STS17"])


@pytest.mark.parametrize(
    ("path", "edit", "pattern"),
    [
        ("STS/STS14-en-test/STS.gs.images.txt", lambda ls: ls.pop(),
         r"STS.gs.images.txt: 2 lines, expected one per pair of STS.input.images.txt \(3 lines\)"),
        ("STS/STS14-en-test/STS.gs.images.txt", lambda ls: ls.__setitem__(1, "high"),
         r"STS.gs.images.txt: line 2: score must be a number, found 'high'"),
        ("STS/STS12-en-test/STS.input.MSRvid.txt", lambda ls: ls.__setitem__(2, "only one sentence"),
         r"STS.input.MSRvid.txt: line 3 has no field 'sentence2'"),
        ("STS/STSBenchmark/sts-test.csv", lambda ls: ls.__setitem__(1, "\t".join(ls[1].split("\t")[:6])),
         r"sts-test.csv: line 2 has no field 'sentence2'"),
        ("SICK/SICK_test_annotated.txt", lambda ls: ls.pop(0), r"SICK_test_annotated.txt: line 1 must be the header"),
        ("SICK/SICK_test_annotated.txt", lambda ls: ls.append(ls[1]),
         r"SICK_test_annotated.txt: 1 duplicated pair_ID\(s\): 'SICK-R#6' at line 2, line 5"),
    ],
)
def test_senteval_sts_malformed(tmp_path, path, edit, pattern):
    root = fixture("senteval-sts", tmp_path)
    edit_lines(root / path, edit)
    fails("senteval-sts", root, tmp_path, AnnotationError, pattern)


# ---------------------------------------------------------------------------------------------
# Reed et al. captions
# ---------------------------------------------------------------------------------------------


def test_reed_cub(tmp_path):
    root = fixture("reed-cub", tmp_path)
    result = prepare("reed-cub", root, tmp_path / "out", val_fraction=0.0)
    images = read_images(tmp_path / "out" / "images.parquet")
    texts = read_texts(tmp_path / "out" / "texts.parquet")
    assert rows(images, "image_id", "path", "identity", "split")[0] == (
        "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34",
        "images/001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
        "001.Black_footed_Albatross", "train",
    )
    assert result.images_per_split == {"test": 2, "train": 3}
    assert result.texts_per_split == {"test": 20, "train": 30}
    assert result.identities_per_split == {"test": 1, "train": 2}
    last = texts.set_index("text_id").loc["200.Common_Yellowthroat/Common_Yellowthroat_0055_190967#9"]
    assert tuple(last[["identity", "split"]]) == ("200.Common_Yellowthroat", "test")
    assert last["caption"] == "this bird common_yellowthroat_0055_190967 has feature number 9 and a distinctive look."


def test_reed_flowers(tmp_path):
    root = fixture("reed-flowers", tmp_path)
    result = prepare("reed-flowers", root, tmp_path / "out", val_fraction=0.0)
    images = read_images(tmp_path / "out" / "images.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("class_00001/image_06734", "jpg/image_06734.jpg", "class_00001", "train"),
        ("class_00001/image_06735", "jpg/image_06735.jpg", "class_00001", "train"),
        ("class_00002/image_05087", "jpg/image_05087.jpg", "class_00002", "train"),
        ("class_00003/image_06618", "jpg/image_06618.jpg", "class_00003", "test"),
        ("class_00003/image_06619", "jpg/image_06619.jpg", "class_00003", "test"),
    ]
    assert result.texts_per_split == {"test": 20, "train": 30}


def test_reed_carves_val_classes_from_trainval(tmp_path):
    """By default a seeded share of the trainval classes becomes val (model selection), never a test class."""
    root = fixture("reed-flowers", tmp_path)
    prepare("reed-flowers", root, tmp_path / "a")
    prepare("reed-flowers", root, tmp_path / "b")
    images = read_images(tmp_path / "a" / "images.parquet")
    split_of = dict(zip(images["identity"], images["split"]))
    assert split_of["class_00003"] == "test"
    assert sorted(split_of[c] for c in ("class_00001", "class_00002")) == ["train", "val"]
    assert (tmp_path / "a" / "images.parquet").read_bytes() == (tmp_path / "b" / "images.parquet").read_bytes()


@pytest.mark.parametrize("fmt", ["reed-cub", "reed-flowers"])
def test_reed_released_val_classes(tmp_path, fmt):
    """val_classes: released takes Reed et al.'s own valclasses.txt, whatever val_fraction says."""
    root = fixture(fmt, tmp_path)
    prepare(fmt, root, tmp_path / "out", val_classes="released", val_fraction=0.0)
    images = read_images(tmp_path / "out" / "images.parquet")
    split_of = dict(zip(images["identity"], images["split"]))
    val = (root / "valclasses.txt").read_text().split()
    train = (root / "trainclasses.txt").read_text().split()
    test = (root / "testclasses.txt").read_text().split()
    assert split_of == {**{c: "val" for c in val}, **{c: "train" for c in train}, **{c: "test" for c in test}}


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda r: (r / "valclasses.txt").unlink(), r"reed-flowers: class list not found: .*valclasses.txt"),
        (lambda r: (r / "trainclasses.txt").write_text("class_00001\nclass_00002\n"),
         r"1 class\(es\) in both trainclasses.txt and valclasses.txt: 'class_00002'"),
        (lambda r: (r / "valclasses.txt").write_text(""),
         r"expected to split trainvalclasses.txt exactly; trainval classes in neither: 'class_00002'"),
        (lambda r: (r / "valclasses.txt").write_text("class_00002\nclass_00003\n"),
         r"listed but not trainval: 'class_00003'"),
    ],
)
def test_reed_released_val_classes_malformed(tmp_path, edit, pattern):
    root = fixture("reed-flowers", tmp_path)
    edit(root)
    error = FileNotFoundError if "not found" in pattern else AnnotationError
    fails("reed-flowers", root, tmp_path, error, pattern, val_classes="released")
    with pytest.raises(ValueError, match="val_classes expected one of \\['carved', 'released'\\], found 'both'"):
        prepare("reed-flowers", fixture("reed-flowers", tmp_path / "again"), tmp_path / "x", val_classes="both")


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (lambda r: (r / "testclasses.txt").unlink(), FileNotFoundError, r"reed-flowers: class list not found: .*testclasses.txt"),
        (lambda r: (r / "testclasses.txt").write_text("class_00003\nclass_00001\n"),
         AnnotationError, r"class 'class_00001' is in both trainvalclasses.txt line 1 and testclasses.txt line 2"),
        (lambda r: (r / "testclasses.txt").write_text("class_00003\nclass_00003\n"),
         AnnotationError, r"testclasses.txt: 1 duplicated class\(s\): 'class_00003' at line 1, line 2"),
        (lambda r: (r / "testclasses.txt").write_text(""),
         AnnotationError, r"1 class folder\(s\) .* are in neither trainvalclasses.txt nor testclasses.txt.*'class_00003'"),
        (lambda r: (r / "testclasses.txt").write_text("class_00003\nclass_00004\n"),
         FileNotFoundError, r"1 listed class\(es\) have no caption folder .*'class_00004'"),
        (lambda r: (r / "text_c10" / "class_00002" / "image_05087.txt").write_text("one\ntwo\n"),
         AnnotationError, r"class_00002/image_05087.txt has 2 caption\(s\), expected 10"),
        (lambda r: shutil.copy(r / "text_c10" / "class_00001" / "image_06734.txt", r / "text_c10" / "class_00003"),
         AnnotationError, r"1 duplicated image path\(s\): 'jpg/image_06734.jpg' at text_c10/class_00001/image_06734.txt, text_c10/class_00003/image_06734.txt"),
    ],
)
def test_reed_malformed(tmp_path, edit, error, pattern):
    root = fixture("reed-flowers", tmp_path)
    edit(root)
    fails("reed-flowers", root, tmp_path, error, pattern)


def test_reed_any_number_of_captions(tmp_path):
    root = fixture("reed-cub", tmp_path)
    (root / "text_c10" / "002.Laysan_Albatross" / "Laysan_Albatross_0002_1027.txt").write_text("one\n\ntwo\n")
    loaded = load_dataset("reed-cub", root, captions_per_image=None)
    assert len(loaded.texts) == 42


# ---------------------------------------------------------------------------------------------
# Shared behaviour: missing images, missing annotations, determinism
# ---------------------------------------------------------------------------------------------

ONE_IMAGE = {
    "albef": ("val2014/COCO_val2014_000000000074.jpg", 3, {}),
    "cusa-json": ("pics/COCO_val2014_000000360181.jpg", 2, {}),
    "eccv": ("val2014/COCO_val2014_000000000102.jpg", 2, ECCV),
    "cub": ("images/101.White_Pelican/White_Pelican_0012_97446.jpg", 0, {}),
    "sop": ("chair_final/271137497470_0.JPG", 0, {}),
    "inshop": ("Img/img/MEN/Denim/id_00000080/01_2_side.jpg", 0, {}),
    "inaturalist": ("train_val2018/Plantae/7172/0a1b2c3d4e5f60718293a4b5c6d7e8f9.jpg", 0, {}),
    "reed-cub": ("images/002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", 10, {}),
    "reed-flowers": ("jpg/image_06618.jpg", 10, {}),
}


@pytest.mark.parametrize("fmt", sorted(ONE_IMAGE))
def test_missing_image_then_skip(tmp_path, fmt):
    path, captions, options = ONE_IMAGE[fmt]
    root = fixture(fmt, tmp_path)
    total = len(load_dataset(fmt, root, **options).images)
    (root / path).unlink()
    out = tmp_path / "out"
    with pytest.raises(MissingImagesError, match=rf"1 of {total} listed images are missing") as info:
        prepare(fmt, root, out, **options)
    assert path in str(info.value)
    assert not out.exists()
    result = prepare(fmt, root, out, skip_missing=True, **options)
    assert (result.num_skipped_images, result.num_skipped_texts) == (1, captions)
    assert result.paths == tuple(out / n for n in (
        "images.parquet", "texts.parquet", "positives.parquet", "pairs.parquet", "skipped.json"))
    positives = read_positives(out / "positives.parquet")
    assert positives["image_id"].isin(read_images(out / "images.parquet")["image_id"]).all()
    assert len(read_images(out / "images.parquet")) == total - 1
    report = json.loads((out / "skipped.json").read_text())
    assert [m["path"] for m in report["missing_images"]] == [path]
    assert report["num_dropped_texts"] == captions


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - {"karpathy", "cuhk-pedes", "icfg-pedes", "rstpreid"}))
def test_empty_root_names_the_missing_file(tmp_path, fmt):
    (tmp_path / "empty").mkdir()
    fails(fmt, tmp_path / "empty", tmp_path, FileNotFoundError, r"not found|no annotation file|no split list")


@pytest.mark.parametrize("fmt", ["albef", "sop", "senteval-sts", "reed-cub"])
def test_prepare_is_byte_identical(tmp_path, fmt):
    root = fixture(fmt, tmp_path)
    prepare(fmt, root, tmp_path / "a")
    prepare(fmt, root, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_unknown_option(tmp_path):
    fails("cub", fixture("cub", tmp_path), tmp_path, ValueError,
          r"format 'cub' has no option\(s\) \['splits'\]; its options: \['image_dir'\]", splits=["test"])


def test_karpathy_identity_pattern_groups_images(tmp_path):
    """The demo's renderings of one synthetic identity share it; a name the pattern misses is an error."""
    from softref.data.synthetic import synthesize_demo

    demo = synthesize_demo(tmp_path / "demo", num_identities=4, images_per_identity=2, captions_per_image=1,
                           image_size=16, person_size=(16, 16), sts_pairs=0)
    prepare("karpathy", demo["coco_root"], tmp_path / "out", annotations=str(demo["coco_annotations"]),
            identity_pattern=r"^id(\d+)_")
    images = read_images(tmp_path / "out" / "images.parquet")
    texts = read_texts(tmp_path / "out" / "texts.parquet")
    assert images.groupby("identity").size().tolist() == [2, 2, 2, 2]
    assert dict(zip(texts["image_id"], texts["identity"])) == dict(zip(images["image_id"], images["identity"]))
    with pytest.raises(AnnotationError, match=r"image '\d+' \(images/id\d+_\d.png\): identity_pattern .* does not match"):
        prepare("karpathy", demo["coco_root"], tmp_path / "bad", annotations=str(demo["coco_annotations"]),
                identity_pattern=r"^x(\d+)")
