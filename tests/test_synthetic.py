"""Tests for softref.data.synthetic: determinism, attribute structure, formats the adapters read."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
from PIL import Image

from softref.data.adapters import prepare
from softref.data.manifest import read_images, read_texts
from softref.data.synthetic import (
    ACCESSORIES,
    ATTRIBUTES,
    COLOURS,
    SHAPES,
    assign_splits,
    sample_identities,
    synthesize_demo,
)

SMALL = dict(
    num_identities=10,
    images_per_identity=3,
    captions_per_image=4,
    image_size=32,
    person_size=(32, 16),
    sts_pairs=40,
)

# Independent of the module's templates: which words name which part.
NOUN_PART = {
    **dict.fromkeys(("hat", "cap", "beanie"), "hat"),
    **dict.fromkeys(("shirt", "top", "jacket", "sweater"), "top"),
    **dict.fromkeys(("trousers", "pants", "jeans"), "bottom"),
    **dict.fromkeys(("shoes", "sneakers", "boots"), "shoes"),
}
COLOUR_NOUN = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(NOUN_PART)})\b")
COLOUR_WORD = re.compile(rf"\b({'|'.join(COLOURS)})\b")
SHAPE_WORD = re.compile(rf"\b({'|'.join(SHAPES)})\b")
ACCESSORY_WORD = re.compile(rf"\b({'|'.join(a for a in ACCESSORIES if a != 'none')})\b")


def mentioned(caption: str) -> dict[str, set[str]]:
    """Attribute -> values a caption states."""
    text = caption.lower()
    found: dict[str, set[str]] = {a: set() for a in ATTRIBUTES}
    pairs = COLOUR_NOUN.findall(text)
    # Every colour word must be bound to a garment noun, or the parse would miss it.
    assert len(pairs) == len(COLOUR_WORD.findall(text)), caption
    for colour, noun in pairs:
        found[NOUN_PART[noun]].add(colour)
    found["emblem"].update(SHAPE_WORD.findall(text))
    found["accessory"].update(ACCESSORY_WORD.findall(text))
    return found


def check_caption(caption: str, identity) -> int:
    """Assert the caption states only true attributes; return how many it mentions."""
    truth = identity.attributes()
    found = mentioned(caption)
    for attr, values in found.items():
        assert values <= {truth[attr]}, (caption, attr, values, truth)
    return sum(bool(v) for v in found.values())


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("demo")
    return root, synthesize_demo(root, seed=3, **SMALL)


def test_same_seed_same_bytes(demo, tmp_path):
    root, _ = demo
    again = synthesize_demo(tmp_path / "again", seed=3, **SMALL)
    assert tree_bytes(root) == tree_bytes(tmp_path / "again")
    assert set(again) == {"coco_root", "coco_annotations", "person_root", "person_annotations",
                          "retrieval_root", "sts_pairs"}
    other = synthesize_demo(tmp_path / "other", seed=4, **SMALL)
    assert other["coco_annotations"].read_bytes() != again["coco_annotations"].read_bytes()


def test_resynthesis_replaces_old_outputs(tmp_path):
    synthesize_demo(tmp_path, seed=0, **SMALL)
    (tmp_path / "keep.txt").write_text("mine")
    synthesize_demo(tmp_path, seed=0, **{**SMALL, "num_identities": 5})
    classes = [p for p in (tmp_path / "retrieval").glob("*/*") if p.is_dir()]
    assert len(classes) == 5
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "keep.txt", "person",
                                                          "retrieval", "sts"]


def test_identities_distinct_but_sharing():
    identities = sample_identities(60, seed=0)
    assert [i.number for i in identities] == list(range(1, 61))
    tuples = [tuple(i.attributes().values()) for i in identities]
    assert len(set(tuples)) == len(tuples)
    shared = [sum(x == y for x, y in zip(a, b)) for a, b in combinations(tuples, 2)]
    assert max(shared) >= 3 and sum(s > 0 for s in shared) > len(shared) // 2
    for attr in ATTRIBUTES:
        assert len({i.attributes()[attr] for i in identities}) > 1
    assert sample_identities(60, seed=0) == identities
    assert sample_identities(60, seed=1) != identities


def test_split_fractions():
    identities = sample_identities(60, seed=0)
    splits = assign_splits(identities, (0.6, 0.2, 0.2), seed=0)
    assert Counter(splits.values()) == {"train": 36, "val": 12, "test": 12}
    small = assign_splits(sample_identities(3, seed=0), (0.6, 0.2, 0.2), seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(identities, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="cannot be split"):
        assign_splits(sample_identities(2, seed=0), (0.6, 0.2, 0.2))


def test_coco_json_and_captions(demo):
    root, paths = demo
    data = json.loads(paths["coco_annotations"].read_text())
    identities = {i.number: i for i in sample_identities(SMALL["num_identities"], seed=3)}
    records = data["images"]
    assert data["dataset"] == "coco"
    assert len(records) == SMALL["num_identities"] * SMALL["images_per_identity"]
    assert Counter(r["split"] for r in records).keys() == {"train", "restval", "val", "test"}
    sentids = [s["sentid"] for r in records for s in r["sentences"]]
    assert len(set(sentids)) == len(sentids)
    counts = []
    for rec in records:
        assert rec["filepath"] == "images" and rec["cocoid"] != rec["imgid"]
        assert rec["sentids"] == [s["sentid"] for s in rec["sentences"]]
        assert len(rec["sentences"]) == SMALL["captions_per_image"]
        image = Image.open(paths["coco_root"] / "images" / rec["filename"])
        assert image.size == (SMALL["image_size"],) * 2 and image.mode == "RGB"
        identity = identities[int(re.match(r"id(\d+)_", rec["filename"]).group(1))]
        for sent in rec["sentences"]:
            assert sent["imgid"] == rec["imgid"]
            assert sent["tokens"] == re.findall(r"[a-z]+", sent["raw"].lower())
            n = check_caption(sent["raw"], identity)
            mentionable = len(ATTRIBUTES) - (identity.accessory == "none")
            assert 1 <= n < mentionable
            counts.append(n)
    # Captions vary in how much they say.
    assert len(set(counts)) >= 3


def test_person_json_and_captions(demo):
    _, paths = demo
    records = json.loads(paths["person_annotations"].read_text())
    identities = {i.number: i for i in sample_identities(SMALL["num_identities"], seed=3)}
    assert min(r["id"] for r in records) == 1
    for rec in records:
        assert set(rec) == {"split", "captions", "id", "file_path", "processed_tokens"}
        assert re.fullmatch(rf"demo/{rec['id']}/\d+\.png", rec["file_path"])
        assert len(rec["captions"]) == 2 and len(rec["processed_tokens"]) == 2
        image = Image.open(paths["person_root"] / "imgs" / rec["file_path"])
        assert image.size == (16, 32)  # (W, H) for person_size (H, W) = (32, 16)
        for caption in rec["captions"]:
            assert check_caption(caption, identities[rec["id"]]) >= 1
    splits_per_id: dict[int, set[str]] = {}
    for rec in records:
        splits_per_id.setdefault(rec["id"], set()).add(rec["split"])
    assert all(len(s) == 1 for s in splits_per_id.values())


def test_retrieval_folders(demo):
    root, paths = demo
    person = json.loads(paths["person_annotations"].read_text())
    split_of = {f"{r['id']:04d}": r["split"] for r in person}
    seen = {}
    for folder in sorted(paths["retrieval_root"].glob("*/*")):
        seen[folder.name] = folder.parent.name
        assert len(list(folder.glob("*.png"))) == SMALL["images_per_identity"]
    assert seen == split_of
    assert set(seen.values()) == {"train", "val", "test"}


def test_sts_pairs(demo):
    _, paths = demo
    lines = paths["sts_pairs"].read_text().splitlines()
    assert lines[0] == "sentence1\tsentence2\tscore"
    rows = list(csv.reader(lines[1:], delimiter="\t"))
    assert len(rows) == SMALL["sts_pairs"]
    scores = [float(r[2]) for r in rows]
    assert all(0.0 <= s <= 5.0 for s in scores) and len(set(scores)) >= 4
    for s1, s2, score in rows:
        a, b = mentioned(s1), mentioned(s2)
        # Each sentence describes all of its attribute set, so the overlap gives the score.
        same = sum(a[attr] == b[attr] for attr in ATTRIBUTES)
        assert float(score) == pytest.approx(5 * same / 6, abs=1e-4), (s1, s2, score)


def test_adapters_read_the_demo(demo, tmp_path):
    _, paths = demo
    coco = prepare("karpathy", paths["coco_root"], tmp_path / "coco")
    person = prepare("cuhk-pedes", paths["person_root"], tmp_path / "person")
    n_img = SMALL["images_per_identity"]
    splits = Counter(assign_splits(sample_identities(SMALL["num_identities"], seed=3),
                                   (0.6, 0.2, 0.2), seed=3).values())
    expected = {s: n * n_img for s, n in sorted(splits.items())}
    assert coco.images_per_split == expected
    assert coco.texts_per_split == {s: n * SMALL["captions_per_image"] for s, n in expected.items()}
    assert person.images_per_split == expected
    assert person.texts_per_split == {s: n * 2 for s, n in expected.items()}
    assert person.identities_per_split == dict(sorted(splits.items()))
    images = read_images(tmp_path / "person" / "images.parquet")
    by_split = images.groupby("split")["identity"].agg(set)
    for a, b in combinations(by_split.index, 2):
        assert not by_split[a] & by_split[b]
    texts = read_texts(tmp_path / "coco" / "texts.parquet")
    assert len(texts) == sum(coco.texts_per_split.values())
