"""Tests for softref.data.synthetic: determinism, attribute and scene structure, formats the adapters
read, and the ground truth it writes (checked against an independent parse of every caption)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from softref.data.adapters import prepare
from softref.data.manifest import read_images, read_positives, read_texts
from softref.data.synthetic import (
    ACCESSORIES,
    ATTRIBUTES,
    BACKGROUND_PALETTE,
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


# Scene words, again independent of the module's phrase tables.
SCENE_FACTS = ("background", "background_colour", "position", "size", "object", "object_colour")
BACKGROUND_COLOURS = ("grey", "brown", "pink", "teal", "beige", "olive")
OBJECT_NOUN = {"ball": "ball", "box": "box", "crate": "box", "cone": "cone", "object": None, "thing": None}
SIZE_WORD = {"small": "small", "little": "small", "large": "large", "big": "large"}
SUBJECT_SIZE = re.compile(rf"^A ({'|'.join(SIZE_WORD)}) (person|figure|pedestrian)\b")
BACKGROUND = re.compile(rf"\b(?:(plain|striped|checkered) )?(?:({'|'.join(BACKGROUND_COLOURS)}) )?"
                        r"(background|backdrop|wall)\b")
OBJECT = re.compile(rf"\b(?:({'|'.join(COLOURS)}) )?({'|'.join(OBJECT_NOUN)})\b")
BACKGROUND_COLOUR_WORD = re.compile(rf"\b({'|'.join(BACKGROUND_COLOURS)})\b")
POSITION_WORD = {"left": "left", "right": "right", "middle": "centre", "centre": "centre"}


def scene_facts_of(caption: str) -> dict[str, str]:
    """The facts a COCO-style caption states, parsed from its words: {fact: value}."""
    text = caption.lower()
    facts: dict[str, str] = {}

    def put(fact: str, value: str) -> None:
        assert facts.setdefault(fact, value) == value, (caption, fact, value)

    garments = COLOUR_NOUN.findall(text)
    objects = [m for m in OBJECT.findall(text)]
    assert len(objects) <= 1, caption
    # Every figure colour word is bound to a garment or to the object; every background colour to a background.
    assert len(COLOUR_WORD.findall(text)) == len(garments) + sum(bool(c) for c, _ in objects), caption
    backgrounds = BACKGROUND.findall(text)
    assert len(backgrounds) <= 1 and len(BACKGROUND_COLOUR_WORD.findall(text)) == sum(bool(b[1]) for b in backgrounds), caption
    for colour, noun in garments:
        put(NOUN_PART[noun], colour)
    for shape in SHAPE_WORD.findall(text):
        put("emblem", shape)
    for accessory in ACCESSORY_WORD.findall(text):
        put("accessory", accessory)
    for colour, noun in objects:
        if OBJECT_NOUN[noun]:
            put("object", OBJECT_NOUN[noun])
        if colour:
            put("object_colour", colour)
    for kind, colour, _ in backgrounds:
        if kind:
            put("background", kind)
        if colour:
            put("background_colour", colour)
    for word in re.findall(r"\b(left|right|middle|centre)\b", text):
        put("position", POSITION_WORD[word])
    size = SUBJECT_SIZE.match(caption)
    if size:
        put("size", SIZE_WORD[size.group(1)])
    return facts


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
    # Every file: images, annotations, the ECCV files (.npy included), the stats and the oracle's facts.
    assert tree_bytes(root) == tree_bytes(tmp_path / "again")
    assert {"coco/eccv/coco_test_ids.npy", "coco/ground_truth_stats.json", "oracle_attributes.json"} <= set(tree_bytes(root))
    assert set(again) == {"coco_root", "coco_annotations", "coco_eccv", "coco_ground_truth_stats", "person_root",
                          "person_annotations", "retrieval_root", "sts_pairs", "oracle_attributes"}
    other = synthesize_demo(tmp_path / "other", seed=4, **SMALL)
    assert other["coco_annotations"].read_bytes() != again["coco_annotations"].read_bytes()


def test_resynthesis_replaces_old_outputs(tmp_path):
    synthesize_demo(tmp_path, seed=0, **SMALL)
    (tmp_path / "keep.txt").write_text("mine")
    synthesize_demo(tmp_path, seed=0, **{**SMALL, "num_identities": 5})
    classes = [p for p in (tmp_path / "retrieval").glob("*/*") if p.is_dir()]
    assert len(classes) == 5
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "keep.txt", "oracle_attributes.json",
                                                          "person", "retrieval", "sts"]
    assert len(json.loads((tmp_path / "oracle_attributes.json").read_text())["images"]) == 2 * 5 * SMALL["images_per_identity"]


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
    counts, scene_facts = [], set()
    image_facts = json.loads(paths["oracle_attributes"].read_text())["images"]
    for rec in records:
        assert rec["filepath"] == "images" and rec["cocoid"] != rec["imgid"]
        assert rec["sentids"] == [s["sentid"] for s in rec["sentences"]]
        assert len(rec["sentences"]) == SMALL["captions_per_image"]
        image = Image.open(paths["coco_root"] / "images" / rec["filename"])
        assert image.size == (SMALL["image_size"],) * 2 and image.mode == "RGB"
        identity = identities[int(re.match(r"id(\d+)_", rec["filename"]).group(1))]
        facts = image_facts[f"coco/images/{rec['filename']}"]
        # The figure is the identity's; the scene adds the six scene facts.
        assert {a: facts[a] for a in ATTRIBUTES} == identity.attributes()
        assert set(facts) == set(ATTRIBUTES) | set(SCENE_FACTS)
        scene_facts.add(tuple(sorted(facts.items())))
        for sent in rec["sentences"]:
            assert sent["imgid"] == rec["imgid"]
            assert sent["tokens"] == re.findall(r"[a-z]+", sent["raw"].lower())
            stated = scene_facts_of(sent["raw"])
            # Behaviour changed on purpose: captions state 2-7 of the scene's 12 facts (figure and scene),
            # never a false one, instead of 1-5 of the identity's 6 attributes.
            assert all(facts[f] == v for f, v in stated.items()), (sent["raw"], stated, facts)
            assert 2 <= len(stated) <= 7
            counts.append(len(stated))
    # Captions vary in how much they say; every image is its own scene.
    assert len(set(counts)) >= 4
    assert len(scene_facts) == len(records)


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


# ---------------------------------------------------------------------------------------------
# Ground truth: every claim of coco/eccv and ground_truth_stats.json re-derived from the captions' words
# ---------------------------------------------------------------------------------------------


def split_truth(paths: dict[str, Path]) -> tuple[list[dict], dict[str, dict], dict[int, set[int]]]:
    """The test records, every image's facts (from the sidecar, by file name) and, per test sentid,
    the test cocoids its parsed facts are true of (plain loops, not softref.data.facts)."""
    records = [r for r in json.loads(paths["coco_annotations"].read_text())["images"] if r["split"] == "test"]
    sidecar = json.loads(paths["oracle_attributes"].read_text())
    facts = {r["cocoid"]: sidecar["images"][f"coco/images/{r['filename']}"] for r in records}
    truth = {}
    for rec in records:
        for sent in rec["sentences"]:
            stated = scene_facts_of(sent["raw"])
            assert sidecar["captions"][sent["raw"]] == stated, sent["raw"]
            truth[sent["sentid"]] = {c for c, f in facts.items() if all(f.get(k) == v for k, v in stated.items())}
    return records, facts, truth


def test_captions_true_of_their_image_and_ground_truth_exact(demo):
    _, paths = demo
    records, _, truth = split_truth(paths)
    own = {s["sentid"]: r["cocoid"] for r in records for s in r["sentences"]}
    assert all(own[s] in images for s, images in truth.items())
    # The demo has both: captions that pin down one image and captions true of others too.
    assert {len(v) == 1 for v in truth.values()} == {True, False}
    folder = paths["coco_eccv"]
    c2i = json.loads((folder / "eccv_caption_to_image.json").read_text())
    i2c = json.loads((folder / "eccv_image_to_caption.json").read_text())
    assert c2i == {str(s): sorted(v) for s, v in truth.items()}
    assert i2c == {str(r["cocoid"]): sorted(s for s, v in truth.items() if r["cocoid"] in v) for r in records}
    assert json.loads((folder / "original_caption_to_image.json").read_text()) == {str(s): [c] for s, c in own.items()}
    assert json.loads((folder / "original_image_to_caption.json").read_text()) == {
        str(r["cocoid"]): [s["sentid"] for s in r["sentences"]] for r in records}
    ids = np.load(folder / "coco_test_ids.npy", allow_pickle=False)
    assert ids.dtype == np.int64 and sorted(ids.tolist()) == sorted(own)
    stats = json.loads(paths["coco_ground_truth_stats"].read_text())["splits"]["test"]
    others = sum(len(v) > 1 for v in truth.values())
    assert (stats["images"], stats["captions"], stats["captions_true_of_other_images"]) == (len(records), len(truth), others)
    assert stats["false_negative_rate"] == pytest.approx(others / len(truth))
    assert stats["extra_positive_pairs"] == sum(len(v) - 1 for v in truth.values())
    stated = {s["sentid"]: len(scene_facts_of(s["raw"])) for r in records for s in r["sentences"]}
    assert stats["by_facts_mentioned"] == {
        str(k): {"captions": sum(n == k for n in stated.values()),
                 "captions_true_of_other_images": sum(n == k and len(truth[s]) > 1 for s, n in stated.items())}
        for k in sorted(set(stated.values()))}


def test_background_colour_is_drawn(demo):
    """The recorded background colour is the one rendered: the top row's mean is nearest to it
    (umbrellas, which can reach the top row, are left out)."""
    _, paths = demo
    records = json.loads(paths["coco_annotations"].read_text())["images"]
    sidecar = json.loads(paths["oracle_attributes"].read_text())["images"]
    names, rgb = list(BACKGROUND_PALETTE), np.array(list(BACKGROUND_PALETTE.values()), dtype=float)
    checked = 0
    for rec in records:
        facts = sidecar[f"coco/images/{rec['filename']}"]
        if facts["accessory"] == "umbrella":
            continue
        row = np.asarray(Image.open(paths["coco_root"] / "images" / rec["filename"]), dtype=float)[0].mean(axis=0)
        assert names[int(np.argmin(((rgb - row) ** 2).sum(axis=1)))] == facts["background_colour"], rec["filename"]
        checked += 1
    assert checked >= len(records) // 2


def test_eccv_adapter_reads_the_ground_truth(demo, tmp_path):
    _, paths = demo
    records, _, truth = split_truth(paths)
    result = prepare("eccv", paths["coco_root"], tmp_path / "eccv", eccv_dir="eccv")
    assert result.images_per_split == {"test": len(records)} and result.texts_per_split == {"test": len(truth)}
    positives = read_positives(tmp_path / "eccv" / "positives.parquet")
    own = {s["sentid"]: r["cocoid"] for r in records for s in r["sentences"]}
    expected = sorted((str(s), str(c)) for s, v in truth.items() for c in v if c != own[s])
    assert sorted(zip(positives["text_id"], positives["image_id"])) == expected
    assert result.num_positives == len(expected) > 0


def test_eccv_protocol_scores_a_fact_ranker_perfectly(demo):
    """Through the eccv_caption package on the demo's files: ranking images by how many of a caption's
    facts they show puts exactly the true images first, so text-to-image is 100 on every metric."""
    from softref.evaluate.protocols import eccv_caption_scores_and_counts

    _, paths = demo
    records, facts, truth = split_truth(paths)
    sidecar = json.loads(paths["oracle_attributes"].read_text())["captions"]
    vocabulary = sorted({(k, v) for f in facts.values() for k, v in f.items()} |
                        {(k, v) for c in sidecar.values() for k, v in c.items()})
    column = {kv: j for j, kv in enumerate(vocabulary)}

    def vector(mapping):
        out = np.zeros(len(vocabulary))
        for kv in mapping.items():
            out[column[kv]] = 1.0
        return out

    cocoids = [r["cocoid"] for r in records]
    captions = [(s["sentid"], s["raw"]) for r in records for s in r["sentences"]]
    image_emb = np.stack([vector(facts[c]) for c in cocoids])
    text_emb = np.stack([vector(scene_facts_of(raw)) for _, raw in captions])
    scores, counts = eccv_caption_scores_and_counts(
        image_emb, text_emb, [str(c) for c in cocoids], [str(s) for s, _ in captions], paths["coco_eccv"])
    assert counts == {"i2t": len(cocoids), "t2i": len(captions)}
    assert scores["t2i"] == {"mAP@R": pytest.approx(100.0), "R-P": pytest.approx(100.0), "R@1": pytest.approx(100.0)}
