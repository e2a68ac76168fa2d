"""Image-text retrieval evaluation: JSON contents, recall against a naive loop, shared val code."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from softref.config import ExperimentConfig, StudentConfig
from softref.data.adapters import prepare
from softref.data.manifest import file_sha256
from softref.data.synthetic import synthesize_demo
from softref.evaluate.retrieval import SplitItems, evaluate_image_text, image_text_metrics, write_json
from softref.train import train

KEYS = {"benchmark", "protocol", "split", "num_images", "num_texts", "i2t", "t2i", "rsum", "checkpoint",
        "checkpoint_sha256", "selected_epoch"}


# Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One epoch of a tiny base student on a tiny demo benchmark (no teacher needed)."""
    root = tmp_path_factory.mktemp("eval")
    demo = synthesize_demo(root / "raw", num_identities=6, images_per_identity=2, captions_per_image=2,
                           image_size=32, person_size=(32, 16), sts_pairs=0)
    manifests = root / "demo-coco"
    prepare("karpathy", demo["coco_root"], manifests, annotations=str(demo["coco_annotations"]))
    cfg = ExperimentConfig(name="tiny-base", dataset="demo-coco", student="tiny", method="base", epochs=1,
                           batch_size=4, lr=1e-4)
    result = train(cfg, StudentConfig("tiny", "softref-tiny"), demo["coco_root"], manifests / "images.parquet",
                   manifests / "texts.parquet", [], [], root / "run")
    return {"root": demo["coco_root"], "images": manifests / "images.parquet", "texts": manifests / "texts.parquet",
            "checkpoint": result.checkpoint, "log": result.train_log}


def test_evaluation_json(trained: dict, tmp_path: Path) -> None:
    result = evaluate_image_text(trained["checkpoint"], trained["root"], trained["images"], trained["texts"],
                                 "test", batch_size=3, device="cpu")
    assert KEYS <= set(result)
    assert result["benchmark"] == "demo-coco" and result["protocol"] == "image-text" and result["split"] == "test"
    assert (result["num_images"], result["num_texts"]) == (2, 4)
    assert set(result["i2t"]) == set(result["t2i"]) == {"R@1", "R@5", "R@10"}
    six = sum(result["i2t"].values()) + sum(result["t2i"].values())
    assert result["rsum"] == pytest.approx(six)
    assert result["checkpoint_sha256"] == file_sha256(trained["checkpoint"])
    assert result["selected_epoch"] == 1 and result["method"] == "base" and result["experiment"] == "tiny-base"
    path = tmp_path / "eval" / "demo-coco.json"
    write_json(result, path)
    assert json.loads(path.read_text()) == result
    assert [p.name for p in path.parent.iterdir()] == ["demo-coco.json"]


def test_validation_in_training_and_evaluation_agree(trained: dict) -> None:
    with open(trained["log"], newline="") as fh:
        row = next(csv.DictReader(fh))
    result = evaluate_image_text(trained["checkpoint"], trained["root"], trained["images"], trained["texts"], "val",
                                 device="cpu")
    assert result["rsum"] == pytest.approx(float(row["val_rsum"]))
    assert result["i2t"]["R@1"] == pytest.approx(float(row["val_i2t_R@1"]))


def test_missing_split_is_an_error(trained: dict) -> None:
    with pytest.raises(ValueError, match="no caption with split 'nosuch'"):
        evaluate_image_text(trained["checkpoint"], trained["root"], trained["images"], trained["texts"], "nosuch")


def _naive_recall(scores: list[list[float]], relevant: list[list[bool]], k: int) -> float:
    hits = 0
    for row, flags in zip(scores, relevant):
        ranked = sorted(range(len(row)), key=lambda j: (-row[j], j))
        hits += any(flags[j] for j in ranked[:k])
    return 100.0 * hits / len(scores)


def test_recall_with_five_captions_per_image_matches_a_naive_loop() -> None:
    generator = torch.Generator().manual_seed(3)
    num_images, per_image = 7, 5
    image_ids = tuple(f"img{i}" for i in range(num_images))
    # Captions in a shuffled order, five per image.
    owners = [image_ids[i] for i in range(num_images) for _ in range(per_image)]
    order = torch.randperm(len(owners), generator=generator).tolist()
    owners = [owners[i] for i in order]
    items = SplitItems(split="test", image_ids=image_ids, image_paths=image_ids,
                       text_ids=tuple(str(i) for i in range(len(owners))),
                       captions=tuple("c" for _ in owners), text_image_ids=tuple(owners))
    relevant = items.relevant()
    assert relevant.sum(axis=1).tolist() == [per_image] * num_images and relevant.sum(axis=0).tolist() == [1] * 35
    image_emb = torch.nn.functional.normalize(torch.randn(num_images, 16, generator=generator), dim=1)
    text_emb = torch.nn.functional.normalize(torch.randn(len(owners), 16, generator=generator), dim=1)
    metrics = image_text_metrics(image_emb, text_emb, relevant)
    scores = (image_emb @ text_emb.T).tolist()
    rel = relevant.tolist()
    scores_t = [list(col) for col in zip(*scores)]
    rel_t = [list(col) for col in zip(*rel)]
    for k in (1, 5, 10):
        assert metrics["i2t"][f"R@{k}"] == pytest.approx(_naive_recall(scores, rel, k))
        assert metrics["t2i"][f"R@{k}"] == pytest.approx(_naive_recall(scores_t, rel_t, k))
    assert metrics["rsum"] == pytest.approx(sum(metrics["i2t"].values()) + sum(metrics["t2i"].values()))
    assert 0 < metrics["t2i"]["R@1"] < 100
