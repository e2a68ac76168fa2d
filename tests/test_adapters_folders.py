"""Tests of the generic adapters ``image-folders`` and ``sts-pairs``: tiny trees written here, the
synthetic demo's own output, their errors, and ``softref check-dataset`` on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from softref.cli import main
from softref.data.adapters import (
    FORMATS,
    AnnotationError,
    adapter_options,
    load_dataset,
    prepare,
)
from softref.data.expected import DEFAULT_DATASET, EXPECTED, check_dataset, format_check
from softref.data.manifest import (
    PAIR_COLUMNS,
    POSITIVE_COLUMNS,
    read_images,
    read_pairs,
    read_positives,
    read_texts,
)
from softref.data.synthetic import synthesize_demo

FOUR = ("images.parquet", "texts.parquet", "positives.parquet", "pairs.parquet")


def rows(df, *cols):
    return [tuple(r) for r in df[list(cols)].astype(object).values.tolist()]


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fails(fmt: str, root: Path, tmp_path: Path, error: type[Exception], pattern: str, **kw) -> None:
    """prepare fails with ``error`` matching ``pattern`` and writes nothing."""
    out = tmp_path / "out"
    with pytest.raises(error, match=pattern):
        prepare(fmt, root, out, **kw)
    assert not out.exists()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    return synthesize_demo(
        tmp_path_factory.mktemp("demo"), num_identities=6, images_per_identity=2,
        captions_per_image=1, image_size=16, person_size=(16, 16), sts_pairs=8,
    )


def test_registered_with_options():
    assert {"image-folders", "sts-pairs"} <= set(FORMATS)
    assert adapter_options("image-folders") == {"splits": None}
    assert adapter_options("sts-pairs") == {"task": "sts-pairs"}


# ---------------------------------------------------------------------------------------------
# image-folders
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> Path:
    root = tmp_path / "folders"
    for rel in ("train/cat/a.png", "train/cat/b.JPG", "train/dog/c.jpeg", "query/owl/d.BMP",
                "gallery/owl/e.jpg", "gallery/owl/f.Png"):
        touch(root / rel)
    # Hidden entries are ignored at every level.
    touch(root / ".DS_Store")
    touch(root / "train" / ".hidden" / "notes.txt")
    touch(root / "train" / "cat" / ".thumbs.db")
    return root


def test_image_folders(folders, tmp_path):
    out = tmp_path / "out"
    result = prepare("image-folders", folders, out)
    images = read_images(out / "images.parquet")
    assert rows(images, "image_id", "path", "identity", "split") == [
        ("gallery/owl/e.jpg", "gallery/owl/e.jpg", "owl", "gallery"),
        ("gallery/owl/f.Png", "gallery/owl/f.Png", "owl", "gallery"),
        ("query/owl/d.BMP", "query/owl/d.BMP", "owl", "query"),
        ("train/cat/a.png", "train/cat/a.png", "cat", "train"),
        ("train/cat/b.JPG", "train/cat/b.JPG", "cat", "train"),
        ("train/dog/c.jpeg", "train/dog/c.jpeg", "dog", "train"),
    ]
    assert len(read_texts(out / "texts.parquet")) == 0
    assert len(read_positives(out / "positives.parquet")) == 0
    assert len(read_pairs(out / "pairs.parquet")) == 0
    assert result.paths == tuple(out / n for n in FOUR)
    assert result.images_per_split == {"gallery": 2, "query": 1, "train": 3}
    assert result.identities_per_split == {"gallery": 1, "query": 1, "train": 2}
    assert result.texts_per_split == {} and result.pairs_per_task == {}
    assert result.annotations == folders


def test_image_folders_options(folders, tmp_path):
    only = load_dataset("image-folders", folders, splits=["query", "gallery"])
    assert set(only.images["split"]) == {"query", "gallery"}
    with pytest.raises(FileNotFoundError, match=r"split folder\(s\) \['test'\] not found .*present: \['gallery', 'query', 'train'\]"):
        load_dataset("image-folders", folders, splits=["test"])
    with pytest.raises(ValueError, match=r"splits must be a non-empty subset of \['train', 'val', 'test', 'query', 'gallery'\]"):
        load_dataset("image-folders", folders, splits=["dev"])
    # The split folders in a subfolder: paths keep it, image ids do not.
    holder = tmp_path / "holder"
    holder.mkdir()
    folders.rename(holder / "data")
    loaded = load_dataset("image-folders", holder, annotations="data")
    assert ("train/cat/a.png", "data/train/cat/a.png") in rows(loaded.images, "image_id", "path")
    assert len(loaded.missing) == 0
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_dataset("image-folders", holder, annotations="nowhere")


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (lambda r: touch(r / "README.md"), AnnotationError,
         r"unexpected file .*README.md: .* must hold only split folders named among \['train'"),
        (lambda r: touch(r / "dev" / "cat" / "x.png"), AnnotationError,
         r"unexpected folder .*/dev: split folders must be named one of \['train', 'val', 'test', "
         r"'query', 'gallery'\], found 'dev'"),
        (lambda r: touch(r / "train" / "cat" / "notes.txt"), AnnotationError,
         r"unexpected file .*train/cat/notes.txt: not an image, expected one of the extensions "
         r"\['.png', '.jpg', '.jpeg', '.bmp'\]"),
        (lambda r: touch(r / "train" / "cat" / "sub" / "y.png"), AnnotationError,
         r"unexpected folder .*train/cat/sub: a class folder must hold only image files"),
        (lambda r: touch(r / "train" / "loose.png"), AnnotationError,
         r"unexpected file .*train/loose.png: a split folder must hold only class folders"),
        (lambda r: (r / "train" / "empty").mkdir(), AnnotationError,
         r"class folder .*train/empty holds no image"),
        (lambda r: touch(r / "train" / "hollow" / ".keep"), AnnotationError,
         r"class folder .*train/hollow holds no image"),
        (lambda r: (r / "val").mkdir(), AnnotationError, r"split folder .*/val holds no class folder"),
    ],
)
def test_image_folders_malformed(folders, tmp_path, edit, error, pattern):
    edit(folders)
    fails("image-folders", folders, tmp_path, error, pattern)


def test_image_folders_no_split_folder(tmp_path):
    root = tmp_path / "root"
    touch(root / ".git" / "config")
    fails("image-folders", root, tmp_path, FileNotFoundError,
          r"image-folders: split folders not found in .*root: expected at least one folder named "
          r"among \['train', 'val', 'test', 'query', 'gallery'\]")


def test_image_folders_on_the_demo(demo, tmp_path):
    out = tmp_path / "out"
    result = prepare("image-folders", demo["retrieval_root"], out)
    images = read_images(out / "images.parquet")
    assert len(images) == 12
    assert sum(result.identities_per_split.values()) == 6
    assert set(result.images_per_split) == {"train", "val", "test"}
    # identities are the zero-padded identity folders; each keeps its 2 images in one split.
    assert images.groupby("identity")["split"].nunique().eq(1).all()
    assert images.groupby("identity").size().eq(2).all()
    assert images["identity"].str.fullmatch(r"\d{4}").all()
    assert (images["image_id"] == images["split"] + "/" + images["identity"] + "/"
            + images["path"].str.rsplit("/", n=1).str[1]).all()
    assert sorted(p.name for p in out.iterdir()) == sorted(FOUR)
    prepare("image-folders", demo["retrieval_root"], tmp_path / "again")
    for name in FOUR:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


# ---------------------------------------------------------------------------------------------
# sts-pairs
# ---------------------------------------------------------------------------------------------


def write_tsv(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def tsv(tmp_path) -> Path:
    root = tmp_path / "sts"
    write_tsv(
        root / "pairs.tsv",
        "sentence1\tsentence2\tscore",
        "A man plays a guitar.\tA man is playing the guitar.\t4.8",
        'She said "hi".\tA woman greets someone.\t3',
        "",
        "A cat sleeps.\tThe stock market fell.\t0.0",
    )
    return root


def test_sts_pairs(tsv, tmp_path):
    out = tmp_path / "out"
    result = prepare("sts-pairs", tsv, out)
    pairs = read_pairs(out / "pairs.parquet")
    assert list(pairs.columns) == list(PAIR_COLUMNS)
    assert rows(pairs, *PAIR_COLUMNS) == [
        ("sts-pairs#0000", "A man plays a guitar.", "A man is playing the guitar.", 4.8, "sts-pairs", "test"),
        ("sts-pairs#0001", 'She said "hi".', "A woman greets someone.", 3.0, "sts-pairs", "test"),
        # The blank line is skipped but still counted: ids follow the file's lines.
        ("sts-pairs#0003", "A cat sleeps.", "The stock market fell.", 0.0, "sts-pairs", "test"),
    ]
    assert pairs["score"].dtype == np.float64
    assert len(read_images(out / "images.parquet")) == 0 and len(read_texts(out / "texts.parquet")) == 0
    positives = read_positives(out / "positives.parquet")
    assert list(positives.columns) == list(POSITIVE_COLUMNS) and len(positives) == 0
    assert result.pairs_per_task == {"sts-pairs": 3}
    assert result.paths == tuple(out / n for n in FOUR)
    assert result.annotations == tsv / "pairs.tsv"
    renamed = load_dataset("sts-pairs", tsv, task="demo-sts")
    assert renamed.pairs["pair_id"].iloc[0] == "demo-sts#0000"
    assert set(renamed.pairs["task"]) == {"demo-sts"}
    with pytest.raises(ValueError, match="option task must be a non-empty string"):
        load_dataset("sts-pairs", tsv, task="")


def test_sts_pairs_task_and_split_columns(tmp_path):
    root = tmp_path / "sts"
    write_tsv(
        root / "scored.tsv",
        "\ufeffid\tsplit\tsentence1\tsentence2\tscore\ttask",  # BOM, extra and reordered columns
        "7\tval\tOne.\tTwo.\t1.5\tA",
        "8\ttest\tThree.\tFour.\t-2\tB",
    )
    pairs = load_dataset("sts-pairs", root, annotations="scored.tsv", task="unused").pairs
    assert rows(pairs, *PAIR_COLUMNS) == [
        ("A#0000", "One.", "Two.", 1.5, "A", "val"),
        ("B#0001", "Three.", "Four.", -2.0, "B", "test"),
    ]


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        (("sentence1\tsentence2", "a\tb"),
         r"pairs.tsv: line 1: the header has no column 'score'; expected a tab-separated header "
         r"with at least \['sentence1', 'sentence2', 'score'\] .* found \['sentence1', 'sentence2'\]"),
        (("sentence1 sentence2 score", "a b 1"), r"pairs.tsv: line 1: the header has no column 'sentence1'"),
        (("sentence1\tsentence2\tscore\tscore",), r"pairs.tsv: line 1: the header repeats column\(s\) \['score'\]"),
        (("sentence1\tsentence2\tscore", "a\tb\t1", "c\td\thigh"),
         r"pairs.tsv: line 3: score must be a number, found 'high'"),
        (("sentence1\tsentence2\tscore", "a\tb\tnan"), r"pairs.tsv: line 2: score must be finite, found 'nan'"),
        (("sentence1\tsentence2\tscore", "a\tb\t1", "a\tb"),
         r"pairs.tsv: line 3: expected 3 tab-separated fields \(sentence1, sentence2, score\), found 2"),
        (("sentence1\tsentence2\tscore", "a\tb\t1\textra"), r"pairs.tsv: line 2: expected 3 .* found 4"),
        (("sentence1\tsentence2\tscore", "a\t \t1"), r"pairs.tsv: line 2: sentence2 is empty, expected a sentence"),
        (("sentence1\tsentence2\tscore", "\t\t"), r"pairs.tsv: line 2: sentence1 is empty"),
        (("sentence1\tsentence2\tscore\tsplit", "a\tb\t1\tdev"),
         r"pairs.tsv: line 2: split is 'dev', expected one of \['train', 'val', 'test', 'query', 'gallery'\]"),
        (("sentence1\tsentence2\tscore\ttask", "a\tb\t1\t "), r"pairs.tsv: line 2: task is empty"),
        (("sentence1\tsentence2\tscore",), r"pairs.tsv: no pair after the header line"),
        ((), r"pairs.tsv: the file is empty"),
    ],
)
def test_sts_pairs_malformed(tmp_path, lines, pattern):
    root = tmp_path / "sts"
    write_tsv(root / "pairs.tsv", *lines)
    fails("sts-pairs", root, tmp_path, AnnotationError, pattern)


def test_sts_pairs_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    fails("sts-pairs", tmp_path / "empty", tmp_path, FileNotFoundError,
          r"sts-pairs: no annotation file in .*looked for \['pairs.tsv'\]")
    fails("sts-pairs", tmp_path / "empty", tmp_path, FileNotFoundError,
          r"sts-pairs: annotation file not found: .*other.tsv", annotations="other.tsv")


def test_sts_pairs_on_the_demo(demo, tmp_path):
    out = tmp_path / "out"
    result = prepare("sts-pairs", demo["sts_pairs"].parent, out, task="demo")
    pairs = read_pairs(out / "pairs.parquet")
    assert len(pairs) == 8 and result.pairs_per_task == {"demo": 8}
    assert pairs["pair_id"].tolist() == [f"demo#{n:04d}" for n in range(8)]
    assert pairs["score"].between(0, 5).all() and (pairs["split"] == "test").all()
    assert (pairs["sentence1"].str.len() > 0).all() and (pairs["sentence2"].str.len() > 0).all()
    first = demo["sts_pairs"].read_text().splitlines()[1].split("\t")
    assert tuple(pairs.iloc[0][["sentence1", "sentence2"]]) == (first[0], first[1])
    assert pairs["score"].iloc[0] == float(first[2])


# ---------------------------------------------------------------------------------------------
# check-dataset
# ---------------------------------------------------------------------------------------------


def test_check_dataset_knows_the_generic_formats(demo, capsys):
    assert DEFAULT_DATASET["image-folders"] == "image-folders" and "image-folders" in EXPECTED
    assert DEFAULT_DATASET["sts-pairs"] == "sts-pairs" and "sts-pairs" in EXPECTED
    check = check_dataset("image-folders", demo["retrieval_root"])
    assert check.ok and check.rows and all(r.expected is None for r in check.rows)
    assert format_check(check)[-1] == "ok: no published sizes to compare with (counts shown, not checked)"
    assert main(["check-dataset", "sts-pairs", str(demo["sts_pairs"].parent)]) == 0
    out = capsys.readouterr().out
    assert "  sts-pairs     pairs                8         -\n" in out
    assert "ok: no published sizes" in out
    # Compared with a real dataset's sizes, the demo's folders mismatch.
    assert main(["check-dataset", "image-folders", str(demo["retrieval_root"]), "--dataset", "cub"]) == 1
    out = capsys.readouterr().out
    assert "expected sizes: cub: CUB-200-2011" in out and "MISMATCH" in out
