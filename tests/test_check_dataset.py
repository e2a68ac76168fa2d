"""`softref check-dataset` and the extended `softref prepare`: fixture sizes against the table of
real sizes (they mismatch by design), and against a monkeypatched table that matches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import softref.data.expected as expected_mod
from softref.cli import main, parse_options
from softref.data.expected import (
    DEFAULT_DATASET,
    EXPECTED,
    ExpectedSizes,
    SplitSizes,
    check_dataset,
    dataset_of,
    format_check,
)
from softref.data.adapters import FORMATS
from softref.data.manifest import read_images, read_pairs

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(fmt: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / fmt, tmp_path / fmt))


# The fixtures' own sizes, in the shape of the real table.
FIXTURE_SIZES = {
    "cub": ExpectedSizes("fixture", {"train": SplitSizes(3, 0, 2), "test": SplitSizes(3, 0, 2)}),
    "reed-cub": ExpectedSizes("fixture", {"train": SplitSizes(3, 30, 2), "test": SplitSizes(2, 20, 1)}),
    "sts": ExpectedSizes("fixture", pairs={
        "STS12": 15, "STS13": 9, "STS14": 18, "STS15": 15, "STS16": 14, "STSBenchmark": 3, "SICK-R": 3,
    }),
}


def test_table_covers_every_format():
    assert set(DEFAULT_DATASET) == set(FORMATS)
    assert {d for d in DEFAULT_DATASET.values() if d} | {"coco", "flickr30k"} == set(EXPECTED)
    assert EXPECTED["coco"].splits["test"] == SplitSizes(5_000, 25_010, 5_000)
    assert EXPECTED["cub"].splits["test"] == SplitSizes(5_924, 0, 100)
    assert EXPECTED["inaturalist"].splits["test"] == SplitSizes(136_093, 0, 2_452)
    assert EXPECTED["inshop"].splits["query"].images == 14_218
    assert EXPECTED["sop"].splits["test"] == SplitSizes(60_502, 0, 11_316)
    assert EXPECTED["cuhk-pedes"].splits["train"] == SplitSizes(34_054, 68_126, 11_003)


def test_dataset_of():
    assert dataset_of("karpathy", Path("dataset_coco.json")) == "coco"
    assert dataset_of("albef", Path("flickr30k_test.json")) == "flickr30k"
    assert dataset_of("cub", Path("images.txt")) == "cub"
    with pytest.raises(ValueError, match=r"new_test.json does not say which dataset it holds"):
        dataset_of("cusa-json", Path("new_test.json"))


def test_fixture_mismatches_the_real_sizes(tmp_path, capsys):
    root = fixture("cub", tmp_path)
    assert main(["check-dataset", "cub", str(root)]) == 1
    out = capsys.readouterr().out
    assert "expected sizes: cub: CUB-200-2011" in out
    assert "train         images               3     5,864  MISMATCH" in out
    assert "test          texts                0         0\n" in out  # texts match: no flag
    assert "images on disk: all present" in out
    assert "4 problem(s) found" in out


def test_matching_table_exits_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(expected_mod, "EXPECTED", {**EXPECTED, **FIXTURE_SIZES})
    for fmt in ("cub", "reed-cub", "senteval-sts"):
        assert main(["check-dataset", fmt, str(fixture(fmt, tmp_path))]) == 0, capsys.readouterr().out
        out = capsys.readouterr().out
        assert "MISMATCH" not in out and "ok: matches the real dataset" in out
    assert "STS16         pairs               14        14" in out


def test_missing_images_and_extra_splits_are_problems(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(expected_mod, "EXPECTED", {**EXPECTED, **FIXTURE_SIZES})
    root = fixture("cub", tmp_path)
    (root / "images" / "101.White_Pelican" / "White_Pelican_0012_97446.jpg").unlink()
    assert main(["check-dataset", "cub", str(root)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" not in out
    assert "images on disk: 1 missing (first: images/101.White_Pelican/White_Pelican_0012_97446.jpg)" in out
    assert main(["check-dataset", "cub", str(root), "--no-check-images"]) == 0
    assert "images on disk: not checked" in capsys.readouterr().out
    # A split the real dataset lacks is a mismatch (expected 0).
    sizes = {"cub": ExpectedSizes("fixture", {"train": SplitSizes(3, 0, 2)})}
    check = check_dataset("cub", root, expected=sizes, check_images=False)
    assert [(r.split, r.kind, r.found, r.expected) for r in check.mismatches] == [
        ("test", "images", 3, 0), ("test", "identities", 2, 0),
    ]
    assert not check.ok


def test_check_dataset_options_and_dataset_choice(tmp_path, capsys):
    root = fixture("cusa-json", tmp_path)
    assert main(["check-dataset", "cusa-json", str(root)]) == 2
    assert "does not say which dataset it holds" in capsys.readouterr().err
    assert main(["check-dataset", "cusa-json", str(root), "--dataset", "coco"]) == 1
    assert "expected sizes: coco: MSCOCO, Karpathy split" in capsys.readouterr().out
    eccv = fixture("eccv", tmp_path)
    assert main(["check-dataset", "eccv", str(eccv), "--option", "eccv_dir=eccv_caption_data"]) == 1
    out = capsys.readouterr().out
    assert "test          texts                6    25,000  MISMATCH" in out
    assert main(["check-dataset", "cub", str(root), "--dataset", "nope"]) == 2
    assert main(["check-dataset", "cub", str(fixture("cub", tmp_path)), "--option", "splits=[test]"]) == 2
    assert "has no option(s) ['splits']" in capsys.readouterr().err


def test_format_check_lines(tmp_path):
    check = check_dataset("reed-flowers", fixture("reed-flowers", tmp_path))
    lines = format_check(check)
    assert lines[0].startswith("reed-flowers dataset at ")
    assert lines[1] == (
        "expected sizes: reed-flowers: Oxford-102 Flowers with Reed et al. captions, zero-shot "
        "split (trainval -> train)"
    )
    assert lines[-1] == "6 problem(s) found"


def test_prepare_cli_options(tmp_path, capsys):
    root = fixture("albef", tmp_path)
    out = tmp_path / "out"
    assert main(["prepare", "albef", str(root), str(out), "--option", "splits=[test]"]) == 0
    assert set(read_images(out / "images.parquet")["split"]) == {"test"}
    assert "test: 2 images, 5 texts" in capsys.readouterr().out
    (root / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    assert main(["prepare", "albef", str(root), str(tmp_path / "o2")]) == 2
    assert "1 of 5 listed images are missing" in capsys.readouterr().err
    assert main(["prepare", "albef", str(root), str(tmp_path / "o2"), "--no-check-images"]) == 0
    assert main(["prepare", "albef", str(root), str(tmp_path / "o3"), "--skip-missing"]) == 0
    assert "skipped 1 missing images and 2 captions" in capsys.readouterr().out
    sts = tmp_path / "sts-out"
    assert main(["prepare", "senteval-sts", str(fixture("senteval-sts", tmp_path)), str(sts),
                 "--option", "tasks=[SICK-R]"]) == 0
    assert "SICK-R: 3 pairs" in capsys.readouterr().out
    assert len(read_pairs(sts / "pairs.parquet")) == 3
    with pytest.raises(SystemExit):
        main(["prepare", "nope", str(root), str(out)])


def test_parse_options():
    assert parse_options(["image_dir=flickr30k-images", "captions_per_image=null", "splits=[train, test]",
                          "n=10", "prefix="]) == {
        "image_dir": "flickr30k-images", "captions_per_image": None, "splits": ["train", "test"],
        "n": 10, "prefix": "",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["novalue"])
    with pytest.raises(ValueError, match="given twice"):
        parse_options(["a=1", "a=2"])
