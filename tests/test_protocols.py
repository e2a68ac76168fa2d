"""Evaluation protocols on embeddings: naive loops, ECCV Caption agreement, STS grouping, zero-shot, person."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from softref.data.adapters import prepare
from softref.data.manifest import read_positives, read_texts
from softref.evaluate.intervals import Bootstrap
from softref.evaluate.metrics import cmc_map_minp
from softref.evaluate.protocols import (
    eccv_caption_per_query,
    eccv_caption_scores,
    eccv_caption_scores_and_counts,
    eccv_scores,
    eccv_scores_per_query,
    identity_relevance,
    leave_one_out_hits,
    leave_one_out_r1,
    metric_row,
    person_scores,
    query_gallery_hits,
    query_gallery_r1,
    sts_spearman,
    sts_table,
    zero_shot_scores,
    zero_shot_scores_per_query,
)

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Refine:
    k: int = 3
    tau: float = 0.1
    top_k: int = 5
    lam: float = 0.5


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ranking(row) -> list[int]:
    return sorted(range(len(row)), key=lambda g: (-row[g], g))


def naive_eccv(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """mAP@R, R-P and R@1 per query, written as ECCV Caption describes them."""
    maps, rps, r1s = [], [], []
    for q in range(scores.shape[0]):
        order = ranking(scores[q])
        r = int(relevant[q].sum())
        hits = [bool(relevant[q, g]) for g in order]
        maps.append(sum(sum(hits[:i]) / i for i in range(1, r + 1) if hits[i - 1]) / r)
        rps.append(sum(hits[:r]) / r)
        r1s.append(float(hits[0]))
    return {"mAP@R": 100 * np.mean(maps), "R-P": 100 * np.mean(rps), "R@1": 100 * np.mean(r1s)}


# ---------------------------------------------------------------------------------------------
# ECCV Caption
# ---------------------------------------------------------------------------------------------


def test_identity_relevance() -> None:
    rel = identity_relevance(["a", "b", "c"], ["b", "a", "a", "c"])
    assert rel.dtype == bool and rel.shape == (3, 4)
    assert rel.astype(int).tolist() == [[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]


def test_eccv_scores_match_naive_loops() -> None:
    rng = np.random.default_rng(0)
    image_emb = rng.normal(size=(9, 6))
    text_emb = rng.normal(size=(20, 6))
    identities = np.concatenate([np.arange(4), rng.integers(0, 4, size=5)])
    text_identities = np.concatenate([np.arange(4), rng.integers(0, 4, size=16)])
    rel = identity_relevance(identities.tolist(), text_identities.tolist())
    assert rel.any(axis=0).all() and rel.any(axis=1).all()
    out = eccv_scores(torch.from_numpy(image_emb * 3.0), text_emb, rel)  # any norm
    scores = unit(image_emb) @ unit(text_emb).T
    for direction, (s, r) in {"i2t": (scores, rel), "t2i": (scores.T, rel.T)}.items():
        expected = naive_eccv(s, r)
        assert set(out[direction]) == {"mAP@R", "R-P", "R@1"}
        for name, value in expected.items():
            assert out[direction][name] == pytest.approx(value)


def test_eccv_scores_checks_shape() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(2, 3\)"):
        eccv_scores(np.ones((2, 4)), np.ones((3, 4)), np.ones((3, 2), dtype=bool))


@pytest.fixture(scope="module")
def eccv_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The eccv fixture prepared by the `eccv` adapter: manifest ids, annotated pairs, extra positives."""
    root = Path(shutil.copytree(FIXTURES / "eccv", tmp_path_factory.mktemp("eccv") / "eccv"))
    out = root.parent / "manifests"
    prepare("eccv", root, out, eccv_dir="eccv_caption_data")
    texts = read_texts(out / "texts.parquet")
    positives = read_positives(out / "positives.parquet")
    image_ids = sorted(set(texts["image_id"]), key=int)
    text_ids = texts["text_id"].tolist()
    rel = np.zeros((len(image_ids), len(text_ids)), dtype=bool)
    col = {t: j for j, t in enumerate(text_ids)}
    row = {i: k for k, i in enumerate(image_ids)}
    for t, i in zip(texts["text_id"], texts["image_id"]):
        rel[row[i], col[t]] = True
    for t, i in zip(positives["text_id"], positives["image_id"]):
        rel[row[i], col[t]] = True
    return {"root": root, "data": root / "eccv_caption_data", "image_ids": image_ids, "text_ids": text_ids,
            "relevant": rel, "positives": len(positives)}


