"""Teacher diagnostics: ROC AUC and soft-label entropy on cases whose answer is known, and the CLI."""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from softref.cli import main
from softref.data.facts import fact_codes
from softref.teachers.diagnostics import fact_relevance, identity_relevance, roc_auc, soft_label_diagnostics


def naive_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_against_pairwise_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=60).astype(float)  # many ties
    labels = rng.random(60) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(naive_auc(scores, labels))
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0 and roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert math.isnan(roc_auc([1.0, 2.0], [True, True]))


def identity_features(identities, num_identities) -> np.ndarray:
    return np.eye(num_identities)[np.asarray(identities)]


def test_a_perfect_teacher_separates_perfectly_with_the_entropy_of_its_rows():
    """One-hot identity features: cosine 1 within an identity, 0 across. Each row of
    softmax(S / tau) has m entries e^(1/tau) / Z and B - m entries 1 / Z, Z = m e^(1/tau) + B - m."""
    identities = np.repeat(np.arange(4), 8)  # 4 identities x 8 pairs: one batch of 32
    features = identity_features(identities, 4)
    out = soft_label_diagnostics({"image": features, "text": features}, identity_relevance(identities.tolist()),
                                 batch_size=32, teacher_taus=(1.0, 0.1))
    assert out["num_batches"] == 1 and out["num_pairs"] == 32
    b, m = 32, 8
    for modality in ("image", "text"):
        row = out[modality]
        assert row["auc"] == 1.0
        assert (row["matching_pairs"], row["non_matching_pairs"]) == (4 * 8 * 7, 32 * 31 - 4 * 8 * 7)
        assert row["other_match_share"] == pytest.approx(7 / 32)
        for tau in (1.0, 0.1):
            z = m * math.exp(1 / tau) + b - m
            p_in, p_out = math.exp(1 / tau) / z, 1 / z
            entropy = -(m * p_in * math.log(p_in) + (b - m) * p_out * math.log(p_out)) / math.log(b)
            stats = row["rows"][f"{tau:g}"]
            assert stats["entropy_ratio"] == pytest.approx(entropy)
            assert stats["diagonal_mass"] == pytest.approx(p_in)
            assert stats["other_match_mass"] == pytest.approx(7 * p_in)
    # The paper's temperature leaves the perfect teacher's rows near uniform; 0.1 does not.
    assert out["image"]["rows"]["1"]["entropy_ratio"] > 0.95 > 0.7 > out["image"]["rows"]["0.1"]["entropy_ratio"]


def test_random_and_blind_teachers():
    rng = np.random.default_rng(1)
    identities = rng.integers(0, 20, size=650)
    random = soft_label_diagnostics({"image": rng.normal(size=(650, 16))}, identity_relevance(identities.tolist()))
    assert random["num_batches"] == 20 and "text" not in random  # the last 10 pairs make no full batch
    assert abs(random["image"]["auc"] - 0.5) < 0.06
    # Equal features: every cosine ties (AUC one half) and every row is uniform.
    blind = soft_label_diagnostics({"text": np.ones((650, 3))}, identity_relevance(identities.tolist()), max_batches=3)
    assert blind["num_batches"] == 3 and blind["text"]["auc"] == 0.5
    assert blind["text"]["rows"]["0.1"]["entropy_ratio"] == pytest.approx(1.0)
    assert blind["text"]["rows"]["0.1"]["other_match_mass"] == pytest.approx(blind["text"]["other_match_share"])


def naive_mass(similarity, match, tau) -> float:
    """Mean over rows of the softmax mass on off-diagonal matching entries."""
    total = 0.0
    for i, row in enumerate(similarity):
        weights = [math.exp(s / tau) for s in row]
        total += sum(w for j, w in enumerate(weights) if j != i and match[i][j]) / sum(weights)
    return total / len(similarity)


def test_fact_relevance_orients_image_and_text_rows():
    """Image row i, entry j matches when caption j is true of image i; text row i, entry j when
    caption i is true of image j. Here caption 0 (a red hat) is true of image 1, caption 1 (a green
    top) is not true of image 0, so the two orientations give different masses."""
    images = [{"hat": "red", "top": "blue"}, {"hat": "red", "top": "green"}, {"hat": "black", "top": "green"}]
    captions = [{"hat": "red"}, {"top": "green"}, {"hat": "black"}]
    relevant = fact_relevance(fact_codes(captions), fact_codes(images))
    truth = [[all(images[j].get(k) == v for k, v in captions[i].items()) for j in range(3)] for i in range(3)]
    np.testing.assert_array_equal(relevant(np.arange(3)), truth)
    features = np.array([[1.0, 0.2, 0.0], [0.6, 1.0, 0.1], [0.0, 0.5, 1.0]])
    out = soft_label_diagnostics({"image": features, "text": features}, relevant, batch_size=3, teacher_taus=(0.5,))
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = (x @ x.T).tolist()
    transposed = [[truth[j][i] for j in range(3)] for i in range(3)]
    # One batch of all three pairs, in the shuffle's order: the statistics do not depend on it.
    assert out["image"]["rows"]["0.5"]["other_match_mass"] == pytest.approx(naive_mass(similarity, transposed, 0.5))
    assert out["text"]["rows"]["0.5"]["other_match_mass"] == pytest.approx(naive_mass(similarity, truth, 0.5))
    assert out["image"]["rows"]["0.5"]["other_match_mass"] != pytest.approx(out["text"]["rows"]["0.5"]["other_match_mass"])