def write_ground_truth(folder: Path, image_ids: list[str], text_ids: list[str], rel: np.ndarray) -> None:
    """ECCV Caption's two ground-truth files, both directions from one relevance matrix."""
    i2t = {image_ids[i]: [int(text_ids[j]) for j in np.flatnonzero(rel[i])] for i in range(len(image_ids))}
    t2i = {text_ids[j]: [int(image_ids[i]) for i in np.flatnonzero(rel[:, j])] for j in range(len(text_ids))}
    (folder / "eccv_image_to_caption.json").write_text(json.dumps(i2t))
    (folder / "eccv_caption_to_image.json").write_text(json.dumps(t2i))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_k", [50, 1])
def test_eccv_caption_package_agrees_with_eccv_scores(eccv_fixture: dict, tmp_path: Path, seed: int,
                                                      top_k: int) -> None:
    """The fixture's 3 images / 6 captions; relevance = annotated pairs + positives.parquet (2 extra pairs).

    The package gets that relevance as its ground truth in both directions (every image and caption
    a query); eccv_scores gets the same matrix. A short top_k is lengthened to the most positives.
    """
    rel = eccv_fixture["relevant"]
    assert eccv_fixture["positives"] == 2 and rel.sum() == 8
    data = Path(shutil.copytree(eccv_fixture["data"], tmp_path / "data"))
    write_ground_truth(data, eccv_fixture["image_ids"], eccv_fixture["text_ids"], rel)
    rng = np.random.default_rng(seed)
    image_emb, text_emb = rng.normal(size=(3, 5)), rng.normal(size=(6, 5))
    ours = eccv_scores(image_emb, text_emb, rel)
    package, counts = eccv_caption_scores_and_counts(image_emb, text_emb, eccv_fixture["image_ids"],
                                                     eccv_fixture["text_ids"], data, top_k=top_k)
    assert counts == {"i2t": 3, "t2i": 6}
    for direction in ("i2t", "t2i"):
        for name in ("mAP@R", "R-P", "R@1"):
            assert package[direction][name] == pytest.approx(ours[direction][name], abs=1e-9)


def test_eccv_caption_on_the_fixture_ground_truth(eccv_fixture: dict) -> None:
    """The fixture's own files: 2 image and 2 caption queries; image 102 lists caption 9999, which is
    never retrieved yet counts in its R, as ECCV Caption scores it."""
    rng = np.random.default_rng(5)
    image_emb, text_emb = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    out, counts = eccv_caption_scores_and_counts(image_emb, text_emb, eccv_fixture["image_ids"],
                                                 [int(t) for t in eccv_fixture["text_ids"]], eccv_fixture["data"])
    assert counts == {"i2t": 2, "t2i": 2}
    truth = {
        "i2t": {"101": {"1001", "1003", "1002"}, "102": {"1004", "1003", "9999"}},
        "t2i": {"1005": {"103", "101"}, "1003": {"102", "101"}},
    }
    scores = unit(image_emb) @ unit(text_emb).T
    sides = {"i2t": (scores, eccv_fixture["image_ids"], eccv_fixture["text_ids"]),
             "t2i": (scores.T, eccv_fixture["text_ids"], eccv_fixture["image_ids"])}
    for direction, (s, queries, gallery) in sides.items():
        maps, rps, r1s = [], [], []
        for query, positives in truth[direction].items():
            ranked = [gallery[g] for g in ranking(s[queries.index(query)])]
            r = len(positives)
            hits = [g in positives for g in ranked]
            maps.append(sum(sum(hits[:i]) / i for i in range(1, r + 1) if hits[i - 1]) / r)
            rps.append(sum(hits[:r]) / r)
            r1s.append(float(hits[0]))
        assert out[direction]["mAP@R"] == pytest.approx(100 * np.mean(maps))
        assert out[direction]["R-P"] == pytest.approx(100 * np.mean(rps))
        assert out[direction]["R@1"] == pytest.approx(100 * np.mean(r1s))
    assert eccv_caption_scores(image_emb, text_emb, eccv_fixture["image_ids"], eccv_fixture["text_ids"],
                               eccv_fixture["data"]) == out


def test_eccv_caption_errors(eccv_fixture: dict, tmp_path: Path) -> None:
    image_emb, text_emb = np.ones((3, 4)), np.ones((6, 4))
    ids = (eccv_fixture["image_ids"], eccv_fixture["text_ids"])
    # The installed package's ground truth: 1,261 image queries, none of them in the fixture.
    with pytest.raises(ValueError, match=r"1261 of ECCV Caption's 1261 image queries .* are not among the 3"):
        eccv_caption_scores(image_emb, text_emb, *ids)
    data = Path(shutil.copytree(eccv_fixture["data"], tmp_path / "data"))
    (data / "eccv_caption_to_image.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"data/eccv_caption_to_image.json"):
        eccv_caption_scores(image_emb, text_emb, *ids, data)
    with pytest.raises(ValueError, match=r"image_ids\[0\] is 'img-a'"):
        eccv_caption_scores(image_emb, text_emb, ["img-a", "b", "c"], ids[1], eccv_fixture["data"])
    with pytest.raises(ValueError, match=r"found 2"):
        eccv_caption_scores(image_emb, text_emb, ids[0][:2], ids[1], eccv_fixture["data"])


# ---------------------------------------------------------------------------------------------
# Uni-modal image retrieval
# ---------------------------------------------------------------------------------------------


def naive_r1(scores: np.ndarray, query_labels, gallery_labels, exclude_self: bool) -> float:
    hits = 0
    for q in range(scores.shape[0]):
        order = [g for g in ranking(scores[q]) if not (exclude_self and g == q)]
        hits += gallery_labels[order[0]] == query_labels[q]
    return 100.0 * hits / scores.shape[0]


def sign_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors with entries +-0.5: every cosine is a multiple of 0.25, exact in any summation order,
    so ties are real ties whatever the matrix product does."""
    return rng.choice([-0.5, 0.5], size=(n, 4))


def test_leave_one_out_r1_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(25, 5))
    labels = rng.integers(0, 5, size=25).tolist()
    assert leave_one_out_r1(torch.from_numpy(emb), labels) == pytest.approx(
        naive_r1(unit(emb) @ unit(emb).T, labels, labels, exclude_self=True))


def test_leave_one_out_r1_breaks_ties_toward_the_lower_index() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        emb = sign_vectors(rng, 30)  # 16 distinct vectors: many exact ties
        labels = rng.integers(0, 6, size=30).tolist()
        expected = naive_r1(emb @ emb.T, labels, labels, exclude_self=True)
        assert leave_one_out_r1(emb, labels) == pytest.approx(expected)
        assert leave_one_out_r1(emb.astype(np.float32), labels) == pytest.approx(expected)
    emb = np.array([[0.5, 0.5, 0.5, 0.5]] * 3)
    assert leave_one_out_r1(emb, ["a", "b", "a"]) == pytest.approx(100 / 3)  # 0->1 miss, 1->0 miss, 2->0 hit


def test_leave_one_out_r1_known_case_and_singletons(caplog: pytest.LogCaptureFixture) -> None:
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert leave_one_out_r1(emb, ["a", "a", "b"]) == pytest.approx(200 / 3)
    assert "1 of 3 queries are the only item of their label" in caplog.text
    with pytest.raises(ValueError, match="expected 3 labels"):
        leave_one_out_r1(emb, ["a", "b"])


def test_query_gallery_r1_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(2)
    queries, gallery = rng.normal(size=(15, 4)), rng.normal(size=(11, 4))
    q_labels = rng.integers(0, 4, size=15).tolist()
    g_labels = rng.integers(0, 4, size=11).tolist()
    expected = naive_r1(unit(queries) @ unit(gallery).T, q_labels, g_labels, exclude_self=False)
    assert query_gallery_r1(queries, q_labels, gallery, g_labels) == pytest.approx(expected)
    for _ in range(5):
        queries, gallery = sign_vectors(rng, 12), sign_vectors(rng, 20)
        q_labels = rng.integers(0, 4, size=12).tolist()
        g_labels = rng.integers(0, 4, size=20).tolist()
        expected = naive_r1(queries @ gallery.T, q_labels, g_labels, exclude_self=False)
        assert query_gallery_r1(queries, q_labels, gallery, g_labels) == pytest.approx(expected)
    assert query_gallery_r1(np.array([[1.0, 0.0]]), ["a"], np.array([[2.0, 0.0], [1.0, 0.0]]), ["a", "b"]) == 100.0


# ---------------------------------------------------------------------------------------------
# STS
# ---------------------------------------------------------------------------------------------


def test_sts_spearman_is_scipy_on_cosines() -> None:
    rng = np.random.default_rng(3)
    a, b, gold = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), rng.uniform(0, 5, size=30)
    cos = (unit(a) * unit(b)).sum(axis=1)
    assert sts_spearman(a, b, gold) == pytest.approx(100 * spearmanr(cos, gold).statistic)
    with pytest.raises(ValueError, match="undefined"):
        sts_spearman(a, b, np.ones(30))


TASKS = {
    "STS12/MSRpar": 6, "STS12/MSRvid": 5, "STS13/FNWN": 5, "STS14/headlines": 4, "STS14/images": 4,
    "STS15/belief": 5, "STS16/plagiarism": 6, "STSBenchmark": 7, "SICK-R": 6, "demo": 5,
}


def sts_frame(tasks: dict[str, int], seed: int = 4) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [t for t, n in tasks.items() for _ in range(n)]
    order = rng.permutation(len(names))  # tasks interleaved: grouping must not rely on row order
    names = [names[i] for i in order]
    frame = pd.DataFrame({
        "pair_id": [f"p{i:03d}" for i in range(len(names))], "sentence1": "s", "sentence2": "t",
        "score": rng.uniform(0, 5, size=len(names)), "task": names, "split": "test",
    })
    return frame, rng.normal(size=(len(names), 6)), rng.normal(size=(len(names), 6))


def test_sts_table_groups_senteval_tasks() -> None:
    frame, emb1, emb2 = sts_frame(TASKS)
    rows = sts_table(frame, emb1, emb2)
    assert [r["dataset"] for r in rows] == ["sts12", "sts13", "sts14", "sts15", "sts16", "sts12-16", "stsb", "sickr",
                                            "demo", "avg"]
    assert all(r["direction"] == "t2t" and r["metric"] == "spearman" and r["variant"] == "" for r in rows)
    value = {r["dataset"]: r["value"] for r in rows}

    def pooled(prefixes: tuple[str, ...]) -> float:
        mask = frame["task"].map(lambda t: t.startswith(prefixes)).to_numpy()
        return sts_spearman(emb1[mask], emb2[mask], frame["score"][mask])

    for year in ("12", "13", "14", "15", "16"):
        assert value[f"sts{year}"] == pytest.approx(pooled((f"STS{year}/",)))
    assert value["stsb"] == pytest.approx(pooled(("STSBenchmark",)))
    assert value["sickr"] == pytest.approx(pooled(("SICK-R",)))
    assert value["demo"] == pytest.approx(pooled(("demo",)))
    years = [value[f"sts{y}"] for y in ("12", "13", "14", "15", "16")]
    assert value["sts12-16"] == pytest.approx(np.mean(years))
    assert value["avg"] == pytest.approx(np.mean(years + [value["stsb"], value["sickr"], value["demo"]]))


def test_sts_table_without_all_years_and_demo_tasks() -> None:
    frame, emb1, emb2 = sts_frame({"STS12/MSRpar": 5, "STS13/FNWN": 5, "STSBenchmark": 5})
    rows = sts_table(frame, emb1, emb2)
    assert [r["dataset"] for r in rows] == ["sts12", "sts13", "stsb", "avg"]
    frame, emb1, emb2 = sts_frame({"demo-b": 5, "demo-a": 6})
    rows = sts_table(frame, emb1, emb2)
    assert [r["dataset"] for r in rows] == ["demo-a", "demo-b", "avg"]
    assert rows[-1]["value"] == pytest.approx((rows[0]["value"] + rows[1]["value"]) / 2)
    with pytest.raises(ValueError, match=r"one row of emb1"):
        sts_table(frame, emb1[:-1], emb2)
    frame.loc[frame["task"] == "demo-a", "score"] = 1.0
    with pytest.raises(ValueError, match=r"task 'demo-a' \(6 pairs\).*undefined"):
        sts_table(frame, emb1, emb2)


# ---------------------------------------------------------------------------------------------
# Zero-shot
# ---------------------------------------------------------------------------------------------


def angles(*degrees: float) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_zero_shot_hand_made_case() -> None:
    """Class means at 0 (A), 90 (B) and 270 degrees (C); six images at known angles.

    A ranks i0(A) i1(B) i2(A): hits at 1 and 3, AP@3 = (1 + 2/3) / 2 = 5/6, P@3 = 2/3.
    B ranks i3(B) i4(A) i5(C): AP@3 = 1, P@3 = 1/3.  C ranks i0 i1 i2: no hit, AP@3 = 0.
    Nearest class: i0 A, i1 A (is B), i2 A, i3 B, i4 B (is A), i5 B (is C): top-1 = 3/6.
    """
    images = angles(0, 10, 20, 80, 60, 135)
    image_labels = ["A", "B", "A", "B", "A", "C"]
    texts = np.concatenate([angles(10, -10), 2.0 * angles(90), angles(270)])  # caption norms do not matter
    text_labels = ["A", "A", "B", "C"]
    out = zero_shot_scores(images, image_labels, texts, text_labels, k=3)
    assert out["t2i"]["AP@3"] == pytest.approx(100 * (5 / 6 + 1 + 0) / 3)
    assert out["t2i"]["P@3"] == pytest.approx(100 * (2 / 3 + 1 / 3 + 0) / 3)
    assert out["i2t"] == {"top-1": pytest.approx(50.0)}
    # k beyond the gallery: every image is ranked.
    wide = zero_shot_scores(images, image_labels, texts, text_labels, k=50)
    assert set(wide["t2i"]) == {"AP@50", "P@50"}
    # A: i0 i1 i2 i4 i3 i5, hits at 1, 3, 4; B: i3 i4 i5 i2 i1 i0, hits at 1, 5; C: i0 i1 i2 i5 .., hit at 4.
    expected = ((1 + 2 / 3 + 3 / 4) / 3 + (1 + 2 / 5) / 2 + 1 / 4) / 3
    assert wide["t2i"]["AP@50"] == pytest.approx(100 * expected)


def test_zero_shot_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(6)
    images, texts = rng.normal(size=(40, 8)), rng.normal(size=(25, 8))
    image_labels = rng.integers(0, 5, size=40).tolist()
    text_labels = (list(range(5)) * 5)
    out = zero_shot_scores(images, image_labels, texts, text_labels, k=10)
    means = unit(np.stack([unit(texts)[np.array(text_labels) == c].mean(axis=0) for c in range(5)]))
    scores = means @ unit(images).T
    aps = []
    for c in range(5):
        hits = [image_labels[g] == c for g in ranking(scores[c])[:10]]
        found = sum(hits)
        aps.append(sum(sum(hits[:i]) / i for i in range(1, 11) if hits[i - 1]) / found if found else 0.0)
    assert out["t2i"]["AP@10"] == pytest.approx(100 * np.mean(aps))
    nearest = [ranking(row)[0] for row in unit(images) @ means.T]
    assert out["i2t"]["top-1"] == pytest.approx(100 * np.mean([n == c for n, c in zip(nearest, image_labels)]))


def test_zero_shot_needs_images_and_captions_per_class() -> None:
    with pytest.raises(ValueError, match=r"1 class\(es\) have no image \(first \['B'\]\)"):
        zero_shot_scores(angles(0), ["A"], angles(0, 90), ["A", "B"])
    with pytest.raises(ValueError, match="positive integer"):
        zero_shot_scores(angles(0), ["A"], angles(0), ["A"], k=0)


# ---------------------------------------------------------------------------------------------
# Person retrieval
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def person_case() -> dict:
    rng = np.random.default_rng(7)
    ids = np.repeat(np.arange(6), 3)
    centres = rng.normal(size=(6, 8))
    images = centres[ids] + 0.8 * rng.normal(size=(18, 8))
    text_ids = np.repeat(np.arange(6), 4)
    texts = centres[text_ids] + 1.0 * rng.normal(size=(24, 8))
    return {"images": images, "image_labels": [f"p{i}" for i in ids], "texts": texts,
            "text_labels": [f"p{i}" for i in text_ids], "bank": centres + 0.1 * rng.normal(size=(6, 8))}


def test_person_scores_plain_is_cmc_map_minp(person_case: dict) -> None:
    rows = person_scores(person_case["texts"], person_case["text_labels"], person_case["images"],
                         person_case["image_labels"], dataset="CUHK-PEDES")
    expected = cmc_map_minp(unit(person_case["texts"]) @ unit(person_case["images"]).T,
                            person_case["text_labels"], person_case["image_labels"])
    assert rows == [metric_row("CUHK-PEDES", "t2i", m, expected[m]) for m in ("R@1", "R@5", "R@10", "mAP", "mINP")]
    assert [r["value"] for r in rows] == pytest.approx([expected[m] for m in ("R@1", "R@5", "R@10", "mAP", "mINP")])


def test_person_refined_with_lambda_zero_reproduces_the_plain_numbers(person_case: dict) -> None:
    args = (person_case["texts"], person_case["text_labels"], person_case["images"], person_case["image_labels"])
    rows = person_scores(*args, references=person_case["bank"], refine=Refine(lam=0.0))
    plain = [r for r in rows if r["variant"] == ""]
    refined = [r for r in rows if r["variant"] == "refined"]
    assert len(plain) == len(refined) == 5
    assert [r["value"] for r in refined] == [r["value"] for r in plain]
    strong = person_scores(*args, references=torch.from_numpy(person_case["bank"]),
                           refine={"k": 2, "tau": 0.05, "top_k": 18, "lam": 5.0})
    assert [r["value"] for r in strong if r["variant"] == "refined"] != [r["value"] for r in plain]
    assert [r for r in strong if r["variant"] == ""] == plain


def test_person_refine_needs_references(person_case: dict) -> None:
    with pytest.raises(ValueError, match="without references"):
        person_scores(person_case["texts"], person_case["text_labels"], person_case["images"],
                      person_case["image_labels"], refine=Refine())
    with pytest.raises(ValueError, match="attribute 'k' missing on object"):
        person_scores(person_case["texts"], person_case["text_labels"], person_case["images"],
                      person_case["image_labels"], references=person_case["bank"], refine=object())


def test_metric_row_refuses_nan() -> None:
    assert metric_row("d", "t2i", "R@1", 1) == {"dataset": "d", "direction": "t2i", "metric": "R@1", "value": 1.0,
                                                "variant": ""}
    with pytest.raises(ValueError, match="finite"):
        metric_row("d", "t2i", "R@1", math.nan)


# ---------------------------------------------------------------------------------------------
# Per-query values and intervals
# ---------------------------------------------------------------------------------------------


def naive_eccv_per_query(scores: np.ndarray, relevant: np.ndarray, extra: dict[int, int] | None = None):
    """Per query AP@R, R-P and R@1 in percent; ``extra[q]`` positives of query q are never retrieved."""
    out = {"mAP@R": [], "R-P": [], "R@1": []}
    for q in range(scores.shape[0]):
        r = int(relevant[q].sum()) + (extra or {}).get(q, 0)
        hits = [bool(relevant[q, g]) for g in ranking(scores[q])]
        out["mAP@R"].append(100 * sum(sum(hits[:i]) / i for i in range(1, r + 1) if hits[i - 1]) / r)
        out["R-P"].append(100 * sum(hits[:r]) / r)
        out["R@1"].append(100.0 * hits[0])
    return {k: np.array(v) for k, v in out.items()}


def test_eccv_scores_per_query() -> None:
    rng = np.random.default_rng(0)
    image_emb, text_emb = rng.normal(size=(9, 6)), rng.normal(size=(20, 6))
    identities = np.concatenate([np.arange(4), rng.integers(0, 4, size=5)])
    rel = identity_relevance(identities.tolist(), np.concatenate([np.arange(4), rng.integers(0, 4, 16)]).tolist())
    found = eccv_scores_per_query(image_emb, text_emb, rel)
    assert {d: found[d].means for d in found} == eccv_scores(image_emb, text_emb, rel)  # bit for bit
    scores = unit(image_emb) @ unit(text_emb).T
    for direction, (s_, r_) in {"i2t": (scores, rel), "t2i": (scores.T, rel.T)}.items():
        for name, values in naive_eccv_per_query(s_, r_).items():
            np.testing.assert_allclose(found[direction].per_query[name], values, atol=1e-9)


def test_eccv_caption_per_query_on_the_fixture_ground_truth(eccv_fixture: dict) -> None:
    """Image 102 lists caption 9999, absent from the captions: it counts in R (3), never retrieved."""
    rng = np.random.default_rng(5)
    image_emb, text_emb = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    ids = (eccv_fixture["image_ids"], eccv_fixture["text_ids"])
    scores, per_query = eccv_caption_per_query(image_emb, text_emb, *ids, eccv_fixture["data"])
    assert scores == eccv_caption_scores(image_emb, text_emb, *ids, eccv_fixture["data"])
    cosine = unit(image_emb) @ unit(text_emb).T
    image_rows = [eccv_fixture["image_ids"].index(i) for i in ("101", "102")]
    text_rows = [eccv_fixture["text_ids"].index(t) for t in ("1005", "1003")]
    truth_i2t = np.zeros((2, 6), dtype=bool)
    for q, positives in enumerate([{"1001", "1003", "1002"}, {"1004", "1003"}]):
        truth_i2t[q, [eccv_fixture["text_ids"].index(t) for t in positives]] = True
    truth_t2i = np.zeros((2, 3), dtype=bool)
    for q, positives in enumerate([{"103", "101"}, {"102", "101"}]):
        truth_t2i[q, [eccv_fixture["image_ids"].index(i) for i in positives]] = True
    want = {"i2t": naive_eccv_per_query(cosine[image_rows], truth_i2t, extra={1: 1}),
            "t2i": naive_eccv_per_query(cosine.T[text_rows], truth_t2i)}
    for direction in ("i2t", "t2i"):
        for name in ("mAP@R", "R-P", "R@1"):
            np.testing.assert_allclose(per_query[direction][name], want[direction][name], atol=1e-9)
            assert per_query[direction][name].mean() == pytest.approx(scores[direction][name], abs=1e-9)
    with pytest.raises(ValueError, match=r"ECCV Caption i2t mAP@R: the mean of softref's per-query values is"):
        eccv_caption_per_query(image_emb, text_emb, *ids, eccv_fixture["data"], tolerance=-1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_eccv_caption_per_query_on_a_full_ground_truth(eccv_fixture: dict, tmp_path: Path, seed: int) -> None:
    rel = eccv_fixture["relevant"]
    data = Path(shutil.copytree(eccv_fixture["data"], tmp_path / "data"))
    write_ground_truth(data, eccv_fixture["image_ids"], eccv_fixture["text_ids"], rel)
    rng = np.random.default_rng(seed)
    image_emb, text_emb = rng.normal(size=(3, 5)), rng.normal(size=(6, 5))
    scores, per_query = eccv_caption_per_query(image_emb, text_emb, eccv_fixture["image_ids"],
                                               eccv_fixture["text_ids"], data, top_k=1)
    ours = eccv_scores_per_query(image_emb, text_emb, rel)
    for direction in ("i2t", "t2i"):
        for name in ("mAP@R", "R-P", "R@1"):
            np.testing.assert_allclose(per_query[direction][name], ours[direction].per_query[name], atol=1e-12)


def test_hits_per_query_are_the_r1() -> None:
    rng = np.random.default_rng(11)
    emb = sign_vectors(rng, 30)
    labels = rng.integers(0, 6, size=30).tolist()
    hits = leave_one_out_hits(emb, labels)
    assert hits.dtype == bool and hits.shape == (30,)
    assert 100.0 * hits.mean() == pytest.approx(naive_r1(emb @ emb.T, labels, labels, exclude_self=True))
    assert leave_one_out_r1(emb, labels) == 100.0 * int(hits.sum()) / 30
    queries, gallery = sign_vectors(rng, 12), sign_vectors(rng, 20)
    q_labels, g_labels = rng.integers(0, 4, size=12).tolist(), rng.integers(0, 4, size=20).tolist()
    hits = query_gallery_hits(queries, q_labels, gallery, g_labels)
    for q in range(12):
        assert hits[q] == (g_labels[ranking(queries[q] @ gallery.T)[0]] == q_labels[q])


def test_sts_table_with_intervals() -> None:
    frame, emb1, emb2 = sts_frame(TASKS)
    plain = sts_table(frame, emb1, emb2)
    rows = sts_table(frame, emb1, emb2, bootstrap=Bootstrap(resamples=300))
    assert [{k: r[k] for k in plain[0]} for r in rows] == plain
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["ci_low"] < r["ci_high"] for r in rows)
    again = Bootstrap(resamples=300)
    assert sts_table(frame, emb1, emb2, bootstrap=again) == rows
    assert again.query_sets == {"sts12 pairs": 11, "sts13 pairs": 5, "sts14 pairs": 8, "sts15 pairs": 5,
                                "sts16 pairs": 6, "stsb pairs": 7, "sickr pairs": 6, "demo pairs": 5}


def test_zero_shot_per_query_values() -> None:
    rng = np.random.default_rng(6)
    images, texts = rng.normal(size=(40, 8)), rng.normal(size=(25, 8))
    image_labels, text_labels = rng.integers(0, 5, size=40).tolist(), list(range(5)) * 5
    scores, per_query = zero_shot_scores_per_query(images, image_labels, texts, text_labels, k=10)
    assert scores == zero_shot_scores(images, image_labels, texts, text_labels, k=10)
    assert per_query["t2i"]["AP@10"].shape == per_query["t2i"]["P@10"].shape == (5,)
    assert per_query["i2t"]["top-1"].shape == (40,)
    for direction, found in per_query.items():
        for name, values in found.items():
            assert values.mean() == pytest.approx(scores[direction][name], abs=1e-12)


def test_person_scores_with_intervals(person_case: dict) -> None:
    args = (person_case["texts"], person_case["text_labels"], person_case["images"], person_case["image_labels"])
    plain = person_scores(*args, references=person_case["bank"], refine=Refine())
    boot = Bootstrap(resamples=200)
    rows = person_scores(*args, references=person_case["bank"], refine=Refine(), bootstrap=boot)
    assert [{k: r[k] for k in plain[0]} for r in rows] == plain
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows)
    assert boot.query_sets == {"captions": 24}