def test_bad_arguments_are_named():
    relevant = identity_relevance([0, 0, 1, 1])
    with pytest.raises(ValueError, match="'image' and/or 'text'"):
        soft_label_diagnostics({"pixels": np.ones((4, 2))}, relevant)
    with pytest.raises(ValueError, match="one row per pair"):
        soft_label_diagnostics({"image": np.ones((4, 2)), "text": np.ones((3, 2))}, relevant)
    with pytest.raises(ValueError, match=r"batch_size must be in \[2, 4\]"):
        soft_label_diagnostics({"image": np.ones((4, 2))}, relevant, batch_size=8)


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic demo, its manifests and the oracle's shards (real files, real extraction)."""
    from softref.config import TeacherSpec
    from softref.data.adapters import prepare
    from softref.data.synthetic import synthesize_demo
    from softref.features.extract import extract_image_features, extract_text_features
    from softref.teachers import load_teacher

    root = tmp_path_factory.mktemp("diagnostics")
    paths = synthesize_demo(root / "demo", num_identities=12, images_per_identity=3, captions_per_image=3,
                            image_size=32, person_size=(32, 16), sts_pairs=0)
    out = {"demo": root / "demo", "oracle": paths["oracle_attributes"]}
    for part, fmt in (("coco", "karpathy"), ("person", "cuhk-pedes")):
        prepare(fmt, paths[f"{part}_root"], root / "data" / part)
        for modality in ("image", "text"):
            teacher = load_teacher(TeacherSpec(name=f"oracle-{modality}", kind="oracle-attributes", modality=modality,
                                               weights=str(paths["oracle_attributes"])))
            folder = root / "features" / part / f"oracle-{modality}"
            if modality == "image":
                extract_image_features(root / "data" / part / "images.parquet", paths[f"{part}_root"], teacher,
                                       folder / "images-0.h5", shard=0, num_shards=1, num_workers=0)
            else:
                extract_text_features(root / "data" / part / "texts.parquet", teacher, folder / "texts-0.h5", shard=0,
                                      num_shards=1)
        out[part] = root
    return out


def test_cli_on_the_oracle(demo_features, tmp_path, capsys):
    root = demo_features["coco"]
    common = ["--image-features", str(root / "features/person/oracle-image"),
              "--text-features", str(root / "features/person/oracle-text"), "--batch-size", "8"]
    out = tmp_path / "person.json"
    assert main(["teacher-diagnostics", str(root / "data/person"), *common, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # Same identity <=> same six facts: the image oracle is a perfect identity teacher.
    assert result["image"]["auc"] == 1.0 and result["teachers"] == {"image": "oracle-image", "text": "oracle-text"}
    assert (result["split"], result["relevance"], result["batch_size"]) == ("train", "identity", 8)
    assert set(result["image"]["rows"]) == {"1", "0.1"}
    printed = capsys.readouterr().out
    assert "image teacher oracle-image: AUC 1.0000, 1.0000 without same-image pairs" in printed and f"wrote {out}" in printed
    assert result["image"]["auc_other_images"] == 1.0 and result["image"]["same_image_pairs"] >= 0

    coco = ["--image-features", str(root / "features/coco/oracle-image"), "--text-features",
            str(root / "features/coco/oracle-text"), "--batch-size", "8", "--teacher-tau", "0.5"]
    assert main(["teacher-diagnostics", str(root / "data/coco"), *coco, "--relevance", "facts", "--facts",
                 str(demo_features["oracle"]), "--root", str(demo_features["demo"] / "coco"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["relevance"] == "facts" and set(result["image"]["rows"]) == {"0.5"}
    assert 0.5 < result["image"]["auc"] < 1.0 and result["image"]["matching_pairs"] > 0


def test_cli_errors(demo_features, capsys):
    root = demo_features["coco"]
    args = ["teacher-diagnostics", str(root / "data/coco"), "--image-features", str(root / "features/coco/oracle-image")]
    assert main([*args, "--relevance", "facts"]) == 2
    assert "needs --facts" in capsys.readouterr().err
    assert main([*args, "--split", "nope"]) == 2
    assert "no captions in split 'nope'" in capsys.readouterr().err
    assert main(["teacher-diagnostics", str(root / "data/coco")]) == 2
    assert "--image-features and/or --text-features" in capsys.readouterr().err


def test_same_image_pairs_can_be_left_out():
    """A teacher that only recognises the very same image: its matches are the batch's same-image
    pairs (cosine 1), so it looks good overall but finds none of the other images (AUC one half)."""
    identities = np.repeat(np.arange(4), 8)  # 4 identities x 8 pairs; 2 captions per image
    images = np.repeat(np.arange(16), 2)
    same_image_teacher = np.eye(16)[images]
    out = soft_label_diagnostics({"image": same_image_teacher, "text": identity_features(identities, 4)},
                                 identity_relevance(identities.tolist()), image_of_pair=images.tolist())
    assert out["image"]["same_image_pairs"] == out["text"]["same_image_pairs"] == 16 * 2
    assert out["image"]["auc"] > 0.55 and out["image"]["auc_other_images"] == 0.5
    assert out["text"]["auc"] == out["text"]["auc_other_images"] == 1.0
    with pytest.raises(ValueError, match="image_of_pair: 3 entries for 32 pairs"):
        soft_label_diagnostics({"image": same_image_teacher}, identity_relevance(identities.tolist()), image_of_pair=[1, 2, 3])
